"""Watcher failures are counted by kind, and only a clean poll counts as progress."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream_router.aws.watchers import PollErrors, WatcherCounts
from stream_router.metrics import ReviewMetrics


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_poll_errors_are_what_each_poll_added() -> None:
    errors = PollErrors()
    counts = WatcherCounts(received=3, emitted=3)
    assert errors(counts) == {"sqs": 0, "forward": 0, "unparseable": 0}
    counts.sqs_errors += 2
    counts.unparseable += 1
    assert errors(counts) == {"sqs": 2, "forward": 0, "unparseable": 1}
    counts.emit_failures += 1
    assert errors(counts) == {"sqs": 0, "forward": 1, "unparseable": 0}
    assert errors(counts) == {"sqs": 0, "forward": 0, "unparseable": 0}


def test_a_failed_receive_is_counted_and_does_not_move_the_last_poll() -> None:
    registry = CollectorRegistry()
    metrics = ReviewMetrics(registry)
    last = "stream_router_review_watcher_last_poll_timestamp_seconds"
    failures = "stream_router_review_watcher_errors_total"

    assert metrics.watcher_polled("eventbridge", {"sqs": 0, "forward": 0, "unparseable": 0}, 100.0)
    assert value(registry, last, watcher="eventbridge") == 100.0

    assert not metrics.watcher_polled(
        "eventbridge", {"sqs": 1, "forward": 0, "unparseable": 0}, 130.0
    )
    assert value(registry, last, watcher="eventbridge") == 100.0  # denied: looks stalled
    assert value(registry, failures, watcher="eventbridge", kind="sqs") == 1.0

    metrics.watcher_polled("eventbridge", {"sqs": 0, "forward": 2, "unparseable": 0}, 160.0)
    assert value(registry, last, watcher="eventbridge") == 100.0
    assert value(registry, failures, watcher="eventbridge", kind="forward") == 2.0

    # a malformed message is deleted: the watcher still makes progress
    metrics.watcher_polled("eventbridge", {"sqs": 0, "forward": 0, "unparseable": 1}, 190.0)
    assert value(registry, last, watcher="eventbridge") == 190.0
    assert value(registry, failures, watcher="eventbridge", kind="unparseable") == 1.0
    assert value(registry, failures, watcher="s3-output", kind="sqs") is None
