"""The review-requests intake: what the feed fetches goes to the scheduler partition by partition,
in offset order, from where each partition's ledger says recording stopped.

The feed and the scheduler are small fakes; the scheduler's side of rule 1 (the position moves
only past what is recorded) is ``test_scheduler.py``'s, and the whole over the wire is the review
e2e tests'.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from stream_router.review.intake import Fetched, RequestIntake
from stream_router.review.scheduler import Delivered, RequestRecord, Skipped


@dataclass
class Scheduler:
    """Records what it is handed and moves its positions past it; ``gate`` holds each call."""

    positions_now: dict[int, tuple[int, int]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    called: asyncio.Event = field(default_factory=asyncio.Event)  #: a batch is in hand
    calls: list[tuple[int, list[int]]] = field(default_factory=list)
    in_hand: int = 0
    skipped: list[tuple[int, int, int]] = field(default_factory=list)
    fail_on: int | None = None  #: a call that handles this offset raises
    moved: asyncio.Condition = field(default_factory=asyncio.Condition)  #: a position moved

    def __post_init__(self) -> None:
        self.gate.set()

    def positions(self) -> dict[int, tuple[int, int]]:
        return dict(self.positions_now)

    async def take(
        self, partition: int, records: Sequence[RequestRecord], skipped: Skipped | None
    ) -> bool:
        offsets = [r.offset for r in records]
        if skipped is not None:
            self.skipped.append((partition, skipped.first, skipped.next))
        self.calls.append((partition, offsets))
        self.in_hand += 1
        self.called.set()
        try:
            await self.gate.wait()
            if self.fail_on in offsets:
                raise ConnectionError("the broker refused the ledger write")
            serial, _ = self.positions_now[partition]
            end = skipped.next if skipped is not None else offsets[-1] + 1
            self.positions_now[partition] = (serial, end)
            async with self.moved:
                self.moved.notify_all()
            return True
        finally:
            self.in_hand -= 1

    def taken(self, partition: int) -> list[int]:
        return [o for p, offsets in self.calls if p == partition for o in offsets]


@dataclass
class Feed:
    """review-requests: ``topic`` holds each partition's records; reads what is followed."""

    scheduler: Scheduler
    topic: dict[int, int] = field(default_factory=dict)  #: partition -> how many records
    at: dict[int, int] = field(default_factory=dict)  #: partition -> next offset to fetch
    serials: dict[int, int] = field(default_factory=dict)
    fetches: int = 0
    bad: dict[int, tuple[int, int]] = field(default_factory=dict)  #: an undecodable range
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def follow(self, positions: Mapping[int, tuple[int, int]]) -> None:
        assert self.scheduler.in_hand == 0, "followed anew while a batch was in hand"
        following = {p: serial for p, (serial, _) in positions.items()}
        if following == self.serials:
            return
        self.serials = following
        self.at = {p: offset for p, (_, offset) in positions.items()}

    def following(self) -> bool:
        return bool(self.serials)

    async def fetch(self, timeout_ms: int, max_records: int) -> Fetched:
        self.fetches += 1
        if not any(self.at[p] < self.topic.get(p, 0) for p in self.serials):
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout_ms / 1000)
        out: dict[int, list[RequestRecord]] = {}
        skipped: dict[int, Skipped] = {}
        for partition in sorted(self.serials):
            stop = min(self.topic.get(partition, 0), self.at[partition] + max_records)
            first, after = self.bad.get(partition, (stop, stop))
            if self.at[partition] <= first < stop:  # as the real feed: what came before, then
                stop = first  # the range it stepped over
                skipped[partition] = Skipped(first, after, "cannot be decoded")
            records = [Delivered(o, b"r") for o in range(self.at[partition], stop)]
            if records:
                out[partition] = records
                max_records -= len(records)
            self.at[partition] = after if partition in skipped else stop
        return Fetched(out, skipped)

    def write(self, partition: int, count: int) -> None:
        self.topic[partition] = self.topic.get(partition, 0) + count
        self.arrived.set()


def intake_of(scheduler: Scheduler, feed: Feed, batch: int = 100) -> RequestIntake:
    return RequestIntake(scheduler.take, feed, scheduler.positions, scheduler.changed,
                         batch=batch, fetch_wait_ms=20)  # fmt: skip


async def until(scheduler: Scheduler, condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds after a position moved; fails after 5 s."""

    async def wait() -> None:
        async with scheduler.moved:
            await scheduler.moved.wait_for(condition)

    try:
        await asyncio.wait_for(wait(), 5)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def test_each_partition_is_read_from_its_ledgers_position_in_order() -> None:
    scheduler = Scheduler({0: (1, 3), 1: (1, 0)})
    feed = Feed(scheduler)
    feed.write(0, 10)
    feed.write(1, 10)
    stop = asyncio.Event()
    run = asyncio.ensure_future(intake_of(scheduler, feed, batch=4).run(stop))
    done = {0: (1, 10), 1: (1, 10)}
    await until(scheduler, lambda: scheduler.positions_now == done, "all recorded")
    stop.set()
    await run
    assert scheduler.taken(0) == list(range(3, 10))  # below 3 was recorded before
    assert scheduler.taken(1) == list(range(10))
    assert max(len(offsets) for _, offsets in scheduler.calls) <= 4


async def test_a_partition_assigned_again_is_read_from_its_new_position() -> None:
    """A partition that moved away and came back (another serial) is read from where its ledger
    says now, not from where the feed was; a new partition is read once it is followed."""
    scheduler = Scheduler({0: (1, 0)})
    feed = Feed(scheduler)
    feed.write(0, 5)
    stop = asyncio.Event()
    run = asyncio.ensure_future(intake_of(scheduler, feed).run(stop))
    await until(scheduler, lambda: scheduler.positions_now[0] == (1, 5), "first five recorded")
    scheduler.positions_now = {0: (2, 8), 1: (3, 0)}  # another owner recorded 5-7 meanwhile
    scheduler.changed.set()
    feed.write(0, 5)
    feed.write(1, 2)
    done = {0: (2, 10), 1: (3, 2)}
    await until(scheduler, lambda: scheduler.positions_now == done, "the rest recorded")
    stop.set()
    await run
    assert scheduler.taken(0) == [0, 1, 2, 3, 4, 8, 9]
    assert scheduler.taken(1) == [0, 1]


async def test_with_nothing_to_follow_it_waits_for_a_change() -> None:
    scheduler = Scheduler()
    feed = Feed(scheduler)
    feed.write(0, 3)
    stop = asyncio.Event()
    run = asyncio.ensure_future(intake_of(scheduler, feed).run(stop))
    for _ in range(20):
        await asyncio.sleep(0)
    assert feed.fetches == 0  # no partition's ledger is read: nothing fetched, no busy loop
    scheduler.positions_now = {0: (1, 0)}
    scheduler.changed.set()
    await until(scheduler, lambda: scheduler.taken(0) == [0, 1, 2], "recorded once followed")
    stop.set()
    await run


async def test_nothing_is_followed_anew_while_a_batch_is_in_hand() -> None:
    """The feed re-reads from the ledger's positions only between batches, when everything it
    handed over is recorded (``Feed.follow`` asserts it)."""
    scheduler = Scheduler({0: (1, 0)})
    scheduler.gate.clear()
    feed = Feed(scheduler)
    feed.write(0, 2)
    stop = asyncio.Event()
    run = asyncio.ensure_future(intake_of(scheduler, feed).run(stop))
    await scheduler.called.wait()
    scheduler.positions_now[1] = (2, 0)  # partition 1's ledger is read meanwhile
    scheduler.changed.set()
    feed.write(1, 1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert scheduler.taken(1) == []  # still in hand: not followed yet
    scheduler.gate.set()
    await until(scheduler, lambda: scheduler.taken(1) == [0], "partition 1 read after the batch")
    stop.set()
    await run


async def test_a_failed_record_ends_the_intake_and_nothing_after_it_is_taken() -> None:
    scheduler = Scheduler({0: (1, 0)}, fail_on=5)
    feed = Feed(scheduler)
    feed.write(0, 12)
    with pytest.raises(ConnectionError):
        await intake_of(scheduler, feed, batch=4).run(asyncio.Event())
    assert scheduler.taken(0) == list(range(8))  # the failed batch (4-7) was the last
    assert scheduler.positions_now[0] == (1, 4)  # and the position stays before it


async def test_an_undecodable_range_goes_to_the_scheduler_after_the_records_before_it() -> None:
    scheduler = Scheduler({0: (1, 0)})
    feed = Feed(scheduler, bad={0: (3, 6)})
    feed.write(0, 8)
    stop = asyncio.Event()
    run = asyncio.ensure_future(intake_of(scheduler, feed).run(stop))
    await until(scheduler, lambda: scheduler.positions_now[0] == (1, 8), "all passed")
    stop.set()
    await run
    assert scheduler.calls[0] == (0, [0, 1, 2])  # handed with the range after them
    assert scheduler.skipped == [(0, 3, 6)]
    assert scheduler.taken(0) == [0, 1, 2, 6, 7]


async def test_without_room_nothing_is_fetched_until_there_is() -> None:
    """While the scheduler has no room (``review.intake_max_waiting`` requests wait to start),
    nothing is fetched: what waits stays in Kafka, not in memory."""
    scheduler = Scheduler({0: (1, 0)})
    feed = Feed(scheduler)
    feed.write(0, 3)
    room, asked = False, asyncio.Event()
    asks = 0

    def has_room() -> bool:
        nonlocal asks
        asks += 1
        if asks >= 3:
            asked.set()
        return room

    intake = RequestIntake(scheduler.take, feed, scheduler.positions, scheduler.changed,
                           room=has_room, fetch_wait_ms=5)  # fmt: skip
    stop = asyncio.Event()
    run = asyncio.ensure_future(intake.run(stop))
    await asked.wait()  # asked three times, and refused each time
    assert feed.fetches == 0
    room = True
    await until(scheduler, lambda: scheduler.taken(0) == [0, 1, 2], "recorded once there is room")
    stop.set()
    await run
