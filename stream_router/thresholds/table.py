"""Per-threshold statistics of one label's history: counts, estimates and bounds.

For every grid threshold t the auto-accepted region is ``score >= t``. Events in it are split
into strata by the propensity logged at decision time:

- *reviewed*: ``propensity == 1`` (every one was sent to review; an answered ``propensity == 0``
  event joins it, as its answer is known);
- *audit* strata: one per distinct propensity in (0, 1), each a uniform random sample of its
  events (more than :data:`MAX_AUDIT_STRATA` distinct values are merged into geometric bins,
  each bound with its smallest propensity, which only over-states the error);
- *unknowable*: ``propensity == 0`` and no answer. Nothing could have sent these to review, so
  nothing is known about their errors: a region holding one cannot be bounded (bound 1.0).

Errors counted per stratum are the answered-wrong events plus the events sent to review that
were never answered (counted as possible errors). The bound on the selective error
``R(t) = P(wrong | score >= t)`` is :func:`~stream_router.thresholds.bounds.stratified_upper_bound`
with ``trials`` = the events in the region; the bound on the joint error
``P(score >= t and wrong)`` is the same with ``trials`` = all events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stream_router.thresholds.bounds import split_delta, stratified_upper_bound
from stream_router.thresholds.history import LabelHistory

__all__ = ["MAX_AUDIT_STRATA", "ThresholdTable", "evaluate", "plug_in_threshold"]

#: Most audit strata bounded separately; more distinct propensities are binned.
MAX_AUDIT_STRATA: int = 6

#: Ratio between the edges of the geometric bins used beyond MAX_AUDIT_STRATA.
_BIN_RATIO: float = 2.0**0.5


@dataclass(frozen=True, eq=False)
class ThresholdTable:
    """Statistics of one label for every grid threshold (arrays aligned with ``thresholds``).

    - ``thresholds``: the grid, ascending (the last is the strictest).
    - ``events_total``: events of the label (every score, reviewed or not).
    - ``events``, ``accept_rate``: events with ``score >= t`` and their share of the total.
    - ``labelled``: of those, events with an answer; ``errors``: answered and wrong (unweighted).
    - ``unanswered``: events at or above t sent to review without an answer; the bounds count
      them as errors.
    - ``unknowable``: events at or above t with propensity 0 and no answer (bound 1.0 there).
    - ``error_estimate``: Horvitz-Thompson estimate of the selective error
      ``sum(wrong / propensity) / events`` (NaN with no event or an unknowable one).
    - ``joint_error_estimate``: the same numerator over ``events_total``.
    - ``error_bound``: upper confidence bound at ``delta`` on the selective error of future
      traffic (the same distribution as the history), 1.0 where it cannot be bounded.
    - ``joint_error_bound``: the same for the joint error ``P(score >= t and wrong)``.
    - ``zero_error_bound``: what ``error_bound`` would be with no wrong answer (label-free: uses
      counts only, so the scan may start from it without spending delta).
    - ``strata``: the propensity each stratum's bound uses (1.0 first, then audits, descending).
    """

    thresholds: NDArray[np.float64]
    delta: float
    events_total: int
    events: NDArray[np.int64]
    accept_rate: NDArray[np.float64]
    labelled: NDArray[np.int64]
    errors: NDArray[np.int64]
    unanswered: NDArray[np.int64]
    unknowable: NDArray[np.int64]
    error_estimate: NDArray[np.float64]
    joint_error_estimate: NDArray[np.float64]
    error_bound: NDArray[np.float64]
    joint_error_bound: NDArray[np.float64]
    zero_error_bound: NDArray[np.float64]
    strata: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.thresholds.shape[0])

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per threshold (Python numbers, NaN as None), for JSON and CSV."""
        columns = {
            "threshold": self.thresholds,
            "events": self.events,
            "accept_rate": self.accept_rate,
            "labelled": self.labelled,
            "errors": self.errors,
            "unanswered": self.unanswered,
            "unknowable": self.unknowable,
            "error_estimate": self.error_estimate,
            "joint_error_estimate": self.joint_error_estimate,
            "error_bound": self.error_bound,
            "joint_error_bound": self.joint_error_bound,
            "zero_error_bound": self.zero_error_bound,
        }
        listed = {name: values.tolist() for name, values in columns.items()}
        return [
            {name: plain(values[i]) for name, values in listed.items()} for i in range(len(self))
        ]


def evaluate(history: LabelHistory, grid: ArrayLike, delta: float) -> ThresholdTable:
    """Counts, Horvitz-Thompson estimates and bounds at ``delta`` for every threshold of ``grid``.

    Guarantee of ``error_bound`` at each single threshold t (``P(R(t) > bound) <= delta``),
    under these assumptions: reviewers' answers are the truth; whether an event was reviewed
    depended only on its logged propensity (a draw independent of whether the model was wrong);
    history and future traffic are exchangeable (independent draws from one distribution:
    same model, same traffic mix, same routing of propensities). The bound covers both the
    sampling of labels and the finite history (it bounds the error of the population the
    history came from, not only of the events seen). See
    :func:`~stream_router.thresholds.bounds.stratified_upper_bound` for the construction.
    """
    thresholds = _checked_grid(grid)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    size = thresholds.shape[0]
    # Column c + 1 holds events with thresholds[c] <= score < thresholds[c + 1]; column 0 those
    # below the grid. The region of threshold c is every column from c + 1 on.
    column = _columns(thresholds, history.scores)

    stratum, propensities = _strata(history)
    strata_count = propensities.shape[0]
    cell = stratum * (size + 1) + column
    cells = (strata_count + 1) * (size + 1)  # the last stratum row holds the unknowable

    def per_stratum(weights: NDArray[Any] | None) -> NDArray[np.float64]:
        counts = np.bincount(cell, weights=weights, minlength=cells).reshape(-1, size + 1)
        at_or_above = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
        return np.asarray(at_or_above[:, 1:], dtype=np.float64)

    labelled = history.labelled
    answered_wrong = labelled & history.wrong
    unanswered_mask = history.unanswered
    events_h = per_stratum(None)
    labelled_h = per_stratum(labelled.astype(np.float64))
    wrong_h = per_stratum(answered_wrong.astype(np.float64))
    unanswered_h = per_stratum(unanswered_mask.astype(np.float64))
    inverse = np.where(history.propensity > 0.0, 1.0 / np.maximum(history.propensity, 1e-300), 1.0)
    weighted = per_stratum(np.where(answered_wrong, inverse, 0.0)).sum(axis=0)

    known = slice(0, strata_count)
    unknowable = events_h[strata_count]
    events = events_h.sum(axis=0)
    total = len(history)
    observed = wrong_h[known] + unanswered_h[known]
    deltas = split_delta(events_h[known], propensities, delta)
    blocked = (unknowable > 0) | (events == 0)

    # One call for the three bounds: selective, label-free (no wrong answer), joint.
    bounds = stratified_upper_bound(
        np.stack([observed, unanswered_h[known], observed]),
        np.stack([events, events, np.full(size, float(total))]),
        propensities,
        deltas,
    )
    bounds[:, blocked] = 1.0
    error_bound, zero_error_bound, joint_error_bound = (np.array(row) for row in bounds)

    with np.errstate(invalid="ignore", divide="ignore"):
        error_estimate = np.where(blocked, np.nan, weighted / events)
        joint_error_estimate = np.where(unknowable > 0, np.nan, weighted / max(total, 1))
        accept_rate = events / total if total else np.zeros(size)

    return ThresholdTable(
        thresholds=thresholds,
        delta=delta,
        events_total=total,
        events=events.astype(np.int64),
        accept_rate=np.asarray(accept_rate, dtype=np.float64),
        labelled=labelled_h.sum(axis=0).astype(np.int64),
        errors=wrong_h.sum(axis=0).astype(np.int64),
        unanswered=unanswered_h.sum(axis=0).astype(np.int64),
        unknowable=unknowable.astype(np.int64),
        error_estimate=np.asarray(error_estimate, dtype=np.float64),
        joint_error_estimate=np.asarray(joint_error_estimate, dtype=np.float64),
        error_bound=error_bound,
        joint_error_bound=joint_error_bound,
        zero_error_bound=zero_error_bound,
        strata=tuple(float(p) for p in propensities),
    )


def plug_in_threshold(table: ThresholdTable, alpha: float) -> int | None:
    """Index of the naive choice: the loosest threshold whose point estimate is at most alpha.

    For comparison only: it ignores the estimate's noise, so on the thresholds that matter (true
    error near alpha) it misses the target about half the time.
    """
    meets = np.flatnonzero(table.error_estimate <= alpha)  # NaN compares False
    return int(meets[0]) if meets.size else None


def _strata(history: LabelHistory) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Stratum index of every event and each stratum's propensity for the bound.

    Stratum 0 is the reviewed one (propensity 1); then the audit strata, highest propensity
    first; index ``len(propensities)`` marks the unknowable events.
    """
    propensity = history.propensity
    reviewed = (propensity >= 1.0) | ((propensity <= 0.0) & history.labelled)
    unknowable = (propensity <= 0.0) & ~history.labelled
    audit = ~reviewed & ~unknowable
    values = np.unique(propensity[audit])[::-1]
    if values.size > MAX_AUDIT_STRATA:
        # Geometric bins up from the smallest value; each bin is bounded with its smallest
        # member, which can only over-state the error of the others.
        def bin_of(p: NDArray[np.float64]) -> NDArray[np.int64]:
            steps = np.log(p / values[-1]) / np.log(_BIN_RATIO)
            return np.asarray(np.floor(steps + 1e-9), dtype=np.int64)

        value_bins = bin_of(values)
        keys = np.unique(value_bins)[::-1]  # highest propensities first, like ``values``
        bound_values = np.array([values[value_bins == key].min() for key in keys])
        lookup = np.zeros(int(keys[0]) + 1, dtype=np.int64)
        lookup[keys] = np.arange(keys.size)
        audit_index = lookup[bin_of(np.where(audit, propensity, values[-1]))]
    else:
        bound_values = values
        audit_index = np.zeros(propensity.shape, dtype=np.int64)
        for position, value in enumerate(values[1:], start=1):
            audit_index[propensity == value] = position
    propensities = np.concatenate(([1.0], bound_values)).astype(np.float64)
    stratum = np.where(reviewed, 0, np.where(unknowable, propensities.size, 1 + audit_index))
    return stratum.astype(np.int64), propensities


def _columns(thresholds: NDArray[np.float64], scores: NDArray[np.float64]) -> NDArray[np.int64]:
    """``searchsorted(thresholds, scores, side="right")``, faster on sorted keys."""
    order = np.argsort(scores)
    columns = np.empty(scores.shape, dtype=np.int64)
    columns[order] = np.searchsorted(thresholds, scores[order], side="right")
    return columns


def _checked_grid(grid: ArrayLike) -> NDArray[np.float64]:
    thresholds = np.asarray(grid, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise ValueError("grid must be a non-empty one-dimensional array of thresholds")
    if not np.all(np.isfinite(thresholds)) or np.any(np.diff(thresholds) <= 0):
        raise ValueError("grid must be finite and strictly increasing")
    return thresholds


def plain(value: Any) -> Any:
    """A Python number as is, NaN as None (JSON has no NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value
