"""Rate limiter: token arithmetic, FIFO fairness, deficit-only sleeps, pauses, achieved rate."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_router.review.limiter import RateLimiter, split_quota


class VirtualTime:
    """A clock whose sleep jumps time forward at once (only the head waiter ever sleeps)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)  # a suspension point, as a real sleep has


class ManualTime:
    """A clock the test moves; sleepers wake when it passes their deadline.

    ``asleep`` yields each sleeper's deadline as it starts sleeping, so a test can await the
    moment the limiter waits instead of guessing it.
    """

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.asleep: asyncio.Queue[float] = asyncio.Queue()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        deadline = self.now + delay
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline, wake))
        self.asleep.put_nowait(deadline)
        await wake

    def advance_to(self, now: float) -> None:
        self.now = now
        due = [(d, f) for d, f in self._sleepers if d <= now]
        self._sleepers = [(d, f) for d, f in self._sleepers if d > now]
        for _, wake in due:
            if not wake.done():
                wake.set_result(None)


def drained(rate: float, burst: int, clock: VirtualTime | ManualTime) -> RateLimiter:
    limiter = RateLimiter(rate, burst, clock.clock, sleep=clock.sleep)
    while limiter.try_acquire():
        pass
    return limiter


def test_burst_then_rate() -> None:
    clock = VirtualTime()
    limiter = RateLimiter(10, 3, clock.clock, sleep=clock.sleep)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.05
    assert not limiter.try_acquire()
    clock.now += 0.05
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


def test_tokens_never_exceed_burst() -> None:
    clock = VirtualTime()
    limiter = drained(10, 3, clock)
    clock.now += 3600
    assert limiter.available() == 3
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]


async def test_acquire_sleeps_exactly_the_deficit_once() -> None:
    clock = VirtualTime()
    limiter = drained(4, 1, clock)
    clock.now += 0.1  # 0.4 of a token accrued
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(0.15)]
    assert clock.now == pytest.approx(100.25)


async def test_concurrent_waiters_served_in_arrival_order_at_the_rate() -> None:
    clock = VirtualTime()
    limiter = drained(20, 2, clock)
    served: list[tuple[int, float]] = []

    async def client(number: int) -> None:
        await limiter.acquire()
        served.append((number, clock.now))

    async with asyncio.TaskGroup() as group:
        for number in range(10):
            group.create_task(client(number))

    assert [number for number, _ in served] == list(range(10))
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(served)]
    assert gaps == [pytest.approx(0.05)] * 9
    assert len(clock.sleeps) == 10  # one sleep per token: no polling
    assert limiter.waiting == 0


async def test_sustained_virtual_rate_is_exact() -> None:
    clock = VirtualTime()
    limiter = RateLimiter(200, 10, clock.clock, sleep=clock.sleep)
    start = clock.now
    granted = 0

    async def client() -> None:
        nonlocal granted
        while clock.now - start < 10:
            await limiter.acquire()
            granted += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(20):
            group.create_task(client())
    # 10 s at 200/s plus the initial burst, plus at most one token per client in flight
    assert 2010 <= granted <= 2010 + 20


async def test_try_acquire_does_not_jump_the_queue() -> None:
    clock = ManualTime()
    limiter = drained(10, 5, clock)
    waiter = asyncio.create_task(limiter.acquire())
    deadline = await clock.asleep.get()
    clock.advance_to(deadline + 1.0)  # tokens are free, but someone is queued
    assert not limiter.try_acquire()
    await waiter
    assert limiter.try_acquire()


async def test_pause_pushes_a_sleeping_head_and_the_queue_back() -> None:
    clock = ManualTime()
    limiter = drained(10, 5, clock)
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    deadline = await clock.asleep.get()
    assert deadline == pytest.approx(100.1)

    limiter.pause_until(105.0)  # a 429 with retry-after 5 s
    clock.advance_to(deadline)
    assert await clock.asleep.get() == pytest.approx(105.0)  # the head re-computed its wait
    assert not first.done()

    clock.advance_to(105.0)
    await first
    assert await clock.asleep.get() == pytest.approx(105.1)  # no burst after the pause
    clock.advance_to(105.1)
    await second


def test_pause_drops_saved_tokens_and_only_extends() -> None:
    clock = VirtualTime()
    limiter = RateLimiter(10, 5, clock.clock, sleep=clock.sleep)
    limiter.pause_until(101.0)
    limiter.pause_until(100.5)  # an earlier end does not shorten the pause
    clock.now = 100.99
    assert not limiter.try_acquire()
    clock.now = 101.0
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


async def test_cancelled_waiter_gives_up_its_place() -> None:
    clock = ManualTime()
    limiter = drained(10, 1, clock)
    served: list[str] = []

    async def client(name: str) -> None:
        await limiter.acquire()
        served.append(name)

    first = asyncio.create_task(client("a"))
    middle = asyncio.create_task(client("b"))
    last = asyncio.create_task(client("c"))
    deadline = await clock.asleep.get()
    middle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await middle
    assert limiter.waiting == 2

    clock.advance_to(deadline)
    await first
    clock.advance_to(await clock.asleep.get())
    await last
    assert served == ["a", "c"]
    assert limiter.waiting == 0


async def test_cancelled_head_hands_over_the_turn() -> None:
    clock = ManualTime()
    limiter = drained(10, 1, clock)
    head = asyncio.create_task(limiter.acquire())
    follower = asyncio.create_task(limiter.acquire())
    await clock.asleep.get()
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    deadline = await clock.asleep.get()  # the follower is now the head and waits
    assert deadline == pytest.approx(100.1)
    clock.advance_to(deadline)
    await follower


@given(st.lists(st.floats(min_value=0, max_value=2, allow_nan=False), max_size=200))
def test_grants_never_exceed_burst_plus_rate(steps: list[float]) -> None:
    clock = VirtualTime(0.0)
    limiter = RateLimiter(50, 4, clock.clock, sleep=clock.sleep)
    grants: list[float] = []
    for step in steps:
        clock.now += step
        if limiter.try_acquire():
            grants.append(clock.now)
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= 4 + 50 * (grants[j] - start) + 1e-9


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_rejects_bad_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(rate, burst)


def test_split_quota_across_instances() -> None:
    assert split_quota(30, 12, 3) == (10, 4)
    assert split_quota(10, 2, 4) == (2.5, 1)
    with pytest.raises(ValueError, match="instances"):
        split_quota(10, 2, 0)


async def test_real_clock_rate_within_three_percent() -> None:
    rate, burst, clients, wanted = 200.0, 10, 20, 200
    limiter = RateLimiter(rate, burst)
    while limiter.try_acquire():  # measure the sustained rate, not the initial burst
        pass
    times: list[float] = []

    async def client() -> None:
        while len(times) < wanted:
            await limiter.acquire()
            times.append(time.monotonic())

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            group.create_task(client())

    times.sort()
    achieved = (len(times) - 1) / (times[-1] - times[0])
    print(
        f"limiter: configured {rate:.0f}/s, achieved {achieved:.2f}/s over "
        f"{times[-1] - times[0]:.3f} s with {clients} clients ({len(times)} acquisitions)"
    )
    assert abs(achieved - rate) / rate <= 0.03
