"""The backend seam: one base class owning the lifecycle, backends built by name from one table,
each making its own completion signals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_router.aws.a2i import A2IReviewBackend
from stream_router.aws.watchers import EventBridgeSqsWatcher, S3OutputSqsWatcher
from stream_router.backends import BACKENDS, BackendContext, build_backend, signals_of
from stream_router.errors import ConfigError
from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.webhook import WebhookReceiver
from stream_router.metrics import ReviewMetrics
from stream_router.review.backend import (
    ReviewBackend,
    ReviewResult,
    ReviewState,
    SignalHooks,
    StartOutcome,
)
from stream_router.review.fake import FakeReviewBackend
from stream_router.settings import Settings

QUEUES = {"event_queue_url": "http://127.0.0.1:1/q/events",
          "output_queue_url": "http://127.0.0.1:1/q/output"}  # fmt: skip
LABEL_STUDIO = {"api_token": "t", "projects": {"general": {"project": "General"}},
                "webhook": {"port": 0}}  # fmt: skip
ROUTES = {"routes": [{"name": "general", "review_flow": "general",
                      "policy": {"type": "confidence", "below": 0.7}}]}  # fmt: skip


def context(
    backend: str, section: Mapping[str, Any] | None = None, **sections: Any
) -> BackendContext:
    """The context of ``review.backend: {name: backend, **section}`` with ``sections``."""
    data: dict[str, Any] = {"review": {"backend": {"name": backend, **(section or {})}}}
    data.update(sections)
    if backend == "label-studio":
        data["review"]["backend"].update(LABEL_STUDIO)
        data.setdefault("policies", ROUTES)
    settings = Settings.model_validate(data)
    return BackendContext(settings, ReviewMetrics(CollectorRegistry(), backend))


async def _nothing(*_: Any) -> None:
    return None


HOOKS = SignalHooks(emit=_nothing, check=_nothing, beat=lambda kind: None)


@pytest.mark.parametrize(
    ("name", "sections", "kind", "signals"),
    [
        ("a2i", {"section": QUEUES}, A2IReviewBackend,
         [EventBridgeSqsWatcher, S3OutputSqsWatcher]),
        ("a2i", {"section": QUEUES, "watchers": {"enabled": ["reconciler"]}}, A2IReviewBackend,
         []),
        ("a2i", {"watchers": {"enabled": ["reconciler"]}}, A2IReviewBackend, []),
        ("label-studio", {}, LabelStudioReviewBackend, [WebhookReceiver]),
        ("label-studio", {"watchers": {"enabled": ["reconciler"]}}, LabelStudioReviewBackend, []),
        ("fake", {}, FakeReviewBackend, []),
    ],
)  # fmt: skip
def test_each_backend_is_built_by_name_with_the_signals_its_settings_allow(
    name: str, sections: dict[str, Any], kind: type[ReviewBackend], signals: list[type]
) -> None:
    backend = build_backend(context(name, **sections))
    assert type(backend) is kind
    made = backend.signals(HOOKS)
    assert [type(each) for each in made] == signals
    assert {each.kind for each in made} <= set(signals_of(name))
    for each in made:  # watched for stalls once per poll; a webhook waits for people
        assert each.beat_s == (20.0 if each.kind != "webhook" else None)


def test_every_registered_backend_is_a_review_backend_with_a_builder() -> None:
    for name in BACKENDS:
        sections = {"section": QUEUES} if name == "a2i" else {}
        assert isinstance(build_backend(context(name, **sections)), ReviewBackend)


def test_an_a2i_watcher_without_its_queue_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"review\.backend\.event_queue_url"):
        build_backend(context("a2i"))


def test_a_name_not_in_the_table_fails_at_load_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"review\.backend[\s\S]*'mturk' is not a review backend"):
        Settings.model_validate({"review": {"backend": "mturk"}})


class Minimal(ReviewBackend):
    """A backend with the four operations only: the base gives it the rest."""

    max_input_chars = 10

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def open(self) -> None:
        self.calls.append("open")

    async def aclose(self) -> None:
        self.calls.append("aclose")

    async def start(
        self,
        name: str,
        flow: str,
        content: Mapping[str, Any],
        *,
        fresh: bool = False,
        not_before_s: float | None = None,
    ) -> StartOutcome:
        return StartOutcome(name, name, already_started=False)

    async def describe(self, name: str) -> ReviewState | None:
        return None

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        raise AssertionError("not called")

    async def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        for state in ():
            yield state


async def test_the_base_class_owns_the_lifecycle_and_the_optional_parts() -> None:
    backend = Minimal()
    async with backend as entered:
        assert entered is backend
        assert backend.calls == ["open"]
        await backend.delete("r-1")  # nothing to delete: no error
    assert backend.calls == ["open", "aclose"]
    assert backend.signals(HOOKS) == ()
    assert backend.start_settle_s == 0.0


def test_a_backend_missing_an_operation_cannot_be_made() -> None:
    class Partial(ReviewBackend):
        max_input_chars = 10

        async def start(
            self,
            name: str,
            flow: str,
            content: Mapping[str, Any],
            *,
            fresh: bool = False,
            not_before_s: float | None = None,
        ) -> StartOutcome:
            return StartOutcome(name, name, already_started=False)

    with pytest.raises(TypeError, match="abstract methods describe, fetch_result, pending"):
        Partial()  # type: ignore[abstract]


def test_label_studio_counts_the_tasks_it_leaves_alone_and_the_duplicates_it_removes() -> None:
    made = context("label-studio")
    backend = build_backend(made)
    assert isinstance(backend, LabelStudioReviewBackend)
    backend.ownership.ignored("foreign")
    backend.removed()
    registry = made.metrics.registry
    assert (
        registry.get_sample_value("stream_router_review_tasks_ignored_total", {"reason": "foreign"})
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "stream_router_review_duplicate_reviews_removed_total", {"backend": "label-studio"}
        )
        == 1.0
    )
