"""``stream-router policies backtest``: per-label thresholds certified on history, and priced.

From a :class:`~stream_router.backtest.history.History`, per predicted label: a grid of
thresholds fixed from the confidences alone (before any answer is read), the statistics of
every threshold (``stream_router/thresholds``: auto-accept rate, the propensity-weighted error
estimate, an exact upper bound corrected for selection, labelled count), Learn-then-Test's
recommendation (the loosest certified threshold, or none with the reason and the audit labels
it would take), the naive plug-in and, with an error cost, Chow's expected-cost optimum. Every
threshold is priced: reviews = predictions below it + the audit share above it.

Outputs: :func:`render` (the terminal table), :func:`report` (the ``--report`` JSON, schema
``stream_router/schemas/backtest-report-v1.schema.json``), :func:`csv_rows` (``--csv``),
:func:`plot` (``--plot``, matplotlib) and :func:`snippet` (a ``policies`` section with a
``confidence`` policy ``per_label`` that ``stream-router config check`` accepts).

Reviewers' answers count as truth: a label is only as good as its reviewers, and the report
gives their agreement per label beside the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from stream_router.backtest.history import History
from stream_router.backtest.replay import BacktestReport
from stream_router.thresholds.certify import Certification, certify_labels
from stream_router.thresholds.costs import ChowChoice, ReviewSpend, chow_threshold, review_spend
from stream_router.thresholds.history import LabelHistory, quantile_grid
from stream_router.thresholds.table import plug_in_threshold

REPORT_SCHEMA = "stream_router/schemas/backtest-report-v1.schema.json"


@dataclass(frozen=True)
class Options:
    target_error: float = 0.02
    delta: float = 0.05
    simultaneous: bool = False
    review_cost: float = 0.0  #: per review, in the currency of ``error_cost``
    error_cost: float | None = None  #: per auto-accepted error (enables Chow's rule)
    grid_points: int = 200


@dataclass(frozen=True, eq=False)
class LabelResult:
    label: str
    events: int
    certification: Certification
    spend: ReviewSpend
    chow: ChowChoice | None
    naive_index: int | None
    agreement: float | None  #: mean agreement of its reviews (None: none reviewed)
    audit_rate: float


@dataclass(frozen=True, eq=False)
class Backtest:
    options: Options
    history: History
    labels: list[LabelResult]
    audit_rate: float
    candidate: BacktestReport | None = None
    budgets_per_day: Mapping[str, float] = field(default_factory=dict)

    @property
    def span_days(self) -> float:
        return self.history.span_days


def run(history: History, options: Options, candidate: BacktestReport | None = None,
        budgets_per_day: Mapping[str, float] | None = None) -> Backtest:  # fmt: skip
    """Certify every label of ``history`` (see the module docstring)."""
    if not len(history):
        raise ValueError("the history holds no result envelope to learn from")
    codes = np.frombuffer(history.label, dtype=np.int32)
    scores = np.frombuffer(history.confidence, dtype=np.float64)
    propensity = np.frombuffer(history.propensity, dtype=np.float64)
    labelled = np.frombuffer(history.labelled, dtype=np.int8).astype(bool)
    wrong = np.frombuffer(history.wrong, dtype=np.int8).astype(bool)
    requested = np.frombuffer(history.decision, dtype=np.int8) != 0
    agreement = np.frombuffer(history.agreement, dtype=np.float64)
    audit_rate = _audit_rate(propensity)
    histories: dict[str, LabelHistory] = {}
    grids: dict[str, np.ndarray] = {}
    rows: dict[str, np.ndarray] = {}
    for code, name in enumerate(history.labels):
        mine = np.flatnonzero(codes == code)
        if not mine.size:
            continue
        rows[name] = mine
        histories[name] = LabelHistory(
            scores=scores[mine],
            labelled=labelled[mine],
            wrong=wrong[mine],
            propensity=propensity[mine],
            requested=requested[mine],
        )
        grids[name] = quantile_grid(scores[mine], options.grid_points)  # confidences only
    results = certify_labels(
        histories,
        grids,
        alpha=options.target_error,
        delta=options.delta,
        simultaneous=options.simultaneous,
    )
    labels = []
    for name, certification in sorted(results.items()):
        table = certification.table
        mine = rows[name]
        label_audit = _audit_rate(propensity[mine], default=audit_rate)
        reviewed = agreement[mine]
        reviewed = reviewed[~np.isnan(reviewed)]
        labels.append(
            LabelResult(
                label=name,
                events=int(mine.size),
                certification=certification,
                spend=review_spend(table, review_cost=options.review_cost, audit_rate=label_audit),
                chow=None
                if options.error_cost is None
                else chow_threshold(
                    table,
                    review_cost=options.review_cost,
                    error_cost=options.error_cost,
                    audit_rate=label_audit,
                ),
                naive_index=plug_in_threshold(table, options.target_error),
                agreement=float(reviewed.mean()) if reviewed.size else None,
                audit_rate=label_audit,
            )
        )
    return Backtest(options, history, labels, audit_rate, candidate, dict(budgets_per_day or {}))


def _audit_rate(propensity: np.ndarray, default: float = 0.0) -> float:
    """The audit share the history ran with: the most common review probability strictly
    between 0 and 1 (0 when there was no audit)."""
    sampled = propensity[(propensity > 0.0) & (propensity < 1.0)]
    if not sampled.size:
        return default
    values, counts = np.unique(sampled, return_counts=True)
    return float(values[np.argmax(counts)])


def _threshold(result: LabelResult) -> float | None:
    return result.certification.threshold


def _reviews_at(result: LabelResult) -> float:
    """Reviews over the history at the recommendation (all of the label's, without one)."""
    index = result.certification.index
    return float(result.events) if index is None else float(result.spend.reviews[index])


def _number(value: float | None, fmt: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, fmt)
    )


def render(backtest: Backtest) -> str:
    """The terminal table: one line per label, then the totals."""
    options, history = backtest.options, backtest.history
    days = backtest.span_days
    lines = [
        f"history: {len(history):,} events ({history.records:,} records read, "
        f"{history.duplicates:,} duplicates, {sum(history.skipped.values()):,} skipped), "
        f"{int(sum(history.labelled)):,} labelled by reviewers, over {days:.2f} days",
    ]
    if history.before_since:
        lines.append(f"left out: {history.before_since:,} records decided before --from")
    if history.skipped:
        lines.append(
            "skipped: " + ", ".join(f"{r} {c}" for r, c in sorted(history.skipped.items()))
        )
    if history.without_probability:
        lines.append(
            f"{history.without_probability:,} records have no review_probability (written before "
            "it existed): accepted ones count as never reviewable, reviewed ones as certain reviews"
        )
    mode = "jointly over all labels" if options.simultaneous else "per label"
    lines += [
        f"target: error of auto-accepted predictions <= {options.target_error:g} with probability "
        f">= {1 - options.delta:g} ({mode}); audit share in the history: {backtest.audit_rate:g}",
        "reviewers' answers count as truth; agreement = mean share of workers who gave the label",
        "",
        f"{'label':<16} {'events':>9} {'threshold':>9} {'accept':>7} {'error':>7} {'bound':>7} "
        f"{'labelled':>8} {'needed':>8} {'agree':>6} {'naive':>7} {'chow':>7}",
        "(needed: more audit labels for an 80 % chance to certify if the true error were half "
        "the target)",
    ]
    for result in backtest.labels:
        cert = result.certification
        index = cert.index
        table = cert.table
        at = index if index is not None else cert.start_index
        needed = _more_labels(result)
        lines.append(
            f"{result.label[:16]:<16} {result.events:>9,} {_number(_threshold(result), '.4f'):>9} "
            f"{cert.accept_rate:>7.1%} "
            f"{_number(None if at is None else float(table.error_estimate[at]), '.4f'):>7} "
            f"{_number(None if at is None else float(table.error_bound[at]), '.4f'):>7} "
            f"{_number(None if at is None else int(table.labelled[at]), ','):>8} "
            f"{_number(needed, ','):>8} {_number(result.agreement, '.2f'):>6} "
            f"{_number(_at(table.thresholds, result.naive_index), '.4f'):>7} "
            f"{_number(None if result.chow is None else result.chow.threshold, '.4f'):>7}"
        )
        if index is None:
            lines.append(f"{'':<16} no threshold: {cert.reason}")
            if needed is None and at is not None:
                lines.append(
                    f"{'':<16} its estimated error there is above the target: more labels are "
                    "unlikely to certify it; review it all, or improve the model"
                )
    reviews = sum(_reviews_at(r) for r in backtest.labels)
    actual = sum(1 for d in history.decision if d != 0)
    lines += [
        "",
        f"reviews over the history: {actual:,} as routed; {reviews:,.0f} with the recommended "
        f"thresholds (and the audit kept), {reviews / max(days, 1e-9):,.0f} a day",
    ]
    if options.review_cost:
        lines.append(
            f"review spend a day at {options.review_cost:g} a review: "
            f"{actual * options.review_cost / days:,.2f} as routed, "
            f"{reviews * options.review_cost / days:,.2f} recommended"
        )
    if backtest.candidate is not None:
        lines += ["", "the candidate configuration over this history:"]
        lines += [
            "  " + line for line in backtest.candidate.render(options.review_cost).splitlines()
        ]
        for route, budget in sorted(backtest.budgets_per_day.items()):
            per_day = backtest.candidate.by_route.get(route, 0) / days
            over = "  OVER BUDGET" if per_day > budget else ""
            lines.append(
                f"  route {route}: {per_day:,.0f} reviews a day, budget {budget:,.0f}{over}"
            )
    return "\n".join(lines)


def _more_labels(result: LabelResult) -> int | None:
    """More audit labels for an 80 % chance to certify (at half the target's true error), or
    None: certified, or its estimated error already above the target (labels will not help)."""
    cert = result.certification
    if cert.shortfall is None:
        return None
    at = cert.start_index
    estimate = None if at is None else float(cert.table.error_estimate[at])
    if estimate is not None and estimate > cert.alpha:
        return None
    return cert.shortfall.more_for_power


def _at(values: np.ndarray, index: int | None) -> float | None:
    return None if index is None else float(values[index])


def report(backtest: Backtest) -> dict[str, Any]:
    """The ``--report`` document (schema: :data:`REPORT_SCHEMA`)."""
    options, history = backtest.options, backtest.history
    labels = []
    for result in backtest.labels:
        cert = result.certification
        table = cert.table
        index = cert.index
        at = index if index is not None else cert.start_index
        shortfall = cert.shortfall
        labels.append(
            {
                "label": result.label,
                "events": result.events,
                "threshold": cert.threshold,
                "certified": index is not None,
                "outcome": cert.outcome.value,
                "reason": cert.reason,
                "auto_accept_rate": cert.accept_rate,
                "error_estimate": _finite(_at(table.error_estimate, at)),
                "error_upper_bound": _finite(_at(table.error_bound, at)),
                "joint_error_estimate": _finite(_at(table.joint_error_estimate, at)),
                "labelled": 0 if at is None else int(table.labelled[at]),
                "labels_needed": None
                if shortfall is None
                else {
                    "at_threshold": shortfall.reference_threshold,
                    "zero_errors": shortfall.more_zero_errors,
                    "power_80": shortfall.more_for_power,
                    "planning_error": shortfall.planning_error,
                },
                "agreement": result.agreement,
                "audit_rate": result.audit_rate,
                "reviews": _reviews_at(result),
                "naive_threshold": _at(table.thresholds, result.naive_index),
                "chow_threshold": None if result.chow is None else result.chow.threshold,
                "delta": cert.delta,
            }
        )
    return {
        "schema_version": 1,
        "target_error": options.target_error,
        "delta": options.delta,
        "simultaneous": options.simultaneous,
        "review_cost": options.review_cost,
        "error_cost": options.error_cost,
        "history": {
            "records": history.records,
            "events": len(history),
            "duplicates": history.duplicates,
            "skipped": dict(history.skipped),
            "without_review_probability": history.without_probability,
            "reviewed": sum(1 for d in history.decision if d == 1),
            "labelled": int(sum(history.labelled)),
            "span_days": backtest.span_days,
            "audit_rate": backtest.audit_rate,
        },
        "labels": labels,
        "snippet": snippet(backtest),
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def csv_rows(backtest: Backtest) -> list[dict[str, Any]]:
    """One row per label and threshold (``--csv``)."""
    out = []
    for result in backtest.labels:
        cert = result.certification
        reviews = result.spend.reviews.tolist()
        spend = result.spend.spend.tolist()
        for i, row in enumerate(cert.table.rows()):
            out.append(
                {
                    "label": result.label,
                    **row,
                    "certified": bool(cert.certified[i]),
                    "recommended": i == cert.index,
                    "reviews": reviews[i],
                    "spend": spend[i],
                }
            )
    return out


def snippet(backtest: Backtest, route: str = "certified", flow: str = "CHANGE-ME") -> str:
    """The recommendation as a ``policies`` section: a confidence route that reviews below each
    certified threshold, and everything of a label without one (and of labels the history never
    saw); keep an audit route after it, or the next backtest has nothing to certify with."""
    per_label = {
        r.label: {"below": _threshold(r)} for r in backtest.labels if _threshold(r) is not None
    }
    policy: dict[str, Any] = {"type": "confidence", "ranges": [{"min": 0.0, "max": 1.0}]}
    if per_label:
        policy["per_label"] = per_label
    routes: list[dict[str, Any]] = [{"name": route, "review_flow": flow, "policy": policy}]
    if backtest.audit_rate > 0:
        routes.append(
            {
                "name": "audit",
                "review_flow": flow,
                "policy": {"type": "sample", "percent": round(backtest.audit_rate * 100, 6)},
            }
        )
    return yaml.safe_dump({"policies": {"routes": routes}}, sort_keys=False)


def plot(backtest: Backtest, path: str) -> None:
    """Per label: review rate and the error bound (and estimate) against the threshold, the
    target, the recommendation marked; with an error cost, below it the expected-cost curve
    with Chow's optimum marked (``--plot FILE.png``)."""
    import matplotlib  # noqa: PLC0415  (the analysis extra; only this command needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    count = len(backtest.labels)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    costs = backtest.options.error_cost is not None
    per_label = 2 if costs else 1
    figure, axes = plt.subplots(
        rows * per_label, columns, figsize=(5 * columns, 3.6 * rows * per_label), squeeze=False
    )
    for ax in axes.flat:
        ax.set_visible(False)
    for i, result in enumerate(backtest.labels):
        row, column = (i // columns) * per_label, i % columns
        _plot_label(axes[row][column], result, backtest.options.target_error)
        if costs and result.chow is not None:
            _plot_costs(axes[row + 1][column], result)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_label(ax: Any, result: LabelResult, alpha: float) -> None:
    ax.set_visible(True)
    table = result.certification.table
    x = table.thresholds
    ax.plot(x, result.spend.reviews / max(result.events, 1), color="tab:blue", label="review rate")
    ax.set_ylim(0, 1)
    ax.set_xlabel("threshold (auto-accept when confidence >= it)")
    ax.set_ylabel("review rate", color="tab:blue")
    err = ax.twinx()
    err.plot(x, table.error_bound, color="tab:red", label="error upper bound")
    err.plot(x, table.error_estimate, color="tab:red", linestyle=":", label="error estimate")
    err.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"target {alpha:g}")
    estimates = table.error_estimate[np.isfinite(table.error_estimate)]
    highest = float(estimates.max()) if estimates.size else 0.0
    err.set_ylim(0, min(1.0, max(4 * alpha, 1.2 * highest, 0.01)))
    err.set_ylabel("error of auto-accepted", color="tab:red")
    threshold = _threshold(result)
    if threshold is not None:
        ax.axvline(threshold, color="tab:green", linewidth=2, label=f"certified {threshold:.4f}")
    ax.set_title(
        f"{result.label}: " + ("certified" if threshold is not None else "not certifiable")
    )
    handles, names = ax.get_legend_handles_labels()
    more_handles, more_names = err.get_legend_handles_labels()
    ax.legend(handles + more_handles, names + more_names, fontsize=7, loc="upper left")


def _plot_costs(ax: Any, result: LabelResult) -> None:
    """Expected cost (reviews + estimated auto-accepted errors, priced) per threshold."""
    chow = result.chow
    assert chow is not None
    ax.set_visible(True)
    x = result.certification.table.thresholds
    ax.plot(x, chow.expected_cost, color="tab:purple", label="expected cost")
    ax.plot(x, chow.spend.spend, color="tab:blue", linestyle=":", label="review spend")
    if chow.threshold is not None:
        ax.axvline(chow.threshold, color="tab:purple", linestyle="--",
                   label=f"Chow optimum {chow.threshold:.4f} (no guarantee)")  # fmt: skip
    threshold = _threshold(result)
    if threshold is not None:
        ax.axvline(threshold, color="tab:green", linewidth=2, label=f"certified {threshold:.4f}")
    ax.set_xlabel("threshold")
    ax.set_ylabel("cost over the history")
    ax.set_title(f"{result.label}: cost curve")
    ax.legend(fontsize=7, loc="upper left")
