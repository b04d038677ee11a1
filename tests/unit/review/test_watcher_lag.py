"""Watcher lag: from a loop event's own timestamp to its forwarding onto loop-events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from stream_router.aws.messages import eventbridge_event, s3_output_events
from stream_router.metrics import ReviewMetrics
from stream_router.review.backend import ReviewStatus
from stream_router.review.events import EventSource, LoopEvent, epoch_s

LAG = "stream_router_review_watcher_event_lag_seconds"
CHANGED = "2026-11-25T08:00:00Z"
CHANGED_S = datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp()


def status_change(time: object = CHANGED) -> dict[str, object]:
    return {
        "detail-type": "SageMaker A2I HumanLoop Status Change",
        "source": "aws.sagemaker",
        "time": time,
        "detail": {"humanLoopName": "loop-1", "humanLoopStatus": "Completed",
                   "humanLoopOutput": {"outputS3Uri": "s3://b/p/f/loop-1/output.json"}},
    }  # fmt: skip


def object_created(event_time: str = "2026-11-25T08:00:00.250Z") -> dict[str, object]:
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": event_time,
                "s3": {"bucket": {"name": "b"}, "object": {"key": "p/f/loop-1/output.json"}},
            }
        ]
    }


def lag(registry: CollectorRegistry, watcher: str, suffix: str) -> float | None:
    return registry.get_sample_value(f"{LAG}_{suffix}", {"watcher": watcher})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CHANGED, CHANGED_S),
        ("2026-11-25T08:00:00.250Z", CHANGED_S + 0.25),
        ("2026-11-25T09:00:00+01:00", CHANGED_S),
        ("2026-11-25T08:00:00", CHANGED_S),  # no zone: UTC
        ("yesterday", None),
        (1764057600, None),
        (None, None),
    ],
)
def test_epoch_s(text: object, expected: float | None) -> None:
    assert epoch_s(text) == expected


def test_eventbridge_and_s3_events_carry_their_own_time() -> None:
    event = eventbridge_event(status_change(), observed_at_s=CHANGED_S + 9)
    assert event is not None
    assert event.event_time_s == CHANGED_S
    [created] = s3_output_events(object_created(), observed_at_s=CHANGED_S + 9)
    assert created.event_time_s == CHANGED_S + 0.25
    # A missing or unreadable time does not lose the event, only its lag.
    undated = eventbridge_event(status_change(time="soon"))
    assert undated is not None
    assert undated.event_time_s is None


def test_the_event_time_travels_through_loop_events() -> None:
    event = LoopEvent("loop-1", EventSource.RECONCILER, ReviewStatus.FAILED, event_time_s=12.5)
    assert LoopEvent.parse(event.to_json()) == event
    older = b'{"name": "loop-1", "source": "eventbridge", "status": "Completed"}'
    assert LoopEvent.parse(older).event_time_s is None  # written before the field existed


def test_forwarding_observes_the_lag_per_watcher() -> None:
    registry = CollectorRegistry()
    metrics = ReviewMetrics(registry)
    eventbridge = eventbridge_event(status_change())
    [s3] = s3_output_events(object_created())
    assert eventbridge is not None

    metrics.watcher_forwarded("eventbridge", eventbridge.event_time_s, CHANGED_S + 1.5)
    metrics.watcher_forwarded("s3-output", s3.event_time_s, CHANGED_S + 40.25)
    metrics.watcher_forwarded("s3-output", s3.event_time_s, CHANGED_S)  # clocks apart: 0
    metrics.watcher_forwarded("reconciler", None, CHANGED_S + 5)  # no end time known

    assert lag(registry, "eventbridge", "sum") == pytest.approx(1.5)
    assert registry.get_sample_value(f"{LAG}_bucket", {"watcher": "eventbridge", "le": "1.0"}) == 0
    assert registry.get_sample_value(f"{LAG}_bucket", {"watcher": "eventbridge", "le": "2.5"}) == 1
    assert lag(registry, "s3-output", "count") == 2
    assert lag(registry, "s3-output", "sum") == pytest.approx(40.0)
    assert registry.get_sample_value(f"{LAG}_bucket", {"watcher": "s3-output", "le": "0.1"}) == 1
    assert lag(registry, "reconciler", "count") is None  # nothing observed without a time
    events = "stream_router_review_watcher_events_total"
    assert registry.get_sample_value(events, {"watcher": "reconciler"}) == 1
    assert registry.get_sample_value(events, {"watcher": "s3-output"}) == 2
