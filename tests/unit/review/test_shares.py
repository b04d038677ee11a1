"""Budgets per partition: shares that add up to the limits, kept in a table across restarts."""

from __future__ import annotations

from typing import Any

import pytest

from stream_router.review.budget import BudgetLimits
from stream_router.review.shares import PartitionBudgets, share

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("limit", "partitions"), [(10, 4), (3, 4), (4, 2), (1, 1), (0, 3)])
def test_shares_add_up_to_the_limit(limit: int, partitions: int) -> None:
    shares = [share(BudgetLimits(per_day=limit), p, partitions) for p in range(partitions)]
    assert sum(s.per_day or 0 for s in shares) == limit
    assert max(s.per_day or 0 for s in shares) - min(s.per_day or 0 for s in shares) <= 1
    assert all(s.per_hour is None for s in shares)  # no limit stays no limit


def test_a_restart_restores_the_spent_counts_from_the_table() -> None:
    table: dict[str, Any] = {}
    limits = {"general": BudgetLimits(per_hour=4, per_day=6)}
    first = PartitionBudgets(limits, BudgetLimits(), 2, table)
    for _ in range(2):
        assert first.budget(1).try_spend("general", NOW)
    first.save(1)
    assert not first.budget(1).try_spend("general", NOW)  # partition 1's hourly share is 2
    assert first.budget(0).try_spend("general", NOW)
    first.save(0)

    again = PartitionBudgets(limits, BudgetLimits(), 2, table)  # a new process, same table
    assert again.budget(1).remaining("general", NOW) == {"hour": 0, "day": 1}
    assert again.remaining("general", NOW, [0, 1]) == {"hour": 1, "day": 3}
    assert not again.budget(1).try_spend("general", NOW)


def test_forget_rereads_what_another_owner_saved() -> None:
    table: dict[str, Any] = {}
    limits = {"general": BudgetLimits(per_day=10)}
    mine = PartitionBudgets(limits, BudgetLimits(), 1, table)
    assert mine.budget(0).remaining("general", NOW) == {"hour": None, "day": 10}
    other = PartitionBudgets(limits, BudgetLimits(), 1, table)  # owned it meanwhile
    for _ in range(3):
        other.budget(0).try_spend("general", NOW)
    other.save(0)
    assert mine.budget(0).remaining("general", NOW)["day"] == 10  # cached until a rebalance
    mine.forget()
    assert mine.budget(0).remaining("general", NOW)["day"] == 7


def test_the_default_limits_are_shared_too_and_low_limits_are_reported() -> None:
    budgets = PartitionBudgets({"rare": BudgetLimits(per_day=2)}, BudgetLimits(per_hour=8), 4, {})
    assert budgets.low_limits() == ["rare"]
    assert budgets.budget(3).limits("other") == BudgetLimits(per_hour=2)
    assert budgets.budget(3).limits("rare") == BudgetLimits(per_day=0)
    with pytest.raises(ValueError, match="partition 4 is outside 0-3"):
        budgets.budget(4)


def test_a_corrupt_saved_state_is_an_error_not_fresh_budget() -> None:
    table: dict[str, Any] = {"0": {"general": {"hour_start_s": 1, "hour_spent": 1}}}
    budgets = PartitionBudgets({"general": BudgetLimits(per_day=5)}, BudgetLimits(), 1, table)
    with pytest.raises(ValueError, match="general"):
        budgets.budget(0)
