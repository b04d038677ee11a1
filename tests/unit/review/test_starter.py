"""The starter: budget, rate limit, retries, and every answer of the backend."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewRejected,
    ReviewThrottled,
)
from stream_router.review.budget import Budget, BudgetLimits
from stream_router.review.fake import FakeReviewBackend
from stream_router.review.limiter import RateLimiter
from stream_router.review.starter import StartDecision, Starter


class VirtualTime:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def request(event_id: str = "e1", route: str = "general", **event: Any) -> dict[str, Any]:
    return {
        "loop_name": f"{event_id}-loop",
        "event_id": event_id,
        "route": route,
        "policy_version": "1",
        "reason": "low confidence",
        "prediction": {"label": "cat", "confidence": 0.4, "scores": None},
        "event": {"label": "cat", **event},
    }


def make(
    budget: Budget | None = None, **kwargs: Any
) -> tuple[Starter, FakeReviewBackend, VirtualTime]:
    time = VirtualTime()
    backend = FakeReviewBackend(clock=lambda: 1_700_000_000.0 + time.now)
    limiter = RateLimiter(10.0, 1, clock=time, sleep=time.sleep)
    starter = Starter(
        backend,
        limiter,
        budget or Budget({}),
        projection=[],
        clock=lambda: 1_700_000_000.0 + time.now,
        monotonic=time,
        rng=random.Random(1),
        **kwargs,
    )
    return starter, backend, time


async def test_starts_and_spends_the_budget() -> None:
    budget = Budget({"general": BudgetLimits(per_hour=1)})
    starter, backend, _ = make(budget)
    first = await starter.start(request("e1"), name="e1-loop", flow="fd")
    assert first.decision is StartDecision.STARTED
    assert backend.contents["e1-loop"]["_identity"]["event_id"] == "e1"
    second = await starter.start(request("e2"), name="e2-loop", flow="fd")
    assert second.decision is StartDecision.OVER_BUDGET
    assert "general" in (second.reason or "")
    assert backend.start_calls == ["e1-loop"]


async def test_redelivery_costs_nothing() -> None:
    budget = Budget({"general": BudgetLimits(per_hour=1)})
    starter, backend, _ = make(budget)
    await starter.start(request(), name="e1-loop", flow="fd")
    budget_after_first = budget.remaining("general", 1_700_000_000.0)
    again = await starter.start(request(), name="e1-loop", flow="fd")
    assert again.decision is StartDecision.ALREADY_STARTED
    assert budget.remaining("general", 1_700_000_000.0) == budget_after_first
    assert len(backend.states) == 1


async def test_throttling_pauses_and_retries() -> None:
    starter, backend, time = make()
    backend.fail_next(ReviewThrottled("429"), ReviewThrottled("429"))
    result = await starter.start(request(), name="e1-loop", flow="fd")
    assert result.decision is StartDecision.STARTED
    assert result.throttled == 2
    assert backend.start_calls == ["e1-loop"] * 3
    assert sum(time.slept) >= 0.25 + 0.5  # two jittered back-offs of at least half the ceiling


async def test_throttling_gives_up_after_max_retries_and_refunds() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make(budget, max_retries=2)
    backend.fail_next(*(ReviewThrottled("429") for _ in range(3)))
    with pytest.raises(ReviewThrottled):
        await starter.start(request(), name="e1-loop", flow="fd")
    assert budget.remaining("general", 1_700_000_000.0)["day"] == 5


async def test_capacity_exceeded_propagates_and_refunds() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make(budget)
    backend.fail_next(ReviewCapacityExceeded("402"))
    with pytest.raises(ReviewCapacityExceeded):
        await starter.start(request(), name="e1-loop", flow="fd")
    assert budget.remaining("general", 1_700_000_000.0)["day"] == 5


async def test_rejected_and_conflict() -> None:
    starter, backend, _ = make()
    backend.fail_next(ReviewRejected("bad input"))
    rejected = await starter.start(request(), name="e1-loop", flow="fd")
    assert rejected.decision is StartDecision.REJECTED
    assert rejected.reason == "bad input"
    await starter.start(request("e2"), name="e2-loop", flow="fd-a")
    conflict = await starter.start(request("e2"), name="e2-loop", flow="fd-b")
    assert conflict.decision is StartDecision.CONFLICT


async def test_oversize_input_is_never_sent() -> None:
    starter, backend, _ = make()
    big = request(blob="x" * 3_200_000)
    result = await starter.start(big, name="e1-loop", flow="fd")
    assert result.decision is StartDecision.OVERSIZE
    assert "3145728" in (result.reason or "")
    assert backend.start_calls == []
