"""What each threshold costs: reviews and spend, and Chow's expected-cost optimum.

Both read an evaluated :class:`~.table.ThresholdTable` and scale to the history's volume (the
number of events it holds); budgets and other periods are the caller's arithmetic.

Chow's rule (Chow 1970) auto-accepts a prediction when its chance of being right is at least
``1 - review_cost / error_cost``; over a threshold grid that is the threshold of least expected
cost. It is an estimate with no guarantee: use it to draw the cost curve and Learn-then-Test
(:mod:`.certify`) to certify.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stream_router.thresholds.table import ThresholdTable

__all__ = ["ChowChoice", "ReviewSpend", "chow_threshold", "review_spend"]


@dataclass(frozen=True, eq=False)
class ReviewSpend:
    """Reviews and spend per threshold over the history's volume.

    ``reviews`` = events below t + ``audit_rate`` x events at or above t (expected audit
    reviews); ``spend`` = ``reviews x review_cost`` (in the unit of ``review_cost``).
    """

    thresholds: NDArray[np.float64]
    reviews: NDArray[np.float64]
    spend: NDArray[np.float64]
    review_cost: float
    audit_rate: float


@dataclass(frozen=True, eq=False)
class ChowChoice:
    """The expected-cost optimum over the grid (no guarantee).

    ``expected_errors``: estimated wrong predictions reaching consumers (auto-accepted and not
    audited); ``expected_cost`` = review spend + ``error_cost`` x ``expected_errors``, NaN where
    the error is unknowable; ``index``: the cheapest threshold (the loosest among ties), None
    when no cost is known.
    """

    spend: ReviewSpend
    expected_errors: NDArray[np.float64]
    expected_cost: NDArray[np.float64]
    error_cost: float
    index: int | None

    @property
    def threshold(self) -> float | None:
        return None if self.index is None else float(self.spend.thresholds[self.index])


def review_spend(table: ThresholdTable, *, review_cost: float, audit_rate: float) -> ReviewSpend:
    """Reviews and spend per threshold if the routes reviewed below t and audited above it."""
    if review_cost < 0:
        raise ValueError(f"review_cost must be at least 0, got {review_cost}")
    if not 0.0 <= audit_rate <= 1.0:
        raise ValueError(f"audit_rate must lie in [0, 1], got {audit_rate}")
    events = table.events.astype(np.float64)
    reviews = (table.events_total - events) + audit_rate * events
    return ReviewSpend(
        thresholds=table.thresholds,
        reviews=reviews,
        spend=reviews * review_cost,
        review_cost=review_cost,
        audit_rate=audit_rate,
    )


def chow_threshold(
    table: ThresholdTable, *, review_cost: float, error_cost: float, audit_rate: float = 0.0
) -> ChowChoice:
    """Chow's rule on the cost curve: the threshold of least estimated expected cost.

    Errors are the Horvitz-Thompson estimate of the joint error times the history's events;
    audited predictions are reviewed (and corrected), so only ``1 - audit_rate`` of the errors
    above t reach consumers.
    """
    if error_cost <= 0:
        raise ValueError(f"error_cost must be above 0, got {error_cost}")
    spend = review_spend(table, review_cost=review_cost, audit_rate=audit_rate)
    errors = (1.0 - audit_rate) * table.joint_error_estimate * table.events_total
    cost = spend.spend + error_cost * errors
    known = np.flatnonzero(~np.isnan(cost))
    index = int(known[np.argmin(cost[known])]) if known.size else None
    return ChowChoice(
        spend=spend,
        expected_errors=errors,
        expected_cost=cost,
        error_cost=error_cost,
        index=index,
    )
