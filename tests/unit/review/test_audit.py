"""The audit monitor's bookkeeping: what counts, the tally in the ledger, labels kept bounded,
and the metrics (the exactly-once counting through the scheduler is in test_scheduler.py)."""

from __future__ import annotations

import dataclasses
import math

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_router.metrics import ReviewMetrics
from stream_router.review.audit import (
    ALL_LABELS,
    MAX_LABEL_CHARS,
    MAX_VERSIONS,
    OTHER_LABEL,
    Auditor,
    AuditReport,
    AuditSample,
    AuditTally,
    Observation,
    estimates,
    recover,
)
from stream_router.review.consolidate import Consolidation
from stream_router.review.ledger import (
    AUDIT_KEY,
    CorruptLedger,
    PartitionLedger,
    State,
    decode,
    encode,
    pending,
)
from stream_router.review.outcome import reviewed_envelope, unreviewed_envelope
from stream_router.review.request import ReviewRequest, ReviewRoutes
from stream_router.settings import AuditSettings
from tests.unit.review.requests import review_request

AUDITOR = Auditor(AuditSettings(max_labels=3), "1")
ROUTES = ReviewRoutes({"audit": "fd-audit", "general": "fd-general"})


def reviewed(
    request_label: str,
    answer: str | None,
    *,
    review_probability: float | None = 0.02,
    policy_version: str = "1",
) -> tuple[ReviewRequest, bytes]:
    """A request of the audit route and its reviewed envelope (``answer``: None, nobody
    answered)."""
    found = review_request("e1", route="audit", label=request_label, flow="fd-audit",
                           review_probability=review_probability,
                           policy_version=policy_version)  # fmt: skip
    consolidation = Consolidation(
        name=found.loop_name, flow="fd-audit", answer_path="label.label", label=answer,
        agreement=1.0 if answer else 0.0, workers=1, answered=int(answer is not None),
        tie=False, answers=(),
    )  # fmt: skip
    return found, reviewed_envelope(found, consolidation, observed_s=1.0)


def test_an_audited_answered_review_counts_with_its_error() -> None:
    request, record = reviewed("cat", "dog")
    assert AUDITOR.observe(request, "reviewed", record) == Observation("audit", "cat", True)
    request, record = reviewed("cat", "cat")
    assert AUDITOR.observe(request, "reviewed", record) == Observation("audit", "cat", False)


@pytest.mark.parametrize(
    ("probability", "version", "answer", "outcome"),
    [
        (1.0, "1", "dog", "reviewed"),  # a deterministic route: not an audit
        (None, "1", "dog", "reviewed"),  # an older ingest: not known to be an audit
        (0.02, "0", "dog", "reviewed"),  # decided under another policies.version
        (0.02, "1", None, "reviewed"),  # nobody answered: no label
        (0.02, "1", "dog", "unreviewed"),
    ],
)
def test_what_does_not_count(
    probability: float | None, version: str, answer: str | None, outcome: str
) -> None:
    request, record = reviewed("cat", answer, review_probability=probability,
                               policy_version=version)  # fmt: skip
    assert AUDITOR.observe(request, outcome, record) is None


def test_an_unreviewed_record_does_not_count() -> None:
    request = review_request("e1", review_probability=0.02)
    record = unreviewed_envelope(request, failure_code="Expired", reason="late")
    assert AUDITOR.observe(request, "unreviewed", record) is None
    assert AUDITOR.observe(None, "reviewed", record) is None


def test_samples_are_numbered_and_folded_in_order() -> None:
    tally = AuditTally()
    first = AUDITOR.sample(tally, Observation("audit", "cat", True))
    assert first == AuditSample(1, "1", "audit", "cat", True)
    tally = tally.fold(first)
    tally = tally.fold(AUDITOR.sample(tally, Observation("audit", "cat", False)))
    assert tally.seq == 2
    assert tally.counts("1") == {"audit": {"cat": (2, 1)}}
    with pytest.raises(ValueError, match="folded into a tally at 2"):
        tally.fold(first)  # a sample is folded once, in order
    assert AuditTally.decode(tally.encode()) == tally


def test_labels_past_the_cap_and_unfit_labels_are_other() -> None:
    tally = AuditTally()
    labels = ["a", "b", "c", "d", "a", "x" * (MAX_LABEL_CHARS + 1), ALL_LABELS, "tab\there"]
    for label in labels:
        tally = tally.fold(AUDITOR.sample(tally, Observation("audit", label, False)))
    assert set(tally.counts("1")["audit"]) == {"a", "b", "c", OTHER_LABEL}
    assert tally.counts("1")["audit"]["a"] == (2, 0)
    assert tally.counts("1")["audit"][OTHER_LABEL] == (4, 0)


def test_a_tally_keeps_a_few_versions() -> None:
    tally = AuditTally()
    for index in range(MAX_VERSIONS + 2):
        auditor = Auditor(AuditSettings(), f"v{index}")
        tally = tally.fold(auditor.sample(tally, Observation("audit", "cat", True)))
    assert sorted(tally.versions) == [f"v{i}" for i in range(2, MAX_VERSIONS + 2)]
    assert AuditTally.decode(tally.encode()) == tally


def test_recovery_folds_the_samples_above_the_tally() -> None:
    """A close that landed without its tally write is counted by the next owner, once."""
    tally = AuditTally()
    samples = []
    for index in range(5):
        sample = AUDITOR.sample(tally, Observation("audit", "cat", index % 2 == 0))
        samples.append(sample)
        tally = tally.fold(sample)
    written = AuditTally()
    for sample in samples[:3]:
        written = written.fold(sample)
    assert recover(written, [None, *reversed(samples)]) == tally  # 4 and 5 were not folded
    assert recover(tally, samples) == tally  # nothing twice
    # A tally write that lands late (an earlier owner's) sets seq back: folded again, once.
    assert recover(written, samples) == recover(recover(written, samples), samples)


def test_ledger_entries_carry_their_sample_and_old_records_decode() -> None:
    request = review_request("e1", review_probability=0.02)
    entry = pending(request, 1.0).moved(State.CLOSED, 2.0, outcome="reviewed")
    sample = AuditSample(7, "1", "general", "cat", True)
    counted = dataclasses.replace(entry, audit=sample)
    assert decode(encode(counted)).audit == sample
    assert decode(encode(entry)).audit is None
    old = orjson.loads(encode(entry))  # written before the field existed
    assert "audit" not in old
    assert decode(orjson.dumps(old)) == entry


def test_the_partition_ledger_reads_its_tally() -> None:
    ledger = PartitionLedger(0, 0)
    assert ledger.audit == AuditTally()  # an old ledger, without audit counts
    ledger.apply("_later", b"{}")  # partition state a later version adds: not an entry
    assert ledger.entries == {}
    tally = AuditTally().fold(AuditSample(1, "1", "general", "cat", False))
    ledger.apply(AUDIT_KEY, tally.encode())
    assert ledger.audit == tally
    with pytest.raises(CorruptLedger, match="audit counts"):
        ledger.apply(AUDIT_KEY, b'{"v": 1, "seq": 1, "versions": {"1": {"updated": 1, '
                                b'"routes": {"r": {"cat": [1, 2]}}}}}')  # fmt: skip
    with pytest.raises(CorruptLedger):
        decode(orjson.dumps({**orjson.loads(encode(pending(review_request(), 1.0))),
                             "audit": {"seq": 0}}))  # fmt: skip


def _tally(counts: dict[str, list[tuple[str, bool]]], version: str = "1") -> AuditTally:
    tally = AuditTally()
    auditor = Auditor(AuditSettings(), version)
    for route, seen in counts.items():
        for label, error in seen:
            tally = tally.fold(auditor.sample(tally, Observation(route, label, error)))
    return tally


def test_estimates_pool_partitions_per_route_and_label_with_a_total() -> None:
    one = _tally({"audit": [("cat", True)] * 15 + [("cat", False)] * 45 + [("dog", False)] * 70,
                  "gone": [("cat", True)]})  # fmt: skip
    two = _tally({"audit": [("cat", True)] * 15 + [("cat", False)] * 55})
    old = _tally({"audit": [("cat", True)] * 100}, version="0")  # another policies.version
    auditor = Auditor(AuditSettings(routes={"audit": {"target_error": 0.1}}), "1")
    found = {(e.route, e.label): e for e in estimates([one, two, old], auditor, ROUTES)}
    assert set(found) == {("audit", "cat"), ("audit", "dog"), ("audit", ALL_LABELS)}  # configured
    cat = found[("audit", "cat")]
    assert (cat.estimate.n, cat.estimate.k, cat.target) == (130, 30, 0.1)
    assert cat.estimate.lower < 30 / 130 < cat.estimate.upper
    total = found[("audit", ALL_LABELS)].estimate
    assert (total.n, total.k) == (200, 30)
    # Partitions far apart cannot share one rate: the sequence is empty, shown as the rate.
    apart = [_tally({"audit": [("cat", True)] * 30}), _tally({"audit": [("cat", False)] * 100})]
    cat = {(e.route, e.label): e for e in estimates(apart, auditor, ROUTES)}[("audit", "cat")]
    assert cat.estimate.lower == cat.estimate.upper == 30 / 130


def test_the_report_publishes_and_withdraws_series() -> None:
    registry = CollectorRegistry()
    metrics = ReviewMetrics(registry)
    auditor = Auditor(AuditSettings(delta=0.01, routes={"audit": {"target_error": 0.05}}), "1")
    report = AuditReport(metrics, auditor, ROUTES)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("stream_router_review_audit_log_evidence_threshold") == pytest.approx(
        math.log(100)
    )
    assert value("stream_router_review_audit_target_error_ratio", route="audit") == 0.05
    assert value("stream_router_review_audit_target_error_ratio", route="general") == 0.02
    report.publish([_tally({"audit": [("cat", True)] * 40 + [("cat", False)] * 60})])
    labels = {"route": "audit", "label": "cat"}
    assert value("stream_router_review_audit_reviews", **labels) == 100
    assert value("stream_router_review_audit_errors", **labels) == 40
    lower = value("stream_router_review_audit_error_ratio_lower_bound", **labels)
    upper = value("stream_router_review_audit_error_ratio_upper_bound", **labels)
    assert lower is not None
    assert upper is not None
    assert 0.05 < lower < 0.4 < upper
    evidence = value("stream_router_review_audit_log_evidence", **labels)
    assert evidence is not None
    assert evidence > math.log(100)  # the alert's condition
    report.publish([])  # the partition moved to another instance
    assert value("stream_router_review_audit_reviews", **labels) is None
    assert value("stream_router_review_audit_reviews", route="audit", label=ALL_LABELS) is None
