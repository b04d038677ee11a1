"""The review-requests intake: batches to the scheduler, acknowledged only once recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from stream_router.review.intake import RequestIntake
from stream_router.review.scheduler import Delivered


@dataclass(frozen=True)
class Event:
    partition: int
    offset: int


def record_of(event: Event) -> tuple[int, Delivered]:
    return event.partition, Delivered(event.offset, f"v{event.offset}".encode())


@dataclass
class Scheduler:
    """Records what it is handed; ``gate`` holds each call until set."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    called: asyncio.Event = field(default_factory=asyncio.Event)  #: a batch is in hand
    calls: list[tuple[int, list[int]]] = field(default_factory=list)
    recorded: set[tuple[int, int]] = field(default_factory=set)
    fail_on: int | None = None  #: a call that handles this offset raises

    async def take(self, partition: int, records: Sequence[Delivered]) -> bool:
        offsets = [r.offset for r in records]
        self.calls.append((partition, offsets))
        self.called.set()
        await self.gate.wait()
        if self.fail_on in offsets:
            raise ConnectionError("the broker refused the ledger write")
        self.recorded.update((partition, o) for o in offsets)
        return True


@dataclass
class Acks:
    scheduler: Scheduler
    acked: list[Event] = field(default_factory=list)

    async def ack(self, event: Event) -> bool:
        assert (event.partition, event.offset) in self.scheduler.recorded, "acked unrecorded"
        self.acked.append(event)
        return True


@dataclass
class Stream:
    """``events``, counting those handed out; ``error`` raised after the last."""

    events: list[Event]
    error: Exception | None = None
    handed: int = 0
    more: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __aiter__(self) -> AsyncIterator[Event]:
        for event in self.events:
            async with self.more:
                self.handed += 1
                self.more.notify_all()
            yield event
        if self.error is not None:
            raise self.error

    async def handed_out(self, count: int) -> None:
        async with self.more:
            await self.more.wait_for(lambda: self.handed >= count)


async def test_records_are_recorded_per_partition_in_order_and_acked_after() -> None:
    scheduler = Scheduler()
    acks = Acks(scheduler)
    events = [Event(p, o) for o in range(5) for p in (0, 1)]
    intake = RequestIntake(scheduler.take, acks.ack, record_of, batch=100)
    run = asyncio.ensure_future(intake.run(Stream(events)))
    await scheduler.called.wait()
    assert acks.acked == []  # in hand, not recorded: nothing acknowledged
    scheduler.gate.set()
    await run
    assert acks.acked == events  # every one, in the order delivered
    by_partition: dict[int, list[int]] = {}
    for partition, offsets in scheduler.calls:
        by_partition.setdefault(partition, []).extend(offsets)
    assert by_partition == {0: list(range(5)), 1: list(range(5))}


async def test_what_arrives_while_a_batch_is_recorded_is_the_next_batch() -> None:
    scheduler = Scheduler()
    acks = Acks(scheduler)
    events = [Event(0, o) for o in range(10)]
    source = Stream(events)
    intake = RequestIntake(scheduler.take, acks.ack, record_of, batch=4)
    run = asyncio.ensure_future(intake.run(source))
    await scheduler.called.wait()
    first = len(scheduler.calls[0][1])
    # While the first batch is in hand the reader fills the queue (4) and holds one more.
    await source.handed_out(first + 4 + 1)
    scheduler.gate.set()
    await run
    sizes = [len(offsets) for _, offsets in scheduler.calls]
    assert sizes[1] == 4  # what gathered meanwhile, as one batch
    assert max(sizes) == 4  # never more than the batch
    assert [o for _, offsets in scheduler.calls for o in offsets] == list(range(10))
    assert acks.acked == events


async def test_a_failed_record_leaves_its_batch_and_what_follows_unacknowledged() -> None:
    scheduler = Scheduler(fail_on=5)
    scheduler.gate.set()
    acks = Acks(scheduler)
    events = [Event(0, o) for o in range(12)]
    intake = RequestIntake(scheduler.take, acks.ack, record_of, batch=4)
    with pytest.raises(ConnectionError):
        await intake.run(Stream(events))
    failed = next(offsets for _, offsets in scheduler.calls if 5 in offsets)
    assert all(event.offset < failed[0] for event in acks.acked)
    assert {event.offset for event in acks.acked} == set(range(failed[0]))


async def test_a_stream_that_fails_ends_after_what_came_before_is_recorded() -> None:
    scheduler = Scheduler()
    scheduler.gate.set()
    acks = Acks(scheduler)
    events = [Event(1, o) for o in range(3)]
    intake = RequestIntake(scheduler.take, acks.ack, record_of)
    with pytest.raises(RuntimeError, match="rebalance"):
        await intake.run(Stream(events, error=RuntimeError("rebalance")))
    assert acks.acked == events
