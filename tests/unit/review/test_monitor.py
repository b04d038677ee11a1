"""The review role's monitor: backlog and ages (metrics), catch-up, and a stuck intake (readiness).

Kafka is replaced by what the monitor reads of it (end offsets, the timestamp of the oldest
unrecorded request), the scheduler by what the monitor asks of it (owned partitions, their
statistics and next expected offsets, catch-up); time is a fake clock moved by the test. No
faust, no broker: the monitor is plain logic (``review/monitor.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream_router.metrics import ReviewMetrics
from stream_router.review.audit import Auditor, AuditReport, AuditTally, Observation
from stream_router.review.ledger import State
from stream_router.review.monitor import ReviewMonitor
from stream_router.review.request import ReviewRoutes
from stream_router.review.scheduler import Stats
from stream_router.settings import Settings

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Kafka:
    """What the monitor reads: partition bounds, the oldest unrecorded request's time."""

    def __init__(self) -> None:
        self.ends = {0: 100, 1: 50}
        self.written_s: dict[tuple[int, int], float] = {}

    async def bounds(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        return {p: (0, self.ends[p]) for p in partitions}

    async def timestamp_at(self, topic: str, partition: int, offset: int) -> float | None:
        return self.written_s.get((partition, offset))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class Scheduler:
    """What the monitor asks of the scheduler: two owned partitions, their stats, catch-up."""

    def __init__(self, stats: Stats, owned: list[int]) -> None:
        self.stats_now = stats
        self.owned_now = owned
        self.caught: list[tuple[int, int]] = []

    def owned(self) -> list[int]:
        return self.owned_now

    def loading(self) -> list[int]:
        return []

    def stats(self) -> Stats:
        return self.stats_now

    async def catch_up(self, partition: int, end: int) -> int:
        self.caught.append((partition, end))
        return end - 40


def monitor_of(
    settings: Settings, scheduler: Scheduler, kafka: Kafka, clock: Clock
) -> tuple[ReviewMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = ReviewMetrics(registry)
    routes = ReviewRoutes.from_settings(settings.policies, settings.review)
    auditor = Auditor(settings.review.audit, settings.policies.version)
    report = AuditReport(metrics, auditor, routes)
    monitor = ReviewMonitor(
        settings.review,
        metrics,
        scheduler,
        kafka,
        report,
        topic="review-requests",
        clock=clock,
        monotonic=clock,
    )
    return monitor, registry


@pytest.fixture
def world(tmp_path: Path) -> tuple[ReviewMonitor, CollectorRegistry, Scheduler, Kafka, Clock]:
    clock = Clock()
    settings = Settings.model_validate(
        {
            "watchers": {"enabled": ["reconciler"]},
            "review": {"data_dir": str(tmp_path), "stall_after_s": 300, "catch_up_after_s": 30},
        }
    )
    by_state = dict.fromkeys(State, 0) | {State.PENDING: 2, State.STARTED: 5}
    stats = Stats(by_state, oldest_pending_s=NOW - 45, next_offsets={0: 100, 1: 40})
    scheduler, kafka = Scheduler(stats, [0, 1]), Kafka()
    monitor, registry = monitor_of(settings, scheduler, kafka, clock)
    return monitor, registry, scheduler, kafka, clock


World = tuple[ReviewMonitor, CollectorRegistry, Scheduler, Kafka, Clock]


async def test_backlog_ages_and_a_catch_up_of_what_waits_too_long(world: World) -> None:
    monitor, registry, scheduler, kafka, clock = world
    kafka.written_s[(1, 40)] = NOW - 10  # the oldest of partition 1's ten unrecorded requests
    await monitor.measure()
    assert sample(registry, "stream_router_review_requests_backlog", partition="0") == 0
    assert sample(registry, "stream_router_review_requests_backlog", partition="1") == 10
    assert sample(registry, "stream_router_review_oldest_unrecorded_age_seconds") == 10
    assert sample(registry, "stream_router_review_oldest_pending_age_seconds") == 45
    assert sample(registry, "stream_router_review_ledger_entries", state="started") == 5
    assert scheduler.caught == []  # 10 s is within review.catch_up_after_s

    clock.now += 25  # now 35 s old: read and recorded directly
    await monitor.measure()
    assert scheduler.caught == [(1, 50)]


async def test_an_intake_that_does_not_move_below_waiting_records_is_reported(world: World) -> None:
    monitor, _, scheduler, kafka, clock = world
    await monitor.measure()
    assert monitor.stuck == []
    clock.now += 301  # partition 1's next expected offset stays at 40 with 10 records above it
    await monitor.measure()
    assert monitor.stuck == [
        "review-requests partition 1: intake stuck at 40 for 301 s with 10 record(s) above it"
    ]
    scheduler.stats_now.next_offsets[1] = 45  # it moves: no longer stuck
    await monitor.measure()
    assert monitor.stuck == []
    scheduler.stats_now.next_offsets[1] = kafka.ends[1] = 50  # nothing waits above: not stuck
    clock.now += 1000
    await monitor.measure()
    assert monitor.stuck == []


async def test_an_intake_paused_for_room_says_so(world: World) -> None:
    monitor, _, scheduler, _, clock = world
    stats = scheduler.stats_now  # review.intake_max_waiting requests wait to start:
    scheduler.stats_now = Stats(stats.by_state, stats.oldest_pending_s, stats.next_offsets,
                                room=False)  # fmt: skip
    await monitor.measure()
    clock.now += 301
    await monitor.measure()
    assert monitor.stuck == [
        "review-requests partition 1: intake stuck at 40 for 301 s with 10 record(s) above it "
        "(paused: review.intake_max_waiting, 20000, requests wait to start)"
    ]


async def test_a_partition_forgotten_starts_its_watch_again(world: World) -> None:
    """A revoked partition's intake history goes: reassigned, it is not stuck at once."""
    monitor, _, _, _, clock = world
    await monitor.measure()
    clock.now += 301
    monitor.forget(1)
    await monitor.measure()
    assert monitor.stuck == []


async def test_the_audit_counts_of_the_partitions_read_are_published(tmp_path: Path) -> None:
    """Each pass shows the audit monitor's counts and bounds of the partitions whose ledger is
    read, and withdraws those of partitions that moved away."""
    route = {"name": "audit", "review_flow": "fd-audit", "policy": {"type": "sample", "percent": 2}}
    settings = Settings.model_validate(
        {
            "watchers": {"enabled": ["reconciler"]},
            "policies": {"version": "7", "routes": [route]},
            "review": {"data_dir": str(tmp_path), "audit": {"target_error": 0.05}},
        }
    )
    auditor = Auditor(settings.review.audit, "7")
    tally = AuditTally()
    for error in [True] * 30 + [False] * 70:
        tally = tally.fold(auditor.sample(tally, Observation("audit", "cat", error)))
    by_state = dict.fromkeys(State, 0)
    stats = Stats(by_state, None, {0: 0}, audit={0: tally})
    monitor, registry = monitor_of(settings, Scheduler(stats, []), Kafka(), Clock())
    await monitor.measure()
    labels = {"route": "audit", "label": "cat"}
    assert sample(registry, "stream_router_review_audit_reviews", **labels) == 100
    assert sample(registry, "stream_router_review_audit_errors", **labels) == 30
    lower = sample(registry, "stream_router_review_audit_error_ratio_lower_bound", **labels)
    assert lower is not None
    assert lower > 0.05  # well above the target
    assert sample(registry, "stream_router_review_audit_target_error_ratio", route="audit") == 0.05
    stats.audit.clear()  # the partition moved to another instance
    await monitor.measure()
    assert sample(registry, "stream_router_review_audit_reviews", **labels) is None
