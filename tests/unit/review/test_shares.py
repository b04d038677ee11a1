"""Budgets per partition: shares that add up to the limits, restored from saved counters."""

from __future__ import annotations

from typing import Any

import pytest

from stream_router.review.budget import Budget, BudgetLimits
from stream_router.review.shares import NO_BUDGET, BudgetShares, budget_shares, remaining, share
from stream_router.settings import Settings

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("limit", "partitions"), [(10, 4), (3, 4), (4, 2), (1, 1), (0, 3)])
def test_shares_add_up_to_the_limit(limit: int, partitions: int) -> None:
    shares = [share(BudgetLimits(per_day=limit), p, partitions) for p in range(partitions)]
    assert sum(s.per_day or 0 for s in shares) == limit
    assert max(s.per_day or 0 for s in shares) - min(s.per_day or 0 for s in shares) <= 1
    assert all(s.per_hour is None for s in shares)  # no limit stays no limit


def test_a_restart_restores_the_spent_counts_from_a_snapshot() -> None:
    limits = {"general": BudgetLimits(per_hour=4, per_day=6)}
    first = BudgetShares(limits, BudgetLimits(), 2)
    one = first.budget(1)
    for _ in range(2):
        assert one.try_spend("general", NOW)
    assert not one.try_spend("general", NOW)  # partition 1's hourly share is 2
    zero = first.budget(0)
    assert zero.try_spend("general", NOW)
    saved = {0: zero.snapshot(), 1: one.snapshot()}  # what the ledger keeps per partition

    again = BudgetShares(limits, BudgetLimits(), 2)  # a new process, same ledger
    restored = {p: again.budget(p, saved[p]) for p in (0, 1)}
    assert restored[1].remaining("general", NOW) == {"hour": 0, "day": 1}
    assert remaining(restored.values(), "general", NOW) == {"hour": 1, "day": 3}
    assert not restored[1].try_spend("general", NOW)


def test_without_a_snapshot_a_partition_starts_fresh() -> None:
    shares = BudgetShares({"general": BudgetLimits(per_day=10)}, BudgetLimits(), 1)
    spent = shares.budget(0)
    for _ in range(3):
        spent.try_spend("general", NOW)
    assert shares.budget(0).remaining("general", NOW) == {"hour": None, "day": 10}
    assert shares.budget(0, None).remaining("general", NOW)["day"] == 10
    assert shares.budget(0, spent.snapshot()).remaining("general", NOW)["day"] == 7


def test_remaining_adds_up_budgets_and_no_limit_wins() -> None:
    limited = Budget({"general": BudgetLimits(per_hour=2, per_day=5)})
    hourly_only = Budget({"general": BudgetLimits(per_hour=3)})
    assert limited.try_spend("general", NOW)
    assert remaining([limited], "general", NOW) == {"hour": 1, "day": 4}
    assert remaining([limited, hourly_only], "general", NOW) == {"hour": 4, "day": None}
    assert remaining([], "general", NOW) == {"hour": 0, "day": 0}


def test_the_default_limits_are_shared_too() -> None:
    shares = BudgetShares({"rare": BudgetLimits(per_day=2)}, BudgetLimits(per_hour=8), 4)
    assert shares.budget(3).limits("other") == BudgetLimits(per_hour=2)
    assert shares.budget(3).limits("rare") == BudgetLimits(per_day=0)
    with pytest.raises(ValueError, match="partition 4 is outside 0-3"):
        shares.budget(4)
    with pytest.raises(ValueError, match="partition -1 is outside 0-3"):
        shares.budget(-1)


def test_the_review_roles_budgets_fail_closed() -> None:
    """Every configured route gets limits; a route the configuration lacks gets none at all."""
    route = {"review_flow": "fd", "policy": {"type": "sample", "percent": 1}}
    settings = Settings.model_validate(
        {
            "policies": {"routes": [{"name": "general", **route}, {"name": "audit", **route}]},
            "review": {"topic_partitions": 2, "budgets": {"general": {"per_day": 4}}},
        }
    )
    shares = budget_shares(settings)
    assert shares.default == NO_BUDGET
    budget = shares.budget(0)
    assert budget.limits("general") == BudgetLimits(per_day=2)
    assert budget.limits("audit") == BudgetLimits(per_day=500)  # half the default's 1000
    assert budget.limits("intruder") == BudgetLimits(per_hour=0, per_day=0)
    assert not budget.try_spend("intruder", NOW)
    assert budget.available_at_s("intruder", NOW) is None  # never: its fallback applies


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="partitions must be at least 1"):
        BudgetShares({}, BudgetLimits(), 0)


def test_a_corrupt_snapshot_is_an_error_not_fresh_budget() -> None:
    saved: dict[str, Any] = {"general": {"hour_start_s": 1, "hour_spent": 1}}
    shares = BudgetShares({"general": BudgetLimits(per_day=5)}, BudgetLimits(), 1)
    with pytest.raises(ValueError, match="general"):
        shares.budget(0, saved)
