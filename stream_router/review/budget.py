"""Review budgets: how many paid reviews each route may start per hour and per day.

Every start of a review on a custom task type is billed, and A2I has no activation conditions to
stop it, so the review path spends from a :class:`Budget` before each start. A route may have a
limit per hour, per day, both or neither (no limit). This module only counts: which limits a
route gets is decided once, failing closed, where the settings become limits
(``review/shares.py``: no limit only for ``unlimited: true``, a default for a route without a
budget, nothing for a route the configuration does not have). When a route's budget is spent,
the configured ``review.budget_fallback`` decides what happens to the request: hold it until the
budget resets, publish the model's decision marked unreviewed, or dead-letter it.

Windows are fixed and aligned to UTC boundaries (the hour from ``hh:00:00``, the day from
``00:00:00`` UTC; epoch seconds are UTC, so the window start is ``now_s // length * length``),
not sliding. Fixed windows need two counters per route (cheap to keep in a changelog-backed table
and to restore after a restart), match how people state and read budgets ("200 a day", the bill
per day) and make the reset time exact, so a held request knows when to retry. The price: across
a boundary a route can spend up to twice the hourly limit within a short span (the end of one
hour and the start of the next); the daily limit still bounds the day. A sliding log would need
one timestamp per review spent, and a sliding-counter estimate is only approximate.

If the clock steps back into a window before the one counted, the counted (later) window is kept:
a clock step must never hand out extra budget.

The state is plain data: :meth:`Budget.snapshot` gives ``{route: {"hour_start_s": int,
"hour_spent": int, "day_start_s": int, "day_spent": int}}`` and :meth:`Budget.restore` takes it
back. One instance must own a route's counters (or each instance gets a share of the limits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

HOUR_S = 3600
DAY_S = 86400


@dataclass(frozen=True)
class BudgetLimits:
    """A route's limits; None means no limit in that window."""

    per_hour: int | None = None
    per_day: int | None = None

    def __post_init__(self) -> None:
        for name in ("per_hour", "per_day"):
            value = getattr(self, name)
            bad = not isinstance(value, int) or isinstance(value, bool) or value < 0
            if value is not None and bad:
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")


UNLIMITED = BudgetLimits()


@dataclass(frozen=True)
class _Spent:
    hour_start_s: int
    hour_spent: int
    day_start_s: int
    day_spent: int


def window_start(now_s: float, length_s: int) -> int:
    """Start (epoch seconds) of the UTC-aligned window of ``length_s`` holding ``now_s``."""
    return int(now_s // length_s) * length_s


class Budget:
    """Spend counters per route against each route's :class:`BudgetLimits`.

    Routes missing from ``limits`` get ``default`` (unlimited unless given: the review role
    gives ``shares.NO_BUDGET``); spending is counted either way. Not thread-safe; pure (no I/O,
    time comes in as ``now_s``, epoch seconds).
    """

    def __init__(
        self, limits: Mapping[str, BudgetLimits], default: BudgetLimits = UNLIMITED
    ) -> None:
        """``default`` applies to routes missing from ``limits`` (unlimited unless given)."""
        self._limits = dict(limits)
        self._default = default
        self._spent: dict[str, _Spent] = {}

    def limits(self, route: str) -> BudgetLimits:
        return self._limits.get(route, self._default)

    def try_spend(self, route: str, now_s: float) -> bool:
        """Count one review for ``route`` if both windows have room; False leaves it unchanged."""
        spent = self._current(route, now_s)
        limits = self.limits(route)
        if limits.per_hour is not None and spent.hour_spent >= limits.per_hour:
            return False
        if limits.per_day is not None and spent.day_spent >= limits.per_day:
            return False
        self._spent[route] = replace(
            spent, hour_spent=spent.hour_spent + 1, day_spent=spent.day_spent + 1
        )
        return True

    def refund(self, route: str, spent_s: float) -> None:
        """Give back one review spent at ``spent_s`` (e.g. the review had already started).

        Only windows still counted get it back: a refund never adds room to a later window.
        """
        spent = self._spent.get(route)
        if spent is None:
            return
        if spent.hour_start_s == window_start(spent_s, HOUR_S) and spent.hour_spent > 0:
            spent = replace(spent, hour_spent=spent.hour_spent - 1)
        if spent.day_start_s == window_start(spent_s, DAY_S) and spent.day_spent > 0:
            spent = replace(spent, day_spent=spent.day_spent - 1)
        self._spent[route] = spent

    def remaining(self, route: str, now_s: float) -> dict[str, int | None]:
        """``{"hour": n, "day": n}`` reviews left in the current windows; None means no limit."""
        spent = self._current(route, now_s)
        limits = self.limits(route)
        return {
            "hour": None if limits.per_hour is None else max(0, limits.per_hour - spent.hour_spent),
            "day": None if limits.per_day is None else max(0, limits.per_day - spent.day_spent),
        }

    def available_at_s(self, route: str, now_s: float) -> float | None:
        """When ``route`` can next spend: ``now_s`` if now, None if never (a limit of 0)."""
        limits = self.limits(route)
        if limits.per_hour == 0 or limits.per_day == 0:
            return None
        left = self.remaining(route, now_s)
        spent = self._current(route, now_s)
        if left["day"] == 0:
            return float(spent.day_start_s + DAY_S)
        if left["hour"] == 0:
            return float(spent.hour_start_s + HOUR_S)
        return now_s

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The counters as plain data (JSON-ready), for a changelog-backed table."""
        return {
            route: {
                "hour_start_s": spent.hour_start_s,
                "hour_spent": spent.hour_spent,
                "day_start_s": spent.day_start_s,
                "day_spent": spent.day_spent,
            }
            for route, spent in self._spent.items()
        }

    def restore(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the counters with a :meth:`snapshot`; raises ValueError naming a bad value."""
        restored: dict[str, _Spent] = {}
        for route, fields in data.items():
            values = {name: _count(route, name, fields) for name in _Spent.__dataclass_fields__}
            for name, length in (("hour_start_s", HOUR_S), ("day_start_s", DAY_S)):
                if values[name] % length:
                    raise ValueError(
                        f"budget snapshot for route {route!r}: {name}={values[name]} "
                        f"is not aligned to a {length} s window"
                    )
            restored[route] = _Spent(**values)
        self._spent = restored

    def _current(self, route: str, now_s: float) -> _Spent:
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be a finite number of epoch seconds, got {now_s}")
        hour, day = window_start(now_s, HOUR_S), window_start(now_s, DAY_S)
        spent = self._spent.get(route)
        if spent is None:
            return _Spent(hour, 0, day, 0)
        if hour > spent.hour_start_s:
            spent = replace(spent, hour_start_s=hour, hour_spent=0)
        if day > spent.day_start_s:
            spent = replace(spent, day_start_s=day, day_spent=0)
        return spent


def _count(route: str, name: str, fields: Mapping[str, Any]) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"budget snapshot for route {route!r}: {name} must be a non-negative integer, "
            f"got {value!r}"
        )
    return value
