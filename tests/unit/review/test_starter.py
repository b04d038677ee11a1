"""The starter: budget, rate limit, one try per call, and every answer of the backend."""

from __future__ import annotations

import pytest

from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewRejected,
    ReviewThrottled,
    UpstreamError,
)
from stream_router.review.budget import Budget, BudgetLimits
from stream_router.review.limiter import RateLimiter
from stream_router.review.starter import StartDecision, Starter
from stream_router.testing import FakeReviewBackend
from tests.unit.review.requests import REQUESTED_S, review_request

NOW_S = REQUESTED_S


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


def make(*, max_input_chars: int = 1_000_000) -> tuple[Starter, FakeReviewBackend, VirtualTime]:
    time = VirtualTime()
    backend = FakeReviewBackend(clock=lambda: NOW_S + time.now, max_input_chars=max_input_chars)
    limiter = RateLimiter(10.0, 1, clock=time, sleep=time.sleep)
    starter = Starter(backend, limiter, projection=[], clock=lambda: NOW_S + time.now)
    return starter, backend, time


async def test_starts_and_spends_the_budget() -> None:
    budget = Budget({"general": BudgetLimits(per_hour=1)})
    starter, backend, _ = make()
    first = await starter.start(
        review_request("e1"), name="e1-loop", flow="fd", attempt=1, budget=budget
    )
    assert first.decision is StartDecision.STARTED
    assert (first.name, first.flow, first.attempt) == ("e1-loop", "fd", 1)
    assert first.backend_id == "fake:e1-loop"
    assert backend.contents["e1-loop"]["_identity"]["event_id"] == "e1"
    assert backend.contents["e1-loop"]["_identity"]["attempt"] == 1
    second = await starter.start(
        review_request("e2"), name="e2-loop", flow="fd", attempt=1, budget=budget
    )
    assert second.decision is StartDecision.OVER_BUDGET
    assert "general" in (second.reason or "")
    assert backend.start_calls == ["e1-loop"]


async def test_redelivery_costs_nothing() -> None:
    budget = Budget({"general": BudgetLimits(per_hour=1)})
    starter, backend, _ = make()
    await starter.start(review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget)
    budget_after_first = budget.remaining("general", NOW_S)
    again = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget
    )
    assert again.decision is StartDecision.ALREADY_STARTED
    assert budget.remaining("general", NOW_S) == budget_after_first
    assert len(backend.states) == 1


async def test_redelivery_with_budget_left_is_refunded() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make()
    await starter.start(review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget)
    budget.refund("general", NOW_S)  # as if the first delivery's spend was lost in a crash
    again = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget
    )
    assert again.decision is StartDecision.ALREADY_STARTED
    assert budget.remaining("general", NOW_S)["day"] == 5
    assert backend.start_calls == ["e1-loop", "e1-loop"]


async def test_a_5xx_is_not_refunded_and_its_retry_costs_nothing_more() -> None:
    """After a 5xx the review may exist: keeping the spend means it is counted either way."""
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make()
    backend.fail_next(ReviewThrottled("500", maybe_started=True))
    with pytest.raises(ReviewThrottled):
        await starter.start(review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget)
    assert budget.remaining("general", NOW_S)["day"] == 4
    retried = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget
    )
    assert retried.decision is StartDecision.STARTED
    assert budget.remaining("general", NOW_S)["day"] == 3  # over-counted by one, never under


async def test_throttling_propagates_after_one_call_and_refunds() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, time = make()
    backend.fail_next(ReviewThrottled("429", retry_after_s=2.0))
    with pytest.raises(ReviewThrottled) as caught:
        await starter.start(review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget)
    assert caught.value.retry_after_s == 2.0
    assert backend.start_calls == ["e1-loop"]
    assert budget.remaining("general", NOW_S)["day"] == 5
    assert time.slept == []  # no back-off inside the starter: the caller retries later
    retried = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget
    )
    assert retried.decision is StartDecision.STARTED
    assert budget.remaining("general", NOW_S)["day"] == 4


async def test_capacity_exceeded_propagates_and_refunds() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make()
    backend.fail_next(ReviewCapacityExceeded("402"))
    with pytest.raises(ReviewCapacityExceeded):
        await starter.start(review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget)
    assert budget.remaining("general", NOW_S)["day"] == 5
    assert backend.start_calls == ["e1-loop"]


async def test_other_upstream_errors_propagate_without_a_refund() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make()
    backend.fail_next(UpstreamError("connection reset"))
    with pytest.raises(UpstreamError):
        await starter.start(review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget)
    # The review may have started: a redelivery finds it under its name.
    assert budget.remaining("general", NOW_S)["day"] == 4


async def test_rejected_and_conflict_refund() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make()
    backend.fail_next(ReviewRejected("bad input"))
    rejected = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget
    )
    assert rejected.decision is StartDecision.REJECTED
    assert rejected.reason == "bad input"
    assert budget.remaining("general", NOW_S)["day"] == 5
    await starter.start(review_request("e2"), name="e2-loop", flow="fd-a", attempt=1, budget=budget)
    assert budget.remaining("general", NOW_S)["day"] == 4
    conflict = await starter.start(
        review_request("e2"), name="e2-loop", flow="fd-b", attempt=1, budget=budget
    )
    assert conflict.decision is StartDecision.CONFLICT
    assert budget.remaining("general", NOW_S)["day"] == 4


async def test_spent_is_awaited_after_the_spend_and_before_the_backend_call() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make()
    seen: list[tuple[int | None, list[str]]] = []

    async def spent() -> None:
        seen.append((budget.remaining("general", NOW_S)["day"], list(backend.start_calls)))

    result = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=budget, spent=spent
    )
    assert result.decision is StartDecision.STARTED
    assert seen == [(4, [])]
    assert backend.start_calls == ["e1-loop"]


async def test_spent_is_not_awaited_when_nothing_is_spent() -> None:
    calls: list[str] = []

    async def spent() -> None:
        calls.append("spent")

    small, small_backend, _ = make(max_input_chars=50)
    oversize = await small.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=Budget({}), spent=spent
    )
    assert oversize.decision is StartDecision.OVERSIZE
    none_left = Budget({"general": BudgetLimits(per_day=0)})
    starter, backend, _ = make()
    over = await starter.start(
        review_request(), name="e1-loop", flow="fd", attempt=1, budget=none_left, spent=spent
    )
    assert over.decision is StartDecision.OVER_BUDGET
    assert calls == []
    assert small_backend.start_calls == backend.start_calls == []


async def test_oversize_input_is_never_sent_and_costs_nothing() -> None:
    budget = Budget({"general": BudgetLimits(per_day=5)})
    starter, backend, _ = make(max_input_chars=500)
    big = review_request(blob="x" * 600)
    result = await starter.start(big, name="e1-loop", flow="fd", attempt=1, budget=budget)
    assert result.decision is StartDecision.OVERSIZE
    assert "the limit is 500" in (result.reason or "")
    assert backend.start_calls == []
    assert budget.remaining("general", NOW_S)["day"] == 5
    small = await starter.start(
        review_request("e2"), name="e2-loop", flow="fd", attempt=1, budget=budget
    )
    assert small.decision is StartDecision.STARTED


async def test_each_start_waits_for_a_rate_token() -> None:
    starter, backend, time = make()  # 10 per second, burst 1
    for event_id in ("e1", "e2", "e3"):
        await starter.start(
            review_request(event_id),
            name=f"{event_id}-loop",
            flow="fd",
            attempt=1,
            budget=Budget({}),
        )
    assert backend.start_calls == ["e1-loop", "e2-loop", "e3-loop"]
    assert time.now == pytest.approx(0.2)
