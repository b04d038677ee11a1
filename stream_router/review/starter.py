"""Starting reviews: budget, rate limit, retries and the backend's answers, per review request.

For one request :meth:`Starter.start` does, in order:

1. builds the InputContent (``content.py``); too large for the backend → ``OVERSIZE`` (nothing
   spent, nothing sent);
2. spends one review from the route's budget; none left → ``OVER_BUDGET`` (the caller applies
   the configured fallback), unless the review exists already (a redelivery: DescribeHumanLoop
   tells) → ``ALREADY_STARTED``;
3. waits for a token of the shared rate limiter, then calls ``backend.start``:
   - throttled (429, 5xx after the SDK's retries): the limiter pauses every caller for a
     jittered, growing delay, and the call is tried again (``max_retries``);
   - capacity exceeded (402): :class:`~stream_router.errors.ReviewCapacityExceeded` propagates —
     the caller stops taking requests until reviews end; the budget is refunded;
   - rejected (400) → ``REJECTED`` with the reason; name conflict (409 on another flow) →
     ``CONFLICT``; both refund the budget and go to the dead-letter topic;
   - already started (a redelivered request) → ``ALREADY_STARTED``, budget refunded: a
     redelivery never costs a second review.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewNameConflict,
    ReviewRejected,
    ReviewThrottled,
)
from stream_router.review.backend import ReviewBackend
from stream_router.review.budget import Budget
from stream_router.review.content import MAX_INPUT_CHARS, content_size, input_content
from stream_router.review.limiter import RateLimiter

logger = logging.getLogger(__name__)


class StartDecision(StrEnum):
    STARTED = "started"
    ALREADY_STARTED = "already-started"
    OVER_BUDGET = "over-budget"
    OVERSIZE = "oversize"
    REJECTED = "rejected"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class StartResult:
    decision: StartDecision
    name: str
    flow: str
    attempt: int
    backend_id: str | None = None
    reason: str | None = None
    throttled: int = 0  #: how many 429/5xx answers this start met


class Starter:
    """Starts reviews for review requests; shared by every concurrent request of a process."""

    def __init__(
        self,
        backend: ReviewBackend,
        limiter: RateLimiter,
        budget: Budget,
        *,
        projection: list[str],
        max_retries: int = 6,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.limiter = limiter
        self.budget = budget
        self.projection = projection
        self.max_retries = max_retries
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()

    async def start(
        self,
        request: Mapping[str, Any],
        *,
        name: str,
        flow: str,
        attempt: int = 1,
        budget: Budget | None = None,
    ) -> StartResult:
        """Start one review; ``budget`` (default: the starter's) pays for it."""
        budget = self.budget if budget is None else budget
        content = input_content(request, self.projection, attempt)
        size = content_size(content)
        if size > MAX_INPUT_CHARS:
            return StartResult(
                StartDecision.OVERSIZE,
                name,
                flow,
                attempt,
                reason=f"InputContent has {size} characters; the limit is {MAX_INPUT_CHARS}",
            )
        route = str(request["route"])
        spent_at = self.clock()
        if not budget.try_spend(route, spent_at):
            # A redelivered request must not be refused for a budget its first delivery spent.
            existing = await self.backend.describe(name)
            if existing is not None and existing.flow == flow:
                return StartResult(StartDecision.ALREADY_STARTED, name, flow, attempt)
            return StartResult(
                StartDecision.OVER_BUDGET,
                name,
                flow,
                attempt,
                reason=f"the review budget of route {route} is spent "
                f"(left: {budget.remaining(route, spent_at)})",
            )
        throttled = 0
        try:
            while True:
                await self.limiter.acquire()
                try:
                    outcome = await self.backend.start(name, flow, content)
                except ReviewThrottled as exc:
                    throttled += 1
                    if throttled > self.max_retries:
                        raise
                    delay = self._backoff(throttled, exc.retry_after_s)
                    logger.info(
                        "start of %s throttled (%d); pausing %.2f s", name, throttled, delay
                    )
                    self.limiter.pause_until(self.monotonic() + delay)
                    continue
                break
        except (ReviewRejected, ReviewNameConflict) as exc:
            budget.refund(route, spent_at)
            decision = (
                StartDecision.REJECTED
                if isinstance(exc, ReviewRejected)
                else StartDecision.CONFLICT
            )
            return StartResult(decision, name, flow, attempt, reason=str(exc), throttled=throttled)
        except (ReviewCapacityExceeded, ReviewThrottled):
            budget.refund(route, spent_at)
            raise
        if outcome.already_started:
            budget.refund(route, spent_at)
            return StartResult(
                StartDecision.ALREADY_STARTED, name, flow, attempt, outcome.backend_id,
                throttled=throttled,
            )  # fmt: skip
        return StartResult(
            StartDecision.STARTED, name, flow, attempt, outcome.backend_id, throttled=throttled
        )

    def _backoff(self, attempt: int, hint_s: float | None) -> float:
        """Exponential with full jitter, at least the backend's hint."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1))
        return max(hint_s or 0.0, self.rng.uniform(ceiling / 2, ceiling))
