"""The demo's summary maths, the filing of outcome records, metrics parsing and the console."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy.stats import beta  # type: ignore[import-untyped, unused-ignore]

from stream_router.demo.console import Console, Progress, RateMeter
from stream_router.demo.summary import (
    Audit,
    audit_bound,
    audit_of,
    audit_rows,
    corrections,
    percentile,
    render,
    summarize,
)
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


def envelope(event_id: str, route: str | None, total: float | None, corrected: bool) -> bytes:
    record: dict[str, object] = {
        "event_id": event_id,
        "decision": "reviewed",
        "route": route,
        "prediction": {"label": "cat"},
        "event": {"ground_truth": "cat"},
        "review": {"label": "dog" if corrected else "cat", "corrected": corrected},
    }
    if total is not None:
        record["review_probability"] = {"total": total, "routes": {route: total}}
    return json.dumps(record).encode()


def test_audit_of_reads_reviewed_envelopes_only() -> None:
    assert audit_of(json.loads(envelope("e", "audit", 0.02, True))) == Audit("audit", 0.02, True)
    assert audit_of(json.loads(envelope("e", "general", None, False))) == Audit(
        "general", None, False
    )
    assert audit_of({"decision": "accepted", "route": None, "review": None}) is None
    assert not Audit("general", 1.0, True).audited
    assert not Audit("audit", None, True).audited  # a record of revision 1.0: not an audit
    assert Audit("audit", 0.02, False).audited


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [
        (12, 1, 0.338681),
        (149, 0, 1 - 0.05 ** (1 / 149)),  # with no error: 1 - delta^(1/n), just under 2 %
        (148, 0, 1 - 0.05 ** (1 / 148)),  # just over: why a bound of 2 % needs 149
        (300, 2, 0.020836),
        (1000, 10, 0.016903),
    ],
)
def test_audit_bound_is_the_exact_clopper_pearson_bound(n: int, k: int, expected: float) -> None:
    audits = [Audit("audit", 0.02, i < k) for i in range(n)]
    audits += [Audit("general", 1.0, True), Audit("experts", 1.0, False)]  # not audits
    bound = audit_bound(audits)
    assert (bound.audited, bound.corrected, bound.routes) == (n, k, ["audit"])
    assert bound.estimate == k / n
    assert bound.bound == pytest.approx(expected, abs=2e-6)
    assert bound.bound == pytest.approx(beta.ppf(0.95, k + 1, n - k), rel=1e-12)
    assert bound.needed == 149


def test_without_audited_reviews_there_is_no_bound_yet_and_says_what_it_needs() -> None:
    summary = summarize({"e1": 0.0}, {"e1": ["reviewed"]}, {}, audits={})
    assert summary.audit == audit_bound([])
    assert summary.audit is not None
    assert (summary.audit.audited, summary.audit.bound, summary.audit.estimate) == (0, None, None)
    text = render(summary)
    assert "no bound yet: no audited review" in text
    assert re.search(r"a bound of 2 % needs +149 audited reviews with no correction", text)
    data = summary.to_json()
    assert data["audit"]["bound"] is None
    assert data["audit"]["needed"] == 149
    json.dumps(data)


def test_the_summary_states_the_audit_bound_of_the_runs_own_events() -> None:
    sent = {f"e{i}": 0.0 for i in range(160)}
    tracker = OutcomeTracker("unused:9092", "out", "dlq", "rr", 1)
    audits = {}
    for i in range(160):
        data = json.loads(envelope(f"e{i}", "audit", 0.02, i < 1))
        tracker._file("out", f"e{i}".encode(), json.dumps(data).encode(), 1.0)
        audit = audit_of(data)
        assert audit is not None
        audits[f"e{i}"] = audit
    audits["zz"] = Audit("audit", 0.02, True)  # not produced by this run: left out
    summary = summarize(sent, tracker.outcomes, tracker.reviewed, audits=audits)
    assert summary.audit is not None
    assert (summary.audit.audited, summary.audit.corrected) == (160, 1)
    text = render(summary)
    expected = beta.ppf(0.95, 2, 159)
    assert f"at most {100 * expected:.3g} % at 95 % confidence (Clopper-Pearson)" in text
    assert re.search(r"audited reviews \(audit\) +160, corrected 1\n", text)
    assert "needs 149" not in text  # enough audited reviews for a bound of 2 %
    data = summary.to_json()
    assert data["audit"]["estimate"] == 1 / 160
    assert data["audit"]["bound"] == pytest.approx(expected)
    json.dumps(data)
    assert summarize(sent, tracker.outcomes, tracker.reviewed).audit is None  # not asked


def test_without_scipy_the_counts_are_shown_and_the_bound_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "stream_router.thresholds.bounds", None)  # import fails
    bound = audit_bound([Audit("audit", 0.02, False), Audit("audit", 0.02, True)])
    assert (bound.audited, bound.corrected, bound.bound, bound.needed) == (2, 1, None, None)
    assert bound.missing is not None
    assert "stream-router[analysis]" in bound.missing
    summary = summarize({}, {}, {}, audits={})
    text = "\n".join(f"{name} {value}" for name, value in audit_rows(bound))
    assert "estimate 50 %; no bound: scipy is not installed" in text
    assert summary.audit is not None
    assert summary.audit.bound is None
