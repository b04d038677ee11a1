"""The review role's monitor: backlog and ages (metrics), catch-up of what the intake never
delivered, stuck intake (readiness), and the audit monitor's counts of the partitions whose
ledger is read.

Plain logic over what it is given: the scheduler (owned partitions, their statistics, catch-up),
what Kafka says of review-requests (:class:`Offsets`: partition bounds, the write time of a
record), the metrics and the clocks. The review role (``review_role.py``)
runs :meth:`ReviewMonitor.measure` every ``review.monitor_interval_s`` under supervision and
turns a Kafka error into a failed beat; readiness reads :attr:`ReviewMonitor.stuck`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stream_router.metrics import ReviewMetrics
from stream_router.review.audit import AuditReport
from stream_router.review.ledger import State
from stream_router.review.scheduler import Stats
from stream_router.settings import ReviewSettings


class Offsets(Protocol):
    """What the monitor reads of review-requests."""

    async def bounds(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]: ...

    async def timestamp_at(self, topic: str, partition: int, offset: int) -> float | None: ...


class Scheduled(Protocol):
    """What the monitor asks of the scheduler (``ReviewScheduler``)."""

    def owned(self) -> list[int]: ...

    def loading(self) -> list[int]: ...

    def stats(self) -> Stats: ...

    async def catch_up(self, partition: int, end: int) -> int: ...


class ReviewMonitor:
    """One pass of :meth:`measure` at a time (see the module doc)."""

    def __init__(
        self,
        review: ReviewSettings,
        metrics: ReviewMetrics,
        scheduler: Scheduled,
        offsets: Offsets,
        audit_report: AuditReport,
        *,
        topic: str,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.review = review
        self.metrics = metrics
        self.scheduler = scheduler
        self.offsets = offsets
        self.audit_report = audit_report
        self.topic = topic
        self.clock = clock
        self.monotonic = monotonic
        #: Why partitions' intake is stuck (readiness reports them); empty when none is.
        self.stuck: list[str] = []
        self._positions: dict[int, tuple[int, float]] = {}  # partition -> (position, since)

    def forget(self, partition: int) -> None:
        """``partition`` moved to another instance: its intake is no longer watched here."""
        self._positions.pop(partition, None)

    async def measure(self) -> None:
        """The backlog and ages (metrics), stuck intake (:attr:`stuck`), records never
        delivered, and the audit monitor's metrics of the partitions whose ledger is read.

        For each owned partition whose ledger is read: records at or above the scheduler's next
        expected offset are not recorded yet (the backlog); once the oldest of them is older than
        ``review.catch_up_after_s`` they are read and recorded directly (the intake did not
        deliver them). A partition whose next expected offset has not moved for
        ``review.stall_after_s`` while records wait above it is reported in :attr:`stuck`.
        Kafka's errors propagate.
        """
        review, metrics, scheduler = self.review, self.metrics, self.scheduler
        owned = [p for p in scheduler.owned() if p not in scheduler.loading()]
        stats = scheduler.stats()
        now, mono = self.clock(), self.monotonic()
        for state in State:
            metrics.ledger_entries.labels(state.value).set(stats.by_state[state])
        pending_age = 0.0 if stats.oldest_pending_s is None else now - stats.oldest_pending_s
        metrics.oldest_pending_age.set(max(0.0, pending_age))
        self.audit_report.publish(list(stats.audit.values()))
        if not owned:
            metrics.oldest_unrecorded_age.set(0)
            self.stuck = []
            return
        topic = self.topic
        bounds = await self.offsets.bounds(topic, owned)
        oldest_unrecorded, stuck = 0.0, []
        for partition in owned:
            _, end = bounds[partition]
            expected = stats.next_offsets.get(partition, end)
            metrics.requests_backlog.labels(str(partition)).set(max(0, end - expected))
            if expected < end:
                written_s = await self.offsets.timestamp_at(topic, partition, expected)
                age = 0.0 if written_s is None else max(0.0, now - written_s)
                oldest_unrecorded = max(oldest_unrecorded, age)
                if age > review.catch_up_after_s:
                    await scheduler.catch_up(partition, end)
            last = self._positions.get(partition)
            if last is None or last[0] != expected:
                self._positions[partition] = (expected, mono)
            elif end > expected and mono - last[1] > review.stall_after_s:
                why = "" if stats.room else (
                    f" (paused: review.intake_max_waiting, {review.intake_max_waiting}, "
                    "requests wait to start)"
                )  # fmt: skip
                stuck.append(
                    f"review-requests partition {partition}: intake stuck at {expected} for "
                    f"{mono - last[1]:.0f} s with {end - expected} record(s) above it{why}"
                )
        metrics.oldest_unrecorded_age.set(oldest_unrecorded)
        self.stuck = stuck
