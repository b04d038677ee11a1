"""The reconciler: asks the backend about open reviews, and re-sends held requests nobody holds.

- :meth:`Reconciler.sweep` (every ``watchers.reconcile_interval_s``, when the ``reconciler``
  watcher is enabled): an open review past its deadline, or no longer listed among the flow's
  open reviews (after ``reconcile_grace_s``), is described; if it has ended, its end is reported
  as a loop event. This alone finishes every review when no SQS watcher runs, and catches events
  a watcher missed.
- :meth:`Reconciler.resend_orphaned_holds` (on every tick of the request audit, whichever
  watchers run): a held request (budget spent with ``budget_fallback: hold``, or an escalation
  not started yet) that no actor of this process holds is handed back to review-requests, once
  per grace period, while its partition is owned here. faust can drop records fetched while a
  worker finishes recovering its tables and then commit past them, so the copy handed back on
  shutdown is not enough: the held ledger entry is the record of the request (the audit counts
  it as handled). Copies find the ledger and do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from stream_router.errors import UpstreamError
from stream_router.metrics import ReviewMetrics
from stream_router.review.flow import ReviewFlow
from stream_router.review.ledger import LedgerEntry

logger = logging.getLogger(__name__)


class Reconciler:
    """One sweep at a time over ``flow``'s ledger; see the module docstring."""

    def __init__(
        self,
        flow: ReviewFlow,
        metrics: ReviewMetrics,
        *,
        grace_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.flow = flow
        self.metrics = metrics
        self.grace_s = grace_s
        self.clock = clock
        self._nudged: dict[str, float] = {}  # first name -> when a sweep last handed it back

    async def sweep(self) -> None:
        """Check open reviews and held requests; a backend error waits for the next sweep."""
        try:
            await self._sweep()
        except UpstreamError as exc:
            logger.warning("reconciler sweep failed: %s", exc)

    async def _sweep(self) -> None:
        now = self.clock()
        entries = [
            LedgerEntry.from_dict(data)
            for data in list(self.flow.ledger.values())
            if data and not data.get("closed") and not data.get("held")
        ]
        open_names: set[str] = set()
        for flow in {entry.flow for entry in entries}:
            async for state in self.flow.backend.pending(flow):
                open_names.add(state.name)
        for entry in entries:
            overdue = now >= entry.deadline_s
            vanished = entry.name not in open_names and now - entry.started_s >= self.grace_s
            if overdue or vanished:
                await self.flow.report_if_finished(entry.name)
        self.metrics.watcher_last_poll.labels("reconciler").set(now)

    async def resend_orphaned_holds(self) -> None:
        """Hand back the held requests of owned partitions that no actor holds (see above)."""
        now = self.clock()
        owned = set(self.flow.owned())
        held: dict[str, Mapping[str, Any]] = {
            str(first): data for first, data in list(self.flow.ledger.items())
            if data and data.get("held")
        }  # fmt: skip
        self._nudged = {first: at for first, at in self._nudged.items() if first in held}
        for first, data in held.items():
            if first in self.flow.held or int(data["partition"]) not in owned:
                continue
            if now - max(float(data["held_s"]), self._nudged.get(first, 0.0)) < self.grace_s:
                continue
            self._nudged[first] = now
            await self.flow.hand_back(first, data["request"])
            logger.info("held review request %s was not held by any worker: handed back", first)
