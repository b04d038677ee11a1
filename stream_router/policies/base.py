"""The policy interface: one method that gives a verdict for each prediction of a batch.

A policy decides whether a prediction needs a human. Policies are the only gate in front of paid
reviews (A2I custom tasks have no activation conditions), so they must be predictable.

Contract of :meth:`Policy.evaluate`:

- **pure**: the same predictions give the same verdicts; no I/O, no clock, no randomness that is
  not derived from the event itself;
- **fast**: called on the ingest hot path for every batch, on the event loop's thread; it must
  not block;
- **total**: one :class:`Verdict` per prediction, in order; a policy never raises to filter —
  it returns ``Verdict(review=True, reason=...)``. An exception is a bug and stops ingest;
- **shared nothing**: each ingest process builds its own policy objects; one object is only
  called from one thread, but several processes run the same policy at once.

``start()`` and ``close()`` are optional lifecycle hooks (load a lookup table, free it); they
default to doing nothing.

To write one: subclass :class:`Policy` (or :class:`EventPolicy` for per-event logic), give it a
pydantic ``params_model`` and register the class under the entry-point group
``stream_router.policies`` (see the README).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, NamedTuple, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from stream_router.models import Prediction


class Verdict(NamedTuple):
    """A policy's answer for one prediction; ``reason`` is for people (and the envelope)."""

    review: bool
    reason: str


class PolicyParams(BaseModel):
    """Base of every policy's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=PolicyParams)

#: Builds a child policy from its spec; ``path`` names it in errors (``routes.0.policy``).
Builder = Callable[[Mapping[str, Any], str], "Policy[Any]"]


class Policy(ABC, Generic[P]):
    """A gate over predictions; see the module docstring for the contract."""

    #: The pydantic model of this policy's parameters.
    params_model: type[P]
    #: Short description shown by ``stream-router policies list``.
    summary: ClassVar[str] = ""

    def __init__(self, name: str, params: P) -> None:
        self.name = name
        self.params = params

    @classmethod
    def create(cls, name: str, params: Mapping[str, Any], build: Builder, path: str) -> Self:
        """Validate ``params`` and build the policy (composites also build their children)."""
        return cls(name, cls.params_model.model_validate(dict(params)))

    @abstractmethod
    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        """One verdict per prediction, in order."""

    def start(self) -> None:
        """Called once before the first batch."""

    def close(self) -> None:
        """Called once at shutdown."""

    def children(self) -> Sequence[Policy[Any]]:
        """Policies this one is made of (composites); used for lifecycle and listing."""
        return ()


class EventPolicy(Policy[P]):
    """A policy written per event: implement :meth:`check`."""

    @abstractmethod
    def check(self, prediction: Prediction) -> Verdict:
        """The verdict for one prediction."""

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        check = self.check
        return [check(prediction) for prediction in batch]
