"""Budgets kept per review-requests partition, so that restarts and several instances keep count.

The review role persists its spend counters in the ledger topic. Which key holds them decides
whether they stay right when several instances share the review-requests partitions:

- **one key per route** would be written by every instance that handles requests of the route
  (they arrive on every partition); the table's changelog would interleave their writes and the
  last writer would win, losing the others' counts. Wrong as soon as there are two instances.
- **one key per partition** (chosen) is written only by the instance that owns the partition,
  since review requests, loop events (escalations start reviews too) and the ledger are
  co-partitioned by the review's first name. Each partition spends its *share* of every route's
  limits: ``limit // partitions``, plus one for the first ``limit % partitions`` partitions, so
  the shares add up to exactly the configured limit whatever the number of instances, and they
  move with their partitions through a rebalance or a restart (the ledger topic keeps them).

The price of shares: requests of a route do not spread perfectly evenly over partitions, so a
partition can exhaust its share while another still has room; the route then spends a little
less than its limit in that window, never more. Give limits well above ``topic_partitions``; a
limit below it leaves some partitions a share of zero (their requests always get the fallback).

Counters are saved before each start is called (``review/scheduler.py``): a crash between the
save and the start over-counts that one review, never under-counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stream_router.review.budget import Budget, BudgetLimits


def share(limits: BudgetLimits, partition: int, partitions: int) -> BudgetLimits:
    """``partition``'s share of ``limits`` (the shares of all partitions sum to the limits)."""

    def part(limit: int | None) -> int | None:
        if limit is None:
            return None
        return limit // partitions + (1 if partition < limit % partitions else 0)

    return BudgetLimits(per_hour=part(limits.per_hour), per_day=part(limits.per_day))


class BudgetShares:
    """Every route's limits and each partition's share of them.

    :meth:`budget` makes a partition's :class:`Budget`, restored from the counters its ledger
    keeps (``review/ledger.py``: the partition's budget record); only the instance owning the
    partition uses it.
    """

    def __init__(
        self, limits: Mapping[str, BudgetLimits], default: BudgetLimits, partitions: int
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        self.limits = dict(limits)
        self.default = default
        self.partitions = partitions

    def low_limits(self) -> list[str]:
        """Routes whose limit is below the number of partitions (some shares are zero)."""
        low = []
        for route, limits in [*self.limits.items(), ("*", self.default)]:
            for limit in (limits.per_hour, limits.per_day):
                if limit is not None and 0 < limit < self.partitions:
                    low.append(route)
                    break
        return low

    def budget(self, partition: int, saved: Mapping[str, Any] | None = None) -> Budget:
        """The partition's budget, with the counters of a :meth:`Budget.snapshot` if given."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is outside 0-{self.partitions - 1}")
        budget = Budget(
            {
                route: share(limits, partition, self.partitions)
                for route, limits in self.limits.items()
            },
            default=share(self.default, partition, self.partitions),
        )
        if saved is not None:
            budget.restore(saved)
        return budget


def remaining(budgets: Iterable[Budget], route: str, now_s: float) -> dict[str, int | None]:
    """Reviews ``route`` may still start over ``budgets`` this hour and day (None: no limit)."""
    total: dict[str, int | None] = {"hour": 0, "day": 0}
    for budget in budgets:
        for window, left in budget.remaining(route, now_s).items():
            current = total[window]
            total[window] = None if left is None or current is None else current + left
    return total
