"""The review role's monitor: backlog and ages (metrics), catch-up, and a stuck commit (readiness).

Kafka is replaced by what the monitor reads of it (end offsets, the group's commits, the
timestamp of the oldest unrecorded request); time is a fake clock moved by the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream_router.metrics import ReviewMetrics
from stream_router.review.app import ReviewService
from stream_router.review.audit import Auditor, AuditTally, Observation
from stream_router.review.fake import FakeReviewBackend
from stream_router.review.ledger import State
from stream_router.review.scheduler import Stats
from stream_router.settings import Settings

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Kafka:
    """What the monitor reads: partition bounds, commits, the oldest unrecorded request's time."""

    def __init__(self) -> None:
        self.ends = {0: 100, 1: 50}
        self.commits = {0: 100, 1: 40}
        self.written_s: dict[tuple[int, int], float] = {}

    async def bounds(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        return {p: (0, self.ends[p]) for p in partitions}

    async def committed(self, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
        return {p: self.commits[p] for p in partitions}

    async def timestamp_at(self, topic: str, partition: int, offset: int) -> float | None:
        return self.written_s.get((partition, offset))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ReviewService, Kafka, Clock]:
    clock = Clock()
    settings = Settings.model_validate(
        {
            "watchers": {"enabled": ["reconciler"]},
            "review": {"data_dir": str(tmp_path), "stall_after_s": 300, "catch_up_after_s": 30},
        }
    )
    registry = CollectorRegistry()
    service = ReviewService(
        settings, ReviewMetrics(registry), backend=FakeReviewBackend(), clock=clock,
        monotonic=clock,
    )  # fmt: skip
    service.registry = registry  # type: ignore[attr-defined]
    kafka = Kafka()
    for name in ("bounds", "committed", "timestamp_at"):
        monkeypatch.setattr(service.reader, name, getattr(kafka, name))
    scheduler = service.scheduler
    monkeypatch.setattr(scheduler, "owned", lambda: [0, 1])
    monkeypatch.setattr(scheduler, "loading", lambda: [])
    by_state = dict.fromkeys(State, 0) | {State.PENDING: 2, State.STARTED: 5}
    stats = Stats(by_state, oldest_pending_s=NOW - 45, next_offsets={0: 100, 1: 40})
    monkeypatch.setattr(scheduler, "stats", lambda: stats)
    return service, kafka, clock


async def test_backlog_ages_and_a_catch_up_of_what_waits_too_long(
    world: tuple[ReviewService, Kafka, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, kafka, clock = world
    registry: CollectorRegistry = service.registry  # type: ignore[attr-defined]
    caught: list[tuple[int, int]] = []

    async def catch_up(partition: int, end: int) -> int:
        caught.append((partition, end))
        return end - 40

    monkeypatch.setattr(service.scheduler, "catch_up", catch_up)
    kafka.written_s[(1, 40)] = NOW - 10  # the oldest of partition 1's ten unrecorded requests
    await service._measure()
    assert sample(registry, "stream_router_review_requests_backlog", partition="0") == 0
    assert sample(registry, "stream_router_review_requests_backlog", partition="1") == 10
    assert sample(registry, "stream_router_review_oldest_unrecorded_age_seconds") == 10
    assert sample(registry, "stream_router_review_oldest_pending_age_seconds") == 45
    assert sample(registry, "stream_router_review_ledger_entries", state="started") == 5
    assert caught == []  # 10 s is within review.catch_up_after_s

    clock.now += 25  # now 35 s old: read and recorded directly
    await service._measure()
    assert caught == [(1, 50)]


async def test_a_commit_that_does_not_move_below_waiting_records_is_reported(
    world: tuple[ReviewService, Kafka, Clock],
) -> None:
    service, kafka, clock = world
    service._opened.set()
    await service._measure()
    assert service._stuck == []
    clock.now += 301  # partition 1's commit stays at 40 with 10 records above it
    await service._measure()
    assert service._stuck == [
        "review-requests partition 1: commit stuck at 40 for 301 s with 10 record(s) above it"
    ]
    kafka.commits[1] = 45  # it moves: no longer stuck
    await service._measure()
    assert service._stuck == []
    kafka.commits[1] = kafka.ends[1] = 50  # nothing waits above a still commit: not stuck
    clock.now += 1000
    await service._measure()
    assert service._stuck == []


async def test_the_audit_counts_of_the_partitions_read_are_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    registry = CollectorRegistry()
    service = ReviewService(settings, ReviewMetrics(registry), backend=FakeReviewBackend())
    auditor = Auditor(settings.review.audit, "7")
    tally = AuditTally()
    for error in [True] * 30 + [False] * 70:
        tally = tally.fold(auditor.sample(tally, Observation("audit", "cat", error)))
    by_state = dict.fromkeys(State, 0)
    stats = Stats(by_state, None, {0: 0}, audit={0: tally})
    monkeypatch.setattr(service.scheduler, "stats", lambda: stats)
    monkeypatch.setattr(service.scheduler, "owned", lambda: [])
    await service._measure()
    labels = {"route": "audit", "label": "cat"}
    assert sample(registry, "stream_router_review_audit_reviews", **labels) == 100
    assert sample(registry, "stream_router_review_audit_errors", **labels) == 30
    lower = sample(registry, "stream_router_review_audit_error_ratio_lower_bound", **labels)
    assert lower is not None
    assert lower > 0.05  # well above the target
    assert sample(registry, "stream_router_review_audit_target_error_ratio", route="audit") == 0.05
    stats.audit.clear()  # the partition moved to another instance
    await service._measure()
    assert sample(registry, "stream_router_review_audit_reviews", **labels) is None
