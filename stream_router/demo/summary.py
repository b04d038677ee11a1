"""The demo's verdict and figures: outcome counts, review latency, corrections.

Pure functions over what the producer sent and what the tracker read, so the maths is tested
without a broker:

- every produced event must reach exactly one outcome (accepted, reviewed, unreviewed,
  dead-lettered), counted by event id: an event with none is *missing*, an event with two
  different outcomes is *conflicting*; a repeat of the same outcome (at-least-once delivery) is
  counted as a *duplicate* and is not a failure;
- review latency is from the moment the producer sent the event to the reviewed record's write
  time on the output topic; percentiles use the nearest-rank method;
- a *correction* is a reviewed label different from the model's; it is *right* when it equals
  the event's ground truth;
- the *audit bound*: audited reviews are the reviewed records whose review probability was
  below 1 (the audit route's sample of what the other routes let through, so a uniform sample
  of what the router auto-accepts). With k corrections among n of them, the error rate of what
  the router auto-accepts is estimated at k / n and is at most the exact one-sided
  Clopper-Pearson bound ``beta.ppf(1 - delta, k + 1, n - k)`` with confidence 1 - delta (95 %),
  the reviewers' answers taken as the truth (audited reviews that ended unreviewed are left
  out). Below 149 audited reviews the bound cannot reach 2 % at 95 % even with no correction;
  the summary says how many it needs. The bound needs scipy (the ``analysis`` extra, which
  ``scripts/demo`` installs); without it the counts are shown and the bound is not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from stream_router.demo.tracker import OUTCOMES, Reviewed


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Corrections:
    """How the reviewers' labels compare with the model's and with the ground truth."""

    reviewed: int
    corrected: int  #: reviewed label != model label
    corrected_right: int  #: ... and == ground truth
    model_wrong: int  #: model label != ground truth, among reviewed events
    reviewers_right: int  #: reviewed label == ground truth

    @property
    def corrected_pct(self) -> float | None:
        return _pct(self.corrected, self.reviewed)

    @property
    def corrected_right_pct(self) -> float | None:
        return _pct(self.corrected_right, self.corrected)


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def corrections(reviewed: Mapping[str, Reviewed]) -> Corrections:
    corrected = right = model_wrong = reviewers_right = 0
    for record in reviewed.values():
        changed = record.label is not None and record.label != record.model_label
        corrected += changed
        right += changed and record.label == record.truth
        model_wrong += record.truth is not None and record.model_label != record.truth
        reviewers_right += record.truth is not None and record.label == record.truth
    return Corrections(len(reviewed), corrected, right, model_wrong, reviewers_right)


#: The audit bound's confidence is 1 - AUDIT_DELTA; its target error rate is AUDIT_TARGET.
AUDIT_DELTA: Final = 0.05
AUDIT_TARGET: Final = 0.02


@dataclass(frozen=True)
class Audit:
    """What the audit bound needs of one reviewed record."""

    route: str | None
    probability: float | None  #: review_probability.total (None: a record without it)
    corrected: bool  #: review.corrected: the reviewers' label differs from the model's

    @property
    def audited(self) -> bool:
        """The review was a sample: the prediction could have been accepted unreviewed."""
        return self.probability is not None and self.probability < 1.0


def audit_of(envelope: Mapping[str, Any]) -> Audit | None:
    """The :class:`Audit` of a reviewed result envelope; None for any other record."""
    if envelope.get("decision") != "reviewed":
        return None
    review = envelope.get("review")
    probability = envelope.get("review_probability")
    total = probability.get("total") if isinstance(probability, dict) else None
    route = envelope.get("route")
    return Audit(
        route=route if isinstance(route, str) else None,
        probability=float(total) if isinstance(total, int | float) else None,
        corrected=isinstance(review, dict) and review.get("corrected") is True,
    )


@dataclass(frozen=True)
class AuditBound:
    """The error rate of what the router auto-accepts, from the audit sample (module doc)."""

    routes: list[str]  #: the routes the audited reviews came from
    audited: int  #: n
    corrected: int  #: k
    bound: float | None  #: upper bound at confidence 1 - delta; None without one
    needed: int | None  #: audited reviews a bound needs to reach ``target`` (no correction)
    delta: float = AUDIT_DELTA
    target: float = AUDIT_TARGET
    missing: str | None = None  #: why there is no bound although n > 0

    @property
    def estimate(self) -> float | None:
        return None if self.audited == 0 else self.corrected / self.audited


def audit_bound(
    audits: Iterable[Audit], *, delta: float = AUDIT_DELTA, target: float = AUDIT_TARGET
) -> AuditBound:
    """The audit bound over ``audits`` (the records that were not audited are left out)."""
    sampled = [audit for audit in audits if audit.audited]
    n = len(sampled)
    k = sum(audit.corrected for audit in sampled)
    routes = sorted({audit.route for audit in sampled if audit.route is not None})
    try:
        # numpy and scipy: the analysis extra, imported only where the bound is computed
        from stream_router.thresholds.bounds import (  # noqa: PLC0415
            clopper_pearson_upper,
            labels_needed_zero_errors,
        )
    except ImportError:
        missing = "scipy is not installed (pip install 'stream-router[analysis]')"
        return AuditBound(routes, n, k, None, None, delta, target, missing)
    bound = float(clopper_pearson_upper(k, n, delta)) if n else None
    needed = labels_needed_zero_errors(target, delta)
    return AuditBound(routes, n, k, bound, needed, delta, target)


@dataclass(frozen=True)
class Summary:
    """The demo's result; ``ok`` when every produced event has exactly one outcome."""

    produced: int
    counts: dict[str, int]  #: outcome -> events (first outcome of each produced event)
    missing: list[str]
    conflicting: list[str]
    duplicates: int
    unexpected: int  #: outcome records for ids the demo did not produce
    latency_s: dict[str, float | None]  #: p50, p90, p99, max of produce -> reviewed record
    corrections: Corrections
    dead_letter_reasons: dict[str, int]
    audit: AuditBound | None = None
    wall_s: float = 0.0
    where: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.produced > 0 and not self.missing and not self.conflicting

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["corrections"]["corrected_pct"] = self.corrections.corrected_pct
        data["corrections"]["corrected_right_pct"] = self.corrections.corrected_right_pct
        if self.audit is not None:
            data["audit"]["estimate"] = self.audit.estimate
        return data


def summarize(
    sent_s: Mapping[str, float],
    outcomes: Mapping[str, Sequence[str]],
    reviewed: Mapping[str, Reviewed],
    dead_letter_reasons: Mapping[str, int] | None = None,
    audits: Mapping[str, Audit] | None = None,
) -> Summary:
    """Judge the run from send times by event id and outcome records by event id; with
    ``audits`` (reviewed records by event id) also the audit bound."""
    counts = dict.fromkeys(OUTCOMES, 0)
    missing: list[str] = []
    conflicting: list[str] = []
    duplicates = 0
    for event_id in sent_s:
        decisions = outcomes.get(event_id, ())
        if not decisions:
            missing.append(event_id)
            continue
        if len(set(decisions)) > 1:
            conflicting.append(event_id)
        duplicates += len(decisions) - 1
        counts[decisions[0]] = counts.get(decisions[0], 0) + 1
    latencies = [
        record.written_s - sent_s[event_id]
        for event_id, record in reviewed.items()
        if event_id in sent_s
    ]
    mine = {event_id: record for event_id, record in reviewed.items() if event_id in sent_s}
    return Summary(
        produced=len(sent_s),
        counts=counts,
        missing=sorted(missing),
        conflicting=sorted(conflicting),
        duplicates=duplicates,
        unexpected=sum(1 for event_id in outcomes if event_id not in sent_s),
        latency_s={
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else None,
        },
        corrections=corrections(mine),
        dead_letter_reasons=dict(dead_letter_reasons or {}),
        audit=None
        if audits is None
        else audit_bound(audit for event_id, audit in audits.items() if event_id in sent_s),
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _share(part: int, whole: int) -> str:
    pct = _pct(part, whole)
    return f"{part}" if pct is None else f"{part} ({pct:.1f} %)"


def render(summary: Summary) -> str:
    """The summary table and the verdict, as printed at the end of the demo."""
    rows: list[tuple[str, str]] = [("events produced", str(summary.produced))]
    rows += [(f"  {name}", _share(n, summary.produced)) for name, n in summary.counts.items()]
    rows.append(("  no outcome", str(len(summary.missing))))
    if summary.dead_letter_reasons:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.dead_letter_reasons.items()))
        rows.append(("dead-letter reasons", reasons))
    rows.append(("duplicate records", str(summary.duplicates)))
    lat = summary.latency_s
    spread = "  ".join(f"{name} {_seconds(lat[name])}" for name in ("p50", "p90", "p99", "max"))
    rows.append(("review latency", spread))
    c = summary.corrections
    rows.append(("reviewers corrected the model", _share(c.corrected, c.reviewed)))
    rows.append(("  corrections matching ground truth", _share(c.corrected_right, c.corrected)))
    rows.append(("  model wrong among reviewed", _share(c.model_wrong, c.reviewed)))
    rows.append(("  reviewers right among reviewed", _share(c.reviewers_right, c.reviewed)))
    if summary.audit is not None:
        rows += audit_rows(summary.audit)
    if summary.wall_s:
        rows.append(("wall time", f"{summary.wall_s:.1f} s"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append(verdict(summary))
    return "\n".join(lines)


def _rate(value: float) -> str:
    return f"{100 * value:.3g} %"


def audit_rows(audit: AuditBound) -> list[tuple[str, str]]:
    """The audit bound's rows of the summary table."""
    routes = f" ({', '.join(audit.routes)})" if audit.routes else ""
    rows = [(f"audited reviews{routes}", f"{audit.audited}, corrected {audit.corrected}")]
    if audit.audited == 0:
        rows.append(("  error of auto-accepted", "no bound yet: no audited review"))
    elif audit.bound is None:
        estimate = _rate(audit.estimate or 0.0)
        rows.append(("  error of auto-accepted", f"estimate {estimate}; no bound: {audit.missing}"))
    else:
        confidence = f"{100 * (1 - audit.delta):g} %"
        rows.append(
            (
                "  error of auto-accepted",
                f"estimate {_rate(audit.estimate or 0.0)}, at most {_rate(audit.bound)} at "
                f"{confidence} confidence (Clopper-Pearson)",
            )
        )
    if audit.needed is not None and audit.audited < audit.needed:
        rows.append(
            (
                f"  a bound of {_rate(audit.target)} needs",
                f"{audit.needed} audited reviews with no correction (more with some)",
            )
        )
    return rows


def verdict(summary: Summary) -> str:
    if summary.produced == 0:
        return "FAILED: no event was produced; check the broker address and the producer settings"
    if summary.ok:
        return f"OK: all {summary.produced} events reached exactly one outcome"
    parts = []
    if summary.missing:
        parts.append(
            f"{len(summary.missing)} events have no outcome (first: "
            f"{', '.join(summary.missing[:5])}); raise --drain-timeout or read the router log"
        )
    if summary.conflicting:
        parts.append(
            f"{len(summary.conflicting)} events have two different outcomes (first: "
            f"{', '.join(summary.conflicting[:5])}); read the router log"
        )
    return "FAILED: " + "; ".join(parts)
