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
  the event's ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

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
        return data


def summarize(
    sent_s: Mapping[str, float],
    outcomes: Mapping[str, Sequence[str]],
    reviewed: Mapping[str, Reviewed],
    dead_letter_reasons: Mapping[str, int] | None = None,
) -> Summary:
    """Judge the run from send times by event id and outcome records by event id."""
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
    if summary.wall_s:
        rows.append(("wall time", f"{summary.wall_s:.1f} s"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append(verdict(summary))
    return "\n".join(lines)


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
