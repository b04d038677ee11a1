"""The demo's summary maths, the filing of outcome records, metrics parsing and the console."""

from __future__ import annotations

import io
import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream_router.demo.console import Console, Progress, RateMeter
from stream_router.demo.summary import corrections, percentile, render, summarize
from stream_router.demo.tracker import MetricsSnapshot, OutcomeTracker, Reviewed, parse_metrics
from stream_router.metrics import IngestMetrics, ReviewMetrics


@pytest.mark.parametrize(
    ("q", "expected"), [(0, 1.0), (50, 5.0), (90, 9.0), (99, 10.0), (100, 10.0)]
)
def test_percentile_nearest_rank(q: float, expected: float) -> None:
    values = [float(v) for v in (10, 3, 1, 7, 5, 2, 9, 4, 8, 6)]
    assert percentile(values, q) == expected


def test_percentile_of_nothing_and_out_of_range() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def reviewed(label: str | None, model: str, truth: str | None, at: float) -> Reviewed:
    return Reviewed(label=label, model_label=model, truth=truth, written_s=at)


def test_corrections_count_changes_and_right_changes() -> None:
    result = corrections(
        {
            "a": reviewed("cat", "cat", "cat", 0),  # confirmed
            "b": reviewed("dog", "cat", "dog", 0),  # corrected, right
            "c": reviewed("bird", "cat", "dog", 0),  # corrected, wrong
            "d": reviewed("cat", "cat", "dog", 0),  # model wrong, reviewer missed it
        }
    )
    assert (result.reviewed, result.corrected, result.corrected_right) == (4, 2, 1)
    assert (result.model_wrong, result.reviewers_right) == (3, 2)
    assert result.corrected_pct == 50.0
    assert result.corrected_right_pct == 50.0


def test_summary_counts_each_event_once_and_judges_the_run() -> None:
    sent = {"e1": 100.0, "e2": 100.0, "e3": 101.0, "e4": 102.0, "e5": 103.0}
    outcomes = {
        "e1": ["accepted", "accepted"],  # at-least-once repeat: a duplicate, not a failure
        "e2": ["reviewed"],
        "e3": ["unreviewed"],
        "e4": ["dead-lettered"],
        "zz": ["accepted"],  # not ours
    }
    summary = summarize(sent, outcomes, {"e2": reviewed("dog", "cat", "dog", 104.0)})
    assert summary.counts == {"accepted": 1, "reviewed": 1, "unreviewed": 1, "dead-lettered": 1}
    assert summary.missing == ["e5"]
    assert (summary.duplicates, summary.unexpected, summary.conflicting) == (1, 1, [])
    assert summary.latency_s["p50"] == 4.0
    assert not summary.ok
    text = render(summary)
    assert "FAILED: 1 events have no outcome (first: e5)" in text
    data = summary.to_json()
    assert data["ok"] is False
    assert data["corrections"]["corrected_pct"] == 100.0
    json.dumps(data)  # serialisable as it is


def test_two_different_outcomes_fail_and_a_complete_run_passes() -> None:
    sent = {"e1": 0.0, "e2": 0.0}
    bad = summarize(sent, {"e1": ["accepted"], "e2": ["reviewed", "unreviewed"]}, {})
    assert bad.conflicting == ["e2"]
    assert not bad.ok
    good = summarize(sent, {"e1": ["accepted"], "e2": ["dead-lettered"]}, {})
    assert good.ok
    assert "OK: all 2 events reached exactly one outcome" in render(good)
    assert not summarize({}, {}, {}).ok


def test_tracker_files_results_and_dead_letters_by_event_id() -> None:
    tracker = OutcomeTracker("unused:9092", "out", "dlq", "rr", 1)
    envelope = {
        "event_id": "e1",
        "decision": "reviewed",
        "prediction": {"label": "cat"},
        "event": {"ground_truth": "dog"},
        "review": {"label": "dog"},
    }
    tracker._file("rr", b"loop", json.dumps({"event_id": "e1"}).encode(), 1.0)
    tracker._file("rr", b"loop", json.dumps({"event_id": "e9"}).encode(), 1.0)
    tracker._file("out", b"e1", json.dumps(envelope).encode(), 5.0)
    tracker._file("dlq", b"bad-1", json.dumps({"reason_class": "not_json"}).encode(), 2.0)
    request = {"reason_class": "bad_input", "review_request": {"event_id": "e2"}}
    tracker._file("dlq", b"loop-2", json.dumps(request).encode(), 2.0)
    tracker._file("out", None, b"{not json", 2.0)
    assert dict(tracker.outcomes) == {
        "e1": ["reviewed"],
        "bad-1": ["dead-lettered"],
        "e2": ["dead-lettered"],
    }
    assert tracker.reviewed["e1"] == reviewed("dog", "cat", "dog", 5.0)
    assert tracker.unreadable == 1
    assert tracker.counts() == {
        "accepted": 0,
        "reviewed": 1,
        "unreviewed": 0,
        "dead-lettered": 2,
        "in review": 1,
    }
    assert tracker.finished({"e1", "e2"})
    assert not tracker.finished({"e1", "e9"})


def test_parse_metrics_reads_the_router_registry() -> None:
    registry = CollectorRegistry()
    ingest, review = IngestMetrics(registry), ReviewMetrics(registry)
    ingest.consumed.labels("predictions").inc(40)
    review.in_flight.set(3)
    review.budget_remaining.labels("experts", "hour").set(7)
    review.start_throttled.inc(2)
    snapshot = parse_metrics(generate_latest(registry).decode())
    assert snapshot == MetricsSnapshot(40.0, 3.0, {"experts/hour": 7.0}, 2.0, ok=True)


def progress(elapsed: float, produced: int) -> Progress:
    counts = {"accepted": produced, "reviewed": 0, "unreviewed": 0, "dead-lettered": 0}
    counts["in review"] = 2
    return Progress(elapsed, "producing", produced, 100, counts, MetricsSnapshot(ok=True))


def test_console_plain_lines_are_periodic() -> None:
    out = io.StringIO()
    console = Console(out, plain_every_s=3600)
    console.update(progress(0.0, 1))
    console.update(progress(1.0, 2))  # within the period: not printed
    console.update(progress(2.0, 3), force=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "in=1/100 accepted=1 in_review=2" in lines[0]
    assert "\x1b[" not in out.getvalue()


def test_console_live_block_is_redrawn_in_place() -> None:
    out = io.StringIO()
    console = Console(out, live=True)
    console.update(progress(0.0, 1))
    console.update(progress(1.0, 2))
    text = out.getvalue()
    assert text.count("\x1b[4F\x1b[J") == 1  # the second draw replaced the first's 4 lines
    assert "events in 2/100" in text


def test_rate_meter_over_a_window() -> None:
    meter = RateMeter(window_s=5)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(2.0, 20) == 10.0
    assert meter.add(10.0, 20) == 0.0  # old points dropped: no events lately
