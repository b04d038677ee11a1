"""An in-memory review backend, for tests and for trying the review path without a service.

It keeps reviews in a dict, can be scripted to fail the next calls (``fail_next``), and lets a
test finish reviews with answers (``complete``) or without (``fail``). It is registered like
every backend (``stream_router/backends.py``: ``review.backend: fake``); it has no signals of
its own, so the reconciler finds what a test ended.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from stream_router.config_section import BackendSettings
from stream_router.errors import ReviewNameConflict
from stream_router.review.backend import (
    ReviewBackend,
    ReviewResult,
    ReviewState,
    ReviewStatus,
    StartOutcome,
    WorkerAnswer,
)

if TYPE_CHECKING:
    from stream_router.backends import BackendContext


class FakeSettings(BackendSettings):
    """The fake's section (``review.backend: fake``): it has nothing to set."""

    name: Literal["fake"] = "fake"


def build(context: BackendContext) -> FakeReviewBackend:
    """An empty in-memory backend (``review.backend: fake``)."""
    return FakeReviewBackend(clock=context.clock)


class FakeReviewBackend(ReviewBackend):
    """A :class:`~stream_router.review.backend.ReviewBackend` in memory."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        max_input_chars: int = 1_000_000,
        start_settle_s: float = 0.0,
    ) -> None:
        self.clock = clock
        self.max_input_chars = max_input_chars
        self.start_settle_s = start_settle_s
        self.states: dict[str, ReviewState] = {}
        self.contents: dict[str, Mapping[str, Any]] = {}
        self.results: dict[str, ReviewResult] = {}
        self.start_calls: list[str] = []
        self._failures: deque[Exception] = deque()

    def fail_next(self, *errors: Exception) -> None:
        """The next ``start`` calls raise these, in order."""
        self._failures.extend(errors)

    async def start(
        self,
        name: str,
        flow: str,
        content: Mapping[str, Any],
        *,
        fresh: bool = False,
        not_before_s: float | None = None,
    ) -> StartOutcome:
        self.start_calls.append(name)
        if self._failures:
            raise self._failures.popleft()
        existing = self.states.get(name)
        if existing is not None:
            if existing.flow != flow:
                raise ReviewNameConflict(f"review {name} exists on flow {existing.flow}")
            return StartOutcome(name, f"fake:{name}", already_started=True)
        self.states[name] = ReviewState(name, ReviewStatus.IN_PROGRESS, flow, self.clock())
        self.contents[name] = content
        return StartOutcome(name, f"fake:{name}", already_started=False)

    async def describe(self, name: str) -> ReviewState | None:
        return self.states.get(name)

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        return self.results[state.name]

    async def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        for state in list(self.states.values()):
            recent = since_s is None or (state.created_at_s or 0.0) >= since_s
            if state.flow == flow and not state.status.terminal and recent:
                yield state

    def complete(self, name: str, *labels: str, answer_name: str = "label") -> ReviewState:
        """Finish a review with one answer per label (one worker each)."""
        now = self.clock()
        answers = tuple(
            WorkerAnswer(f"worker-{i}", {answer_name: {"label": label}}, now, now, 0.0)
            for i, label in enumerate(labels)
        )
        state = self.states[name]
        self.results[name] = ReviewResult(name, state.flow, answers, self.contents[name])
        return self._set(name, ReviewStatus.COMPLETED, output_uri=f"fake://{name}/output.json")

    def fail(self, name: str, code: str = "Expired", reason: str = "nobody took it") -> ReviewState:
        return self._set(name, ReviewStatus.FAILED, failure_code=code, failure_reason=reason)

    def _set(self, name: str, status: ReviewStatus, **changes: Any) -> ReviewState:
        old = self.states[name]
        new = ReviewState(
            name,
            status,
            old.flow,
            old.created_at_s,
            changes.get("failure_code"),
            changes.get("failure_reason"),
            changes.get("output_uri"),
        )
        self.states[name] = new
        return new
