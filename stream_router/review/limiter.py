"""A token-bucket rate limiter for starting reviews: fair, async, and pushed back by throttling.

Every start of a human review goes through :meth:`RateLimiter.acquire`. Tokens accrue
continuously at ``rate_per_s`` up to ``burst``; one token is one start. Many coroutines of one
process share a limiter and are served first come, first served: a caller that finds others
waiting queues behind them even if a token is free (:meth:`~RateLimiter.try_acquire` does not
jump the queue either). Only the caller at the head of the queue sleeps, and only for the
computed deficit (``asyncio.sleep``, never a polling loop); it then hands the turn to the next.

When the backend throttles (A2I 429, ``ReviewThrottled.retry_after_s``), call
:meth:`~RateLimiter.pause_until`: no token is granted before that time, and tokens saved up
before the pause are dropped, so a throttled backend is not met with a burst when it recovers.

Splitting an account quota across instances
--------------------------------------------
A2I's request quota is per account and Region, but each instance of the review app has its own
limiter. With ``N`` instances sharing a quota of ``R`` starts per second and a burst ``B``, give
each instance ``R / N`` and ``max(1, B // N)`` (see :func:`split_quota`): the sum of the rates
is the quota and the sum of the bursts never exceeds ``B`` (it may exceed it only when ``B < N``,
since every instance needs a burst of at least one). When instances are scaled, change ``N``
with them; an instance that idles leaves its share unused rather than lending it to others.

Accuracy
--------
Over a sustained run the achieved rate must stay within ±3 % of the configured one (after the
initial burst). Tokens accrue from the clock, not from wake-ups, so late wake-ups and hand-off
delays do not lose tokens while callers wait (the bucket keeps them, up to ``burst``).
``tests/unit/review/test_limiter.py`` measures it with the real clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Float slack when counting tokens: a head that slept exactly its deficit finds 0.999999999...
#: tokens; without slack it would sleep again for a deficit below the clock's resolution.
_SLACK = 1e-9


def split_quota(rate_per_s: float, burst: int, instances: int) -> tuple[float, int]:
    """One instance's (rate_per_s, burst) when ``instances`` share an account quota."""
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    return rate_per_s / instances, max(1, burst // instances)


class RateLimiter:
    """Token bucket: ``rate_per_s`` tokens per second, at most ``burst`` saved up.

    The bucket starts full. ``clock`` must be monotonic (seconds); ``sleep`` is how the head
    waiter waits for its deficit. Both are injectable so tests can run on virtual time.
    Not thread-safe: share it between coroutines of one event loop.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Clock = time.monotonic,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError(f"rate_per_s must be a positive finite number, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._rate = float(rate_per_s)
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        # Tokens as of ``_updated``; negative while a pause is in force (the debt is the pause).
        self._tokens = float(burst)
        self._updated = clock()
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def waiting(self) -> int:
        """How many callers are queued in :meth:`acquire` (for metrics)."""
        return len(self._waiters)

    def available(self) -> float:
        """Tokens in the bucket now (negative during a pause); for metrics and tests."""
        self._refill(self._clock())
        return self._tokens

    def try_acquire(self) -> bool:
        """Take a token if one is free and nobody is queued; never waits."""
        if self._waiters:
            return False
        return self._take(self._clock())

    async def acquire(self) -> None:
        """Wait for a token, in arrival order. Cancelling a waiter gives up its place."""
        if self.try_acquire():
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if self._waiters[0] is not turn:
                await turn  # resolved when the caller ahead leaves the queue
            while not self._take(self._clock()):
                await self._sleep(self._deficit_s())
        finally:
            self._leave(turn)

    def pause_until(self, until: float) -> None:
        """Grant nothing before ``until`` (clock time); drop tokens saved up before it.

        The bucket is set to hold at most one token at ``until`` and refills from there (an
        ``until`` in the past caps it at what one token at ``until`` would have become). Pauses
        only extend: one ending before a pause in force changes nothing. Callers already
        waiting are pushed back too: the head re-computes its deficit when it wakes.
        """
        now = self._clock()
        self._refill(now)
        self._tokens = min(self._tokens, 1.0 - (until - now) * self._rate)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(
                float(self._burst), self._tokens + (now - self._updated) * self._rate
            )
            self._updated = now

    def _take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0 - _SLACK:
            self._tokens -= 1.0
            return True
        return False

    def _deficit_s(self) -> float:
        return (1.0 - self._tokens) / self._rate

    def _leave(self, turn: asyncio.Future[None]) -> None:
        if self._waiters and self._waiters[0] is turn:
            self._waiters.popleft()
        else:
            self._waiters.remove(turn)
        if self._waiters and not self._waiters[0].done():
            self._waiters[0].set_result(None)
