"""Budgets: UTC-aligned fixed windows, per-route counters, refunds, snapshot and restore."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_router.review.budget import (
    DAY_S,
    HOUR_S,
    Budget,
    BudgetLimits,
    window_start,
)

# 2024-03-10 00:00:00 UTC: a day (and hour) boundary
MIDNIGHT = datetime(2024, 3, 10, tzinfo=UTC).timestamp()


def spend(budget: Budget, route: str, now_s: float, times: int) -> list[bool]:
    return [budget.try_spend(route, now_s) for _ in range(times)]


def test_windows_are_aligned_to_utc_hours_and_days() -> None:
    now = datetime(2024, 3, 10, 13, 45, 12, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(window_start(now, HOUR_S), UTC) == datetime(
        2024, 3, 10, 13, tzinfo=UTC
    )
    assert datetime.fromtimestamp(window_start(now, DAY_S), UTC) == datetime(
        2024, 3, 10, tzinfo=UTC
    )


def test_hourly_limit_rolls_over_exactly_at_the_hour() -> None:
    budget = Budget({"r": BudgetLimits(per_hour=2)})
    last_second = MIDNIGHT + HOUR_S - 0.001
    assert spend(budget, "r", MIDNIGHT, 2) == [True, True]
    assert not budget.try_spend("r", last_second)
    assert budget.remaining("r", last_second) == {"hour": 0, "day": None}
    assert budget.available_at_s("r", last_second) == MIDNIGHT + HOUR_S
    assert spend(budget, "r", MIDNIGHT + HOUR_S, 3) == [True, True, False]


def test_daily_limit_rolls_over_exactly_at_midnight_utc() -> None:
    budget = Budget({"r": BudgetLimits(per_hour=10, per_day=3)})
    assert spend(budget, "r", MIDNIGHT, 2) == [True, True]
    assert spend(budget, "r", MIDNIGHT + 5 * HOUR_S, 2) == [True, False]
    end_of_day = MIDNIGHT + DAY_S - 0.001
    assert not budget.try_spend("r", end_of_day)
    assert budget.remaining("r", end_of_day) == {"hour": 10, "day": 0}
    assert budget.available_at_s("r", end_of_day) == MIDNIGHT + DAY_S
    assert budget.try_spend("r", MIDNIGHT + DAY_S)
    assert budget.remaining("r", MIDNIGHT + DAY_S) == {"hour": 9, "day": 2}


def test_routes_are_independent_and_unlisted_routes_unlimited() -> None:
    budget = Budget({"a": BudgetLimits(per_hour=1), "b": BudgetLimits(per_day=2)})
    assert spend(budget, "a", MIDNIGHT, 2) == [True, False]
    assert spend(budget, "b", MIDNIGHT, 3) == [True, True, False]
    assert all(spend(budget, "other", MIDNIGHT, 100))
    assert budget.remaining("other", MIDNIGHT) == {"hour": None, "day": None}
    assert budget.available_at_s("other", MIDNIGHT) == MIDNIGHT
    assert budget.snapshot()["other"]["day_spent"] == 100


def test_zero_limit_never_spends() -> None:
    budget = Budget({"off": BudgetLimits(per_day=0)})
    assert not budget.try_spend("off", MIDNIGHT)
    assert budget.available_at_s("off", MIDNIGHT) is None


def test_refund_only_in_the_window_it_was_spent() -> None:
    budget = Budget({"r": BudgetLimits(per_hour=1, per_day=5)})
    assert budget.try_spend("r", MIDNIGHT)
    budget.refund("r", MIDNIGHT)  # the review had already started: nothing new was paid
    assert budget.try_spend("r", MIDNIGHT + 60)
    budget.refund("r", MIDNIGHT + 60)
    budget.refund("r", MIDNIGHT + 60)  # never below zero
    assert budget.remaining("r", MIDNIGHT + 60) == {"hour": 1, "day": 5}

    assert budget.try_spend("r", MIDNIGHT + 120)
    assert budget.try_spend("r", MIDNIGHT + HOUR_S)
    budget.refund("r", MIDNIGHT + 120)  # that hour is over: only the day gets it back
    assert budget.remaining("r", MIDNIGHT + HOUR_S) == {"hour": 0, "day": 4}
    budget.refund("unknown", MIDNIGHT)


def test_clock_stepping_back_keeps_the_later_window() -> None:
    budget = Budget({"r": BudgetLimits(per_hour=1)})
    assert budget.try_spend("r", MIDNIGHT + HOUR_S)
    assert not budget.try_spend("r", MIDNIGHT + HOUR_S - 1)


def test_snapshot_is_plain_json_and_restores() -> None:
    limits = {"a": BudgetLimits(per_hour=3, per_day=4), "b": BudgetLimits(per_hour=1)}
    budget = Budget(limits)
    spend(budget, "a", MIDNIGHT + 10, 2)
    spend(budget, "b", MIDNIGHT + 20, 1)
    data = json.loads(json.dumps(budget.snapshot()))
    assert data["a"] == {
        "hour_start_s": int(MIDNIGHT),
        "hour_spent": 2,
        "day_start_s": int(MIDNIGHT),
        "day_spent": 2,
    }
    restarted = Budget(limits)
    restarted.restore(data)
    assert restarted.snapshot() == budget.snapshot()
    assert spend(restarted, "a", MIDNIGHT + 30, 2) == [True, False]
    assert not restarted.try_spend("b", MIDNIGHT + 30)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hour_start_s": 0, "hour_spent": 1, "day_start_s": 0}, "day_spent"),
        ({"hour_start_s": 0, "hour_spent": -1, "day_start_s": 0, "day_spent": 0}, "hour_spent"),
        ({"hour_start_s": 0, "hour_spent": True, "day_start_s": 0, "day_spent": 0}, "hour_spent"),
        ({"hour_start_s": 60, "hour_spent": 1, "day_start_s": 0, "day_spent": 1}, "aligned"),
        ({"hour_start_s": 0, "hour_spent": 1, "day_start_s": 3600, "day_spent": 1}, "aligned"),
    ],
)
def test_restore_rejects_bad_data(fields: dict[str, object], message: str) -> None:
    budget = Budget({})
    with pytest.raises(ValueError, match=message):
        budget.restore({"r": fields})


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_limits_must_be_non_negative_integers(bad: object) -> None:
    with pytest.raises(ValueError, match="per_hour"):
        BudgetLimits(per_hour=bad)  # type: ignore[arg-type]


times = st.lists(st.floats(min_value=0, max_value=3 * DAY_S), min_size=1, max_size=300).map(
    lambda offsets: [MIDNIGHT + offset for offset in sorted(offsets)]
)
limit = st.one_of(st.none(), st.integers(min_value=0, max_value=20))


@given(times, limit, limit)
def test_no_window_ever_exceeds_its_limit(
    moments: list[float], per_hour: int | None, per_day: int | None
) -> None:
    budget = Budget({"r": BudgetLimits(per_hour=per_hour, per_day=per_day)})
    spent = [now for now in moments if budget.try_spend("r", now)]
    by_hour = Counter(window_start(now, HOUR_S) for now in spent)
    by_day = Counter(window_start(now, DAY_S) for now in spent)
    if per_hour is not None:
        assert max(by_hour.values(), default=0) <= per_hour
    if per_day is not None:
        assert max(by_day.values(), default=0) <= per_day
    if per_hour is None and per_day is None:
        assert len(spent) == len(moments)


@given(times, st.integers(min_value=0, max_value=300), limit, limit)
def test_restore_continues_exactly_where_the_snapshot_left(
    moments: list[float], cut: int, per_hour: int | None, per_day: int | None
) -> None:
    limits = {"r": BudgetLimits(per_hour=per_hour, per_day=per_day)}
    straight = Budget(limits)
    for now in moments[:cut]:
        straight.try_spend("r", now)
    restarted = Budget(limits)
    restarted.restore(json.loads(json.dumps(straight.snapshot())))
    for now in moments[cut:]:
        assert straight.try_spend("r", now) == restarted.try_spend("r", now)
        assert straight.remaining("r", now) == restarted.remaining("r", now)


def test_default_limits_apply_to_unlisted_routes() -> None:
    budget = Budget({"vip": BudgetLimits(per_hour=5)}, default=BudgetLimits(per_hour=1))
    assert budget.try_spend("other", 0.0)
    assert not budget.try_spend("other", 1.0)
    assert budget.try_spend("vip", 1.0)
