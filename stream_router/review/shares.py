"""Budgets kept per review-requests partition, so that restarts and several instances keep count.

The review role persists its spend counters in a changelog-backed table. Which key holds them
decides whether they stay right when several instances share the review-requests partitions:

- **one key per route** would be written by every instance that handles requests of the route
  (they arrive on every partition); the table's changelog would interleave their writes and the
  last writer would win, losing the others' counts. Wrong as soon as there are two instances.
- **one key per partition** (chosen) is written only by the instance that owns the partition,
  since review requests, loop events (escalations start reviews too) and the table are
  co-partitioned by the review's first name. Each partition spends its *share* of every route's
  limits: ``limit // partitions``, plus one for the first ``limit % partitions`` partitions, so
  the shares add up to exactly the configured limit whatever the number of instances, and they
  move with their partitions through a rebalance or a restart (the changelog restores them).

The price of shares: requests of a route do not spread perfectly evenly over partitions, so a
partition can exhaust its share while another still has room; the route then spends a little
less than its limit in that window, never more. Give limits well above ``topic_partitions``; a
limit below it leaves some partitions a share of zero (their requests always get the fallback).

Counters are saved after each start; a crash between a start and its save under-counts that one
review (its redelivery finds it started and spends nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from stream_router.review.budget import Budget, BudgetLimits


def share(limits: BudgetLimits, partition: int, partitions: int) -> BudgetLimits:
    """``partition``'s share of ``limits`` (the shares of all partitions sum to the limits)."""

    def part(limit: int | None) -> int | None:
        if limit is None:
            return None
        return limit // partitions + (1 if partition < limit % partitions else 0)

    return BudgetLimits(per_hour=part(limits.per_hour), per_day=part(limits.per_day))


class PartitionBudgets:
    """One :class:`Budget` per partition, restored from and saved to ``table``.

    ``table`` maps ``str(partition)`` to a :meth:`Budget.snapshot`; the review application
    passes its faust table, tests a dict. Only the instance owning a partition may use it.
    """

    def __init__(
        self,
        limits: Mapping[str, BudgetLimits],
        default: BudgetLimits,
        partitions: int,
        table: MutableMapping[str, Any],
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        self.limits = dict(limits)
        self.default = default
        self.partitions = partitions
        self.table = table
        self._budgets: dict[int, Budget] = {}

    def low_limits(self) -> list[str]:
        """Routes whose limit is below the number of partitions (some shares are zero)."""
        low = []
        for route, limits in [*self.limits.items(), ("*", self.default)]:
            for limit in (limits.per_hour, limits.per_day):
                if limit is not None and 0 < limit < self.partitions:
                    low.append(route)
                    break
        return low

    def budget(self, partition: int) -> Budget:
        """The partition's budget, restored from the table the first time it is used."""
        budget = self._budgets.get(partition)
        if budget is None:
            if not 0 <= partition < self.partitions:
                raise ValueError(f"partition {partition} is outside 0-{self.partitions - 1}")
            budget = Budget(
                {
                    route: share(limits, partition, self.partitions)
                    for route, limits in self.limits.items()
                },
                default=share(self.default, partition, self.partitions),
            )
            saved = self.table.get(str(partition))
            if saved is not None:
                budget.restore(saved)
            self._budgets[partition] = budget
        return budget

    def save(self, partition: int) -> None:
        """Write the partition's counters to the table (from an event of that partition)."""
        budget = self._budgets.get(partition)
        if budget is not None:
            self.table[str(partition)] = budget.snapshot()

    def forget(self) -> None:
        """Drop what is cached (after a rebalance: the table holds the newest counts)."""
        self._budgets.clear()

    def remaining(
        self, route: str, now_s: float, partitions: Iterable[int]
    ) -> dict[str, int | None]:
        """Reviews ``route`` may still start on ``partitions`` this hour and day (None: none)."""
        total: dict[str, int | None] = {"hour": 0, "day": 0}
        for partition in partitions:
            for window, left in self.budget(partition).remaining(route, now_s).items():
                current = total[window]
                total[window] = None if left is None or current is None else current + left
        return total
