"""The reconciler: asks the backend about open reviews whose end no watcher reported.

Every ``watchers.reconcile_interval_s`` (when the ``reconciler`` watcher is enabled),
:meth:`Reconciler.sweep` lists the open reviews of each flow in use, and describes each STARTED
entry that is past its deadline (``review.review_deadline_s``) or, after ``reconcile_grace_s``,
no longer listed among its flow's open reviews. A review that has ended is reported as a loop
event, like a watcher's: this alone finishes every review when no SQS watcher runs, and catches
the notices a watcher missed (lost, late, or never sent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from stream_router.errors import ReviewRejected, ReviewThrottled, UpstreamError
from stream_router.metrics import ReviewMetrics
from stream_router.review.backend import ReviewBackend
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import Entry

logger = logging.getLogger(__name__)


class Reconciler:
    """One sweep at a time over the open entries ``entries()`` gives; see the module docstring."""

    def __init__(
        self,
        backend: ReviewBackend,
        entries: Callable[[], list[Entry]],
        emit: Callable[[LoopEvent], Awaitable[None]],
        metrics: ReviewMetrics,
        *,
        grace_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.backend = backend
        self.entries = entries
        self.emit = emit
        self.metrics = metrics
        self.grace_s = grace_s
        self.clock = clock

    async def sweep(self) -> None:
        """Check the open reviews; a backend error leaves the rest for the next sweep."""
        try:
            await self._sweep()
        except UpstreamError as exc:
            logger.warning("reconciler sweep failed: %s", exc)

    async def _sweep(self) -> None:
        now = self.clock()
        entries = self.entries()
        listed: set[str] = set()
        for flow in {entry.flow for entry in entries}:
            async for state in self.backend.pending(flow):
                listed.add(state.name)
        for entry in entries:
            started_s = entry.started_s if entry.started_s is not None else entry.since_s
            overdue = entry.deadline_s is not None and now >= entry.deadline_s
            vanished = entry.name not in listed and now - started_s >= self.grace_s
            if overdue or vanished:
                try:
                    await self.report_if_finished(entry.name)
                except (ReviewRejected, ReviewThrottled) as exc:  # this review's; others go on
                    logger.warning("reconciler: review %s: %s; again next sweep", entry.name, exc)
        self.metrics.watcher_last_poll.labels("reconciler").set(now)

    async def report_if_finished(
        self, name: str, source: EventSource = EventSource.RECONCILER
    ) -> None:
        """Describe review ``name``; when it has ended, emit what the backend says as a loop
        event from ``source`` (Label Studio's webhook posts are checked this way too)."""
        state = await self.backend.describe(name)
        if state is not None and state.status.terminal:
            await self.emit(
                LoopEvent(
                    state.name,
                    source,
                    state.status,
                    state.output_uri,
                    state.flow,
                    state.failure_code,
                    state.failure_reason,
                    self.clock(),
                    state.ended_at_s,
                )
            )
