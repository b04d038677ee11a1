"""Certified auto-accept thresholds: Learn-then-Test with fixed-sequence testing.

The procedure, per predicted label (Angelopoulos, Bates, Candès, Jordan, Lei, "Learn then
Test", 2021):

1. Fix a grid of thresholds from label-free information (:mod:`.history`).
2. For every threshold t, bound the selective error R(t) = P(wrong | score >= t) from above at
   confidence 1 - delta, correcting the review bias with the logged propensities (:mod:`.table`).
3. Scan from the strictest threshold to the loosest and stop at the first whose bound exceeds
   alpha. The scan starts at the strictest threshold where a pass is possible judged by counts
   alone (the bound with no wrong answer is at most alpha, :data:`DEFAULT_START_FRACTION`); a
   start chosen without reading answers costs no delta.
4. Every threshold passed is certified: with probability at least 1 - delta, R(t) <= alpha for
   all of them at once (fixed-sequence testing needs no correction over the grid because the
   order was fixed before the answers were read). The loosest certified threshold reviews the
   least, so it is the recommendation; with none, review everything and collect the labels
   :class:`LabelShortfall` counts.

For K labels at once, :func:`certify_labels` spends delta / K on each so the guarantee holds for
all labels together.

Assumptions behind the guarantee: reviewers' answers are the truth; the review draw was
independent of whether the model was wrong (the logged propensity is the true probability);
history and future traffic are exchangeable (same model, same traffic, same routing).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stream_router.thresholds.bounds import labels_needed_for_power, labels_needed_zero_errors
from stream_router.thresholds.history import LabelHistory
from stream_router.thresholds.table import ThresholdTable, evaluate, plain

__all__ = [
    "DEFAULT_START_FRACTION",
    "Certification",
    "LabelShortfall",
    "Outcome",
    "certify",
    "certify_labels",
    "fixed_sequence",
    "scan",
]

#: The scan starts at the strictest threshold whose zero-error bound is at most this share of
#: alpha (falling back to alpha itself when none is). At 1.0 it starts where one wrong answer
#: already fails; lower starts deeper, with room for a few errors, which certified more on long
#: histories but less on short ones in the simulations (tests/bench/bench_thresholds.py), where
#: the deeper start can land past the point where the error reaches alpha.
DEFAULT_START_FRACTION: float = 1.0


class Outcome(enum.Enum):
    """How a label's certification ended."""

    CERTIFIED = "certified"
    #: Every region holds events nothing could have sent to review (propensity 0, no answer).
    UNKNOWABLE = "unknowable"
    #: No threshold has enough labels for a pass, even with no wrong answer.
    TOO_FEW_LABELS = "too_few_labels"
    #: The scan's first threshold failed its test.
    FIRST_TEST_FAILED = "first_test_failed"


@dataclass(frozen=True)
class LabelShortfall:
    """How many labels the region ``score >= reference_threshold`` would need to pass.

    ``needed_zero_errors``: the fewest labels that can pass (all answers right);
    ``needed_for_power``: labels for an 80 % chance of passing if the true error there were
    ``planning_error``. Counts are for labels from a uniform audit of that region at this
    label's delta; ``labelled`` is what it holds now.
    """

    reference_threshold: float
    labelled: int
    needed_zero_errors: int
    needed_for_power: int
    planning_error: float

    @property
    def more_zero_errors(self) -> int:
        return max(0, self.needed_zero_errors - self.labelled)

    @property
    def more_for_power(self) -> int:
        return max(0, self.needed_for_power - self.labelled)


@dataclass(frozen=True, eq=False)
class Certification:
    """One label's result.

    - ``alpha``, ``delta``: the target and the delta spent on this label.
    - ``table``: per-threshold statistics (:class:`~.table.ThresholdTable`).
    - ``certified``: per threshold, passed by the scan.
    - ``start_index``: where the scan started (None: no threshold could pass).
    - ``stop_index``: the threshold that failed and stopped the scan (None: none failed).
    - ``index``: the recommended threshold, the loosest certified (None: review everything).
    - ``outcome``, ``reason``: how it ended, in a sentence naming the numbers.
    - ``shortfall``: when nothing is certified, the labels it would take.
    """

    alpha: float
    delta: float
    table: ThresholdTable
    certified: NDArray[np.bool_]
    start_index: int | None
    stop_index: int | None
    index: int | None
    outcome: Outcome
    reason: str
    shortfall: LabelShortfall | None

    @property
    def threshold(self) -> float | None:
        """The recommended threshold, or None (review every prediction of this label)."""
        return None if self.index is None else float(self.table.thresholds[self.index])

    @property
    def accept_rate(self) -> float:
        """Share of the label's events the recommendation auto-accepts (0.0 without one)."""
        return 0.0 if self.index is None else float(self.table.accept_rate[self.index])

    def summary(self) -> dict[str, Any]:
        """The result in plain Python values (for JSON): no per-threshold arrays."""
        table, index = self.table, self.index

        def at(values: NDArray[Any], position: int | None) -> Any:
            return None if position is None else plain(values[position].item())

        shortfall = self.shortfall
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "alpha": self.alpha,
            "delta": self.delta,
            "threshold": self.threshold,
            "accept_rate": self.accept_rate,
            "error_bound": at(table.error_bound, index),
            "error_estimate": at(table.error_estimate, index),
            "joint_error_bound": at(table.joint_error_bound, index),
            "joint_error_estimate": at(table.joint_error_estimate, index),
            "labelled": at(table.labelled, index),
            "unanswered": at(table.unanswered, index),
            "start_threshold": at(table.thresholds, self.start_index),
            "stop_threshold": at(table.thresholds, self.stop_index),
            "strata": list(table.strata),
            "shortfall": None
            if shortfall is None
            else {
                "reference_threshold": shortfall.reference_threshold,
                "labelled": shortfall.labelled,
                "needed_zero_errors": shortfall.needed_zero_errors,
                "needed_for_power": shortfall.needed_for_power,
                "planning_error": shortfall.planning_error,
                "more_zero_errors": shortfall.more_zero_errors,
                "more_for_power": shortfall.more_for_power,
            },
        }


def fixed_sequence(
    bounds: NDArray[np.float64], alpha: float, start: int
) -> tuple[NDArray[np.bool_], int | None]:
    """Test ``bounds[start], bounds[start - 1], ...`` against alpha, stopping at the first failure.

    Returns the certified mask and the index that failed (None when every tested one passed).
    """
    certified = np.zeros(bounds.shape, dtype=np.bool_)
    order = np.arange(start, -1, -1)
    failures = np.flatnonzero(bounds[order] > alpha)
    passed = order if failures.size == 0 else order[: failures[0]]
    certified[passed] = True
    return certified, None if failures.size == 0 else int(order[failures[0]])


def certify(
    history: LabelHistory,
    grid: ArrayLike,
    *,
    alpha: float,
    delta: float,
    start_fraction: float = DEFAULT_START_FRACTION,
    planning_error: float | None = None,
) -> Certification:
    """Certify one label's auto-accept threshold: the loosest t with R(t) <= alpha, w.p. 1-delta.

    ``grid`` must have been fixed without looking at answers (:func:`~.history.uniform_grid`,
    :func:`~.history.quantile_grid`). ``start_fraction``: the scan starts at the strictest
    threshold whose zero-error bound is at most ``start_fraction * alpha`` (else at most alpha).
    ``planning_error`` (default alpha / 2) is the true error assumed for the shortfall's power
    count.

    Guarantee: with probability at least 1 - delta over the history, every certified threshold
    has a selective error of at most alpha on future traffic, under the module's assumptions.
    No guarantee is claimed for thresholds outside the grid.
    """
    table = evaluate(history, grid, delta)
    return scan(table, alpha, start_fraction=start_fraction, planning_error=planning_error)


def certify_labels(
    histories: Mapping[str, LabelHistory],
    grid: ArrayLike | Mapping[str, ArrayLike],
    *,
    alpha: float | Mapping[str, float],
    delta: float,
    simultaneous: bool = True,
    start_fraction: float = DEFAULT_START_FRACTION,
    planning_error: float | None = None,
) -> dict[str, Certification]:
    """Certify every label; ``simultaneous`` spends delta / K on each of the K labels.

    Simultaneous: with probability at least 1 - delta, every label's certified thresholds meet
    that label's alpha at once (union bound). Otherwise each label on its own has 1 - delta.
    ``grid`` and ``alpha`` may be one value for all or a mapping per label.
    """
    if not histories:
        raise ValueError("no label to certify")
    per_label = delta / len(histories) if simultaneous else delta
    results = {}
    for label, history in histories.items():
        label_grid = grid[label] if isinstance(grid, Mapping) else grid
        label_alpha = alpha[label] if isinstance(alpha, Mapping) else alpha
        results[label] = certify(
            history,
            label_grid,
            alpha=label_alpha,
            delta=per_label,
            start_fraction=start_fraction,
            planning_error=planning_error,
        )
    return results


def scan(
    table: ThresholdTable,
    alpha: float,
    *,
    start_fraction: float = DEFAULT_START_FRACTION,
    planning_error: float | None = None,
) -> Certification:
    """The fixed-sequence scan over an evaluated table (:func:`certify` without the evaluation)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not 0.0 < start_fraction <= 1.0:
        raise ValueError(f"start_fraction must lie in (0, 1], got {start_fraction}")
    plan = alpha / 2 if planning_error is None else planning_error
    possible = np.flatnonzero(table.zero_error_bound <= start_fraction * alpha)
    if possible.size == 0:
        possible = np.flatnonzero(table.zero_error_bound <= alpha)
    if possible.size == 0:
        return _refused(table, alpha, plan)
    start = int(possible[-1])
    certified, stop = fixed_sequence(table.error_bound, alpha, start)
    thresholds = table.thresholds
    if not certified.any():
        reason = (
            f"the first threshold tested, {thresholds[start]:.6g}, failed: bound "
            f"{table.error_bound[start]:.4f} > alpha {alpha:g} ({table.errors[start]} wrong of "
            f"{table.labelled[start]} answered, {table.unanswered[start]} unanswered counted as "
            "wrong)"
        )
        return Certification(
            alpha=alpha,
            delta=table.delta,
            table=table,
            certified=certified,
            start_index=start,
            stop_index=stop,
            index=None,
            outcome=Outcome.FIRST_TEST_FAILED,
            reason=reason,
            shortfall=_shortfall(table, alpha, plan, start),
        )
    index = int(np.flatnonzero(certified)[0])
    ended = (
        "passed every threshold down to the grid's loosest"
        if stop is None
        else f"stopped at {thresholds[stop]:.6g} (bound {table.error_bound[stop]:.4f} > alpha)"
    )
    reason = (
        f"certified {thresholds[index]:.6g} (auto-accepts {table.accept_rate[index]:.1%}, bound "
        f"{table.error_bound[index]:.4f} <= alpha {alpha:g}); the scan started at "
        f"{thresholds[start]:.6g} and {ended}"
    )
    return Certification(
        alpha=alpha,
        delta=table.delta,
        table=table,
        certified=certified,
        start_index=start,
        stop_index=stop,
        index=index,
        outcome=Outcome.CERTIFIED,
        reason=reason,
        shortfall=None,
    )


def _refused(table: ThresholdTable, alpha: float, plan: float) -> Certification:
    """No threshold can start the scan: say why, and what it would take."""
    thresholds = table.thresholds
    blocked = table.unknowable > 0
    if blocked.all():
        reference = len(table) - 1
        outcome = Outcome.UNKNOWABLE
        reason = (
            f"every threshold's region holds events with review probability 0 and no answer "
            f"({table.unknowable[reference]} at or above {thresholds[reference]:.6g}): their "
            "error is unknowable; audit-sample the predictions above the review threshold "
            "(a sample route) to certify one"
        )
    else:
        candidates = np.flatnonzero(~blocked)
        reference = int(candidates[np.argmin(table.zero_error_bound[candidates])])
        outcome = Outcome.TOO_FEW_LABELS
        reason = (
            f"too few labels: even with no wrong answer no bound reaches alpha "
            f"{alpha:g}; the lowest, {table.zero_error_bound[reference]:.4f} at "
            f"{thresholds[reference]:.6g}, has {table.labelled[reference]} answered"
            + (
                f" and {table.unanswered[reference]} unanswered (counted as wrong)"
                if table.unanswered[reference]
                else ""
            )
        )
    return Certification(
        alpha=alpha,
        delta=table.delta,
        table=table,
        certified=np.zeros(len(table), dtype=np.bool_),
        start_index=None,
        stop_index=None,
        index=None,
        outcome=outcome,
        reason=reason,
        shortfall=_shortfall(table, alpha, plan, reference),
    )


def _shortfall(table: ThresholdTable, alpha: float, plan: float, index: int) -> LabelShortfall:
    return LabelShortfall(
        reference_threshold=float(table.thresholds[index]),
        labelled=int(table.labelled[index]),
        needed_zero_errors=labels_needed_zero_errors(alpha, table.delta),
        needed_for_power=labels_needed_for_power(plan, alpha, table.delta),
        planning_error=plan,
    )
