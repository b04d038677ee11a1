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

**Resolving the limits fails closed** (:func:`budget_shares`, the one place the settings become
limits). Every configured route gets its own ``review.budgets`` entry, else the ``'*'`` entry,
which the settings always have: when the configuration gives none it is the default
(:data:`~stream_router.settings.DEFAULT_ROUTE_BUDGET`, 1,000 reviews a UTC day), which
``stream-router config check`` prints. Only ``unlimited: true`` means no limit. A route the
configuration does not have gets :data:`NO_BUDGET` (nothing): the scheduler refuses such
requests before they reach a budget, and if one ever did, it would spend nothing.
:func:`budget_notes` says what an operator should know at start: a route on the default, a route
without a limit, a limit below the partition count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from stream_router.review.budget import UNLIMITED, Budget, BudgetLimits
from stream_router.settings import DEFAULT_ROUTE_BUDGET, RouteBudget, Settings

logger = logging.getLogger(__name__)

NO_BUDGET = BudgetLimits(per_hour=0, per_day=0)  #: a route the configuration does not have


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


def limits_of(budget: RouteBudget) -> BudgetLimits:
    """A configured budget as limits (``unlimited: true`` is the only way to no limit)."""
    return UNLIMITED if budget.unlimited else BudgetLimits(budget.per_hour, budget.per_day)


def route_limits(settings: Settings) -> dict[str, BudgetLimits]:
    """Every configured route's limits: its own ``review.budgets`` entry, else ``'*'``."""
    budgets = settings.review.budgets
    fallback = budgets.get("*", DEFAULT_ROUTE_BUDGET)
    return {
        route.name: limits_of(budgets.get(route.name, fallback))
        for route in settings.policies.routes
    }


def budget_shares(settings: Settings) -> BudgetShares:
    """The review role's budgets (see the module docstring); logs :func:`budget_notes`."""
    for note in budget_notes(settings):
        logger.warning("%s", note)
    return BudgetShares(route_limits(settings), NO_BUDGET, settings.review.topic_partitions)


def budget_notes(settings: Settings) -> list[str]:
    """Warnings about the budgets of the routes that review (for start-up and config check)."""
    budgets, partitions = settings.review.budgets, settings.review.topic_partitions
    notes = []
    for route in settings.policies.routes:
        if route.shadow:
            continue
        key = route.name if route.name in budgets else "*"
        if key == "*" and budgets.get("*") == DEFAULT_ROUTE_BUDGET:
            notes.append(
                f"route {route.name} has no budget of its own: it may start "
                f"{DEFAULT_ROUTE_BUDGET.per_day} reviews a UTC day, the default of "
                f"review.budgets.'*'; set review.budgets.{route.name} to choose"
            )
        limits = limits_of(budgets.get(key, DEFAULT_ROUTE_BUDGET))
        if limits == UNLIMITED:
            notes.append(
                f"route {route.name} starts paid reviews without a limit "
                f"(review.budgets.{key}: unlimited: true)"
            )
        if any(limit is not None and 0 < limit < partitions
               for limit in (limits.per_hour, limits.per_day)):  # fmt: skip
            notes.append(
                f"the budget of route {route.name} is below review.topic_partitions "
                f"({partitions}): partitions whose share is zero always apply the fallback"
            )
    return notes
