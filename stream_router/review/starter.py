"""Starting reviews: budget, rate limit, retries and the backend's answers, per review request.

For one request :meth:`Starter.start` does, in order:

1. builds the InputContent (``content.py``); longer than the backend's ``max_input_chars`` →
   ``OVERSIZE`` (nothing spent, nothing sent);
2. spends one review from the route's budget; none left → ``OVER_BUDGET`` (the caller applies
   the configured fallback), unless the review exists already (a redelivery: DescribeHumanLoop
   tells) → ``ALREADY_STARTED``;
3. waits for a token of the shared rate limiter, then calls ``backend.start`` once:
   - throttled (429, 5xx after the SDK's retries): :class:`~stream_router.errors.ReviewThrottled`
     propagates; the caller pauses the limiter and tries again later (``review/retry.py``, the
     one retry policy). A 429 is refunded; a 5xx is not (the review may have been created, and
     its retry then finds it started and refunds nothing twice);
   - capacity exceeded (402): :class:`~stream_router.errors.ReviewCapacityExceeded` propagates —
     the caller pauses starts until reviews end; the budget is refunded;
   - any other upstream error (the backend unreachable) propagates without a refund: the
     review may have started, and a redelivery finds it under its name;
   - rejected (400) → ``REJECTED`` with the reason; name conflict (409 on another flow) →
     ``CONFLICT``; both refund the budget and go to the dead-letter topic;
   - already started (a redelivered request) → ``ALREADY_STARTED``, budget refunded: a
     redelivery never costs a second review.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewNameConflict,
    ReviewRejected,
    ReviewThrottled,
)
from stream_router.review.backend import ReviewBackend
from stream_router.review.budget import Budget
from stream_router.review.content import content_size, input_content
from stream_router.review.limiter import RateLimiter
from stream_router.review.request import ReviewRequest

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


class Starter:
    """Starts reviews for review requests; shared by every concurrent start of a process."""

    def __init__(
        self,
        backend: ReviewBackend,
        limiter: RateLimiter,
        *,
        projection: list[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.limiter = limiter
        self.projection = projection
        self.clock = clock

    async def start(
        self,
        request: ReviewRequest,
        *,
        name: str,
        flow: str,
        attempt: int,
        budget: Budget,
        spent: Callable[[], Awaitable[None]] | None = None,
        fresh: bool = False,
        not_before_s: float | None = None,
    ) -> StartResult:
        """Try once to start one review that ``budget`` pays for (see the module docstring).

        ``spent()`` is awaited once the budget is spent and before the backend is called (the
        scheduler saves the counters then, and marks the start sent: a crash never
        under-counts a started review, nor leaves one sent that the ledger calls fresh).
        ``fresh`` says no start of ``name`` can have been sent before (``ReviewBackend.start``):
        the backend may skip its look-up, and a spent budget refuses without asking whether the
        review exists. ``not_before_s`` bounds the backend's look-up (``ReviewBackend.start``).
        """
        content = input_content(request, self.projection, attempt)
        size, limit = content_size(content), self.backend.max_input_chars
        if size > limit:
            return StartResult(
                StartDecision.OVERSIZE,
                name,
                flow,
                attempt,
                reason=f"InputContent has {size} characters; the limit is {limit}",
            )
        route = request.route
        spent_at = self.clock()
        if not budget.try_spend(route, spent_at):
            # A redelivered request must not be refused for a budget its first delivery spent.
            if not fresh and await self._exists(name, flow):
                return StartResult(StartDecision.ALREADY_STARTED, name, flow, attempt)
            return StartResult(
                StartDecision.OVER_BUDGET,
                name,
                flow,
                attempt,
                reason=f"the review budget of route {route} is spent "
                f"(left: {budget.remaining(route, spent_at)})",
            )
        if spent is not None:
            await spent()
        await self.limiter.acquire()
        try:
            outcome = await self.backend.start(
                name, flow, content, fresh=fresh, not_before_s=not_before_s
            )
        except (ReviewRejected, ReviewNameConflict) as exc:
            budget.refund(route, spent_at)
            decision = (
                StartDecision.REJECTED
                if isinstance(exc, ReviewRejected)
                else StartDecision.CONFLICT
            )
            return StartResult(decision, name, flow, attempt, reason=str(exc))
        except ReviewThrottled as exc:
            if not exc.maybe_started:  # a 429 refused it; after a 5xx the review may exist
                budget.refund(route, spent_at)
            raise
        except ReviewCapacityExceeded:
            budget.refund(route, spent_at)  # refused: no review was started
            raise
        if outcome.already_started:
            budget.refund(route, spent_at)
            return StartResult(
                StartDecision.ALREADY_STARTED, name, flow, attempt, outcome.backend_id
            )
        return StartResult(StartDecision.STARTED, name, flow, attempt, outcome.backend_id)

    async def _exists(self, name: str, flow: str) -> bool:
        """Whether review ``name`` exists on ``flow`` (an unreadable answer is not a start)."""
        try:
            existing = await self.backend.describe(name)
        except ReviewRejected as exc:
            logger.warning("review %s: describe before refusing its budget failed: %s", name, exc)
            return False
        return existing is not None and existing.flow == flow
