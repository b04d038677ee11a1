"""The supervisor of a process (either role): deaths end it, readiness names what is wrong."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_router.metrics import ReviewMetrics
from stream_router.review.fake import FakeReviewBackend
from stream_router.review.intake import Fetched
from stream_router.review_role import ReviewService
from stream_router.settings import Settings
from stream_router.supervision import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_problems_list_dead_tasks_first_and_survive_a_broken_check() -> None:
    supervisor = Supervisor(60)
    assert supervisor.problems() == []

    def broken() -> str | None:
        raise KeyError("gone")

    supervisor.add_check("review", lambda: "watcher eventbridge stalled")
    supervisor.add_check("odd", broken)
    supervisor.died("ingest", RuntimeError("boom"))
    assert supervisor.problems() == [
        "task ingest died: RuntimeError: boom",
        "review: watcher eventbridge stalled",
        "odd: check failed: KeyError: 'gone'",
    ]
    with pytest.raises(ValueError, match="exists already"):
        supervisor.add_check("review", lambda: None)


def test_a_check_that_reports_the_deaths_says_them_on_its_own_line() -> None:
    """The review role's form: ``review: <first death>``, and no line of their own."""
    supervisor = Supervisor(60)
    supervisor.add_check("worker", lambda: None)
    supervisor.add_check("review", supervisor.death, reports_deaths=True)
    supervisor.died("loop-events", KeyError("route"))
    assert supervisor.problems() == ["review: loop-events died (KeyError); the process is stopping"]


async def test_run_records_a_death_and_logs_it_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(60)

    async def crash() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("policy bug")

    assert await supervisor.run("ingest", crash(), until_shutdown=True) is None
    (record,) = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "background task ingest died (RuntimeError: policy bug)" in record.getMessage()
    assert supervisor.problems() == ["task ingest died: RuntimeError: policy bug"]


async def test_run_until_shutdown_a_task_that_returns_early_is_dead_unless_stopping() -> None:
    async def done() -> int:
        return 7

    supervisor = Supervisor(60)
    assert await supervisor.run("watcher", done(), until_shutdown=True) is None
    assert supervisor.problems() == ["task watcher died: ended before shutdown"]

    stopping = Supervisor(60)
    stopping.stopping = True
    assert await stopping.run("watcher", done(), until_shutdown=True) == 7
    assert stopping.problems() == ["stopping"]


async def test_an_exception_is_recorded_logged_and_stops_the_process_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(60)
    stops: list[str] = []
    supervisor.on_death = lambda: stops.append("stop")
    supervisor.require("loop-events")

    async def broken() -> None:
        raise KeyError("route")

    await supervisor.run("loop-events", broken())
    await supervisor.run("reconciler", broken())
    assert stops == ["stop"]
    assert supervisor.deaths == {"loop-events": "KeyError", "reconciler": "KeyError"}
    assert supervisor.death() == "loop-events died (KeyError); the process is stopping"
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 2
    assert critical[0].exc_info is not None


async def test_cancellation_is_not_a_death() -> None:
    supervisor = Supervisor(60)
    supervisor.require("review-requests")
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.run("review-requests", forever()))
    await started.wait()
    assert supervisor.stall() is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.deaths == {}
    assert supervisor.stall() == "review-requests is not running"


def test_an_event_held_too_long_is_a_stall_but_a_deliberate_wait_is_not() -> None:
    clock = Clock()
    supervisor = Supervisor(60, monotonic=clock)
    with supervisor.handling("review-requests"):
        clock.now += 30
        with supervisor.waiting():  # e.g. a budget hold of an hour
            clock.now += 3600
            assert supervisor.stall() is None
        clock.now += 59
        assert supervisor.stall() is None
        clock.now += 2
        assert supervisor.stall() == (
            "review-requests: one event in hand for 61 s (stall threshold 60 s)"
        )
    assert supervisor.stall() is None  # idle is fine


async def test_a_heartbeat_component_stalls_when_silent_beyond_its_period() -> None:
    clock = Clock()
    supervisor = Supervisor(60, monotonic=clock)
    supervisor.heartbeat("reconciler", 30)
    started = asyncio.Event()

    async def sweeps() -> None:
        started.set()
        await asyncio.Event().wait()

    clock.now += 1000  # long before it starts: silence counts from the start
    task = asyncio.create_task(supervisor.run("reconciler", sweeps()))
    await started.wait()
    clock.now += 90
    assert supervisor.stall() is None
    supervisor.beat("reconciler")
    clock.now += 91
    assert supervisor.stall() == "reconciler: no progress for 91 s (allowed 90 s)"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_silent_heartbeat_says_what_it_does_and_its_last_failure() -> None:
    clock = Clock()
    supervisor = Supervisor(5, monotonic=clock)
    supervisor.heartbeat("monitor", 1, doing="reads offsets from Kafka at 127.0.0.1:9092")
    started = asyncio.Event()

    async def passes() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.run("monitor", passes()))
    await started.wait()
    supervisor.failed("monitor", "KafkaConnectionError: Unable to bootstrap")
    clock.now += 6
    assert supervisor.stall() is None  # a failure within the allowance is not a problem yet
    clock.now += 1
    assert supervisor.stall() == (
        "monitor (reads offsets from Kafka at 127.0.0.1:9092): no progress for 7 s (allowed "
        "6 s); last failure: KafkaConnectionError: Unable to bootstrap"
    )
    supervisor.beat("monitor")  # a pass succeeds: the failure is forgotten
    clock.now += 7
    assert supervisor.stall() == (
        "monitor (reads offsets from Kafka at 127.0.0.1:9092): no progress for 7 s (allowed 6 s)"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def service(tmp_path: Path) -> ReviewService:
    settings = Settings.model_validate(
        {
            "watchers": {"enabled": ["reconciler"]},
            "review": {"backend": "fake", "data_dir": str(tmp_path)},
        }
    )
    service = ReviewService(settings, ReviewMetrics(CollectorRegistry()))
    assert isinstance(service.backend, FakeReviewBackend)  # chosen by name, as any backend
    return service


def request_record(offset: int, value: bytes) -> Any:
    return SimpleNamespace(offset=offset, value=value, key=None, timestamp=0)


class OneRecordFeed:
    """review-requests holding one record on one partition (``review/intake.py``'s Feed)."""

    def __init__(self, partition: int, record: Any) -> None:
        self.partition, self.record = partition, record
        self.followed: set[int] = set()

    def follow(self, positions: Any) -> None:
        self.followed = set(positions)

    def following(self) -> bool:
        return bool(self.followed)

    async def fetch(self, timeout_ms: int, max_records: int) -> Fetched:
        return Fetched({self.partition: [self.record]} if self.partition in self.followed else {})


async def test_review_service_readiness_and_an_unhandled_error_takes_it_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    review = service(tmp_path)
    stops: list[str] = []
    review.supervisor.on_death = lambda: stops.append("stop")
    assert review.readiness_problem() == (
        "starting: worker not started or review backend not open yet"
    )

    await review._open()
    assert review.readiness_problem() == "no review partitions assigned"

    async def broken(partition: int, records: object, skipped: object) -> bool:
        raise KeyError("route")  # a bug: nothing handles it

    monkeypatch.setattr(review.scheduler, "take_requests", broken)
    monkeypatch.setattr(review.scheduler, "intake_positions", lambda: {3: (1, 0)})
    monkeypatch.setattr(review, "feed", OneRecordFeed(3, request_record(0, b"{}")))
    await review.tasks["review-requests"]()  # the task faust runs: it must not raise into
    # faust's supervisor
    assert stops == ["stop"]
    assert review.readiness_problem() == "review-requests died (KeyError); the process is stopping"
