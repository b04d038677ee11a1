"""Review backends by name: the one table ``review.backend`` chooses from.

Each line names a backend, its settings section (what ``review.backend`` holds when it is
chosen: a :class:`~stream_router.config_section.BackendSettings` whose ``name`` is the line's
key), where its builder is (imported only when the backend is chosen, so the review core and a
router that uses A2I never import Label Studio's client, nor the other way round), and its own
completion signals (what ``watchers.enabled`` may name beside the
reconciler, which serves every backend). A builder takes a :class:`BackendContext` and returns a
:class:`~stream_router.review.backend.ReviewBackend`; the backend makes its signals itself
(:meth:`~stream_router.review.backend.ReviewBackend.signals`).

A new backend is a new package with a section and a builder, and one line here. The in-memory fake
(``review/fake.py``) is registered the same way: ``review.backend: fake`` runs the review role
on it (reviews end only when a test ends them).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from stream_router.aws.settings import A2ISettings
from stream_router.config_section import BackendSettings
from stream_router.errors import ConfigError
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.review.fake import FakeSettings

if TYPE_CHECKING:
    from stream_router.metrics import ReviewMetrics
    from stream_router.review.backend import ReviewBackend
    from stream_router.settings import Settings

_Section = TypeVar("_Section", bound=BackendSettings)

RECONCILER = "reconciler"  #: the completion signal every backend has (review/reconciler.py)
DEFAULT_BACKEND = "a2i"  #: ``review.backend`` of a configuration that does not say


@dataclass(frozen=True)
class Registered:
    """One backend of the table."""

    settings: type[BackendSettings]  #: its section, ``review.backend`` when it is chosen
    builder: str  #: ``package.module:function``, called with a :class:`BackendContext`
    signals: tuple[str, ...]  #: its own completion signals, all on by default
    about: str  #: one line for the configuration reference


@dataclass(frozen=True)
class BackendContext:
    """What a builder gets: the whole configuration, the review role's metrics, its clock."""

    settings: Settings
    metrics: ReviewMetrics
    clock: Callable[[], float] = field(default=time.time)

    def section(self, kind: type[_Section]) -> _Section:
        """``review.backend``, which the builder of ``kind``'s backend expects to be ``kind``."""
        section = self.settings.review.backend
        if not isinstance(section, kind):
            raise ConfigError(f"review.backend is {section.name!r}, not a {kind.__name__}")
        return section


BACKENDS: Mapping[str, Registered] = MappingProxyType({
    "a2i": Registered(
        A2ISettings,
        "stream_router.aws.a2i:build",
        ("eventbridge", "s3-output"),
        "Amazon A2I human loops (custom task type); answers read from S3",
    ),
    "label-studio": Registered(
        LabelStudioSettings,
        "stream_router.labelstudio.backend:build",
        ("webhook",),
        "tasks in a Label Studio server",
    ),
    "fake": Registered(
        FakeSettings,
        "stream_router.review.fake:build",
        (),
        "in memory, for tests: reviews end only when a test ends them",
    ),
})  # fmt: skip


def signals_of(backend: str) -> tuple[str, ...]:
    """Every completion signal of ``backend``, the reconciler last."""
    return (*BACKENDS[backend].signals, RECONCILER)


def all_signals() -> frozenset[str]:
    """Every signal name any backend has (what ``watchers.enabled`` may hold)."""
    return frozenset(name for backend in BACKENDS for name in signals_of(backend))


def build_backend(context: BackendContext) -> ReviewBackend:
    """The backend ``review.backend`` names, built from its own settings."""
    name = context.settings.review.backend.name
    registered = BACKENDS.get(name)
    if registered is None:
        raise ConfigError(f"review.backend: {name!r} is not one of {sorted(BACKENDS)}")
    module, function = registered.builder.split(":")
    builder: Callable[[BackendContext], ReviewBackend] = getattr(
        importlib.import_module(module), function
    )
    return builder(context)
