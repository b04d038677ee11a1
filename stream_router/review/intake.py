"""The review role's intake: review-requests to the scheduler, a batch at a time.

One acknowledged ledger write per record, made before the next is read, caps an instance at a
few hundred requests a second (a broker round trip each), and a model that suddenly sends
everything to review then takes hours to record what budgets and fallbacks can act on.
:class:`RequestIntake` reads review-requests through a :class:`Feed` (a plain consumer, which
fetches the next records while a batch is recorded) from the partitions whose ledgers are read,
each from the position its ledger holds, and hands each partition's records, in offset order,
to :meth:`~stream_router.review.scheduler.ReviewScheduler.take_requests`: it writes their
entries together and, once they are acknowledged, the partition's intake position past them
(the scheduler's rule 1). Nothing is committed to Kafka: where recording stopped is in the
ledger, read whole by whoever owns the partition next.

When recording fails, the exception leaves :meth:`RequestIntake.run` (the role's supervisor
stops the process) and the position stays before what was not recorded: the records are read
again by the next owner, and what was recorded meanwhile is recognised as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from stream_router.review.scheduler import INTAKE_BATCH, RequestRecord, Skipped

#: Takes one partition's records, and the undecodable range after them if any
#: (``ReviewScheduler.take_requests``).
Take = Callable[[int, Sequence[RequestRecord], Skipped | None], Awaitable[bool]]


class Fetched(NamedTuple):
    """What one fetch brought, by partition: records in offset order, and a range after them
    the client could not decode (stepped over; ``review_topics.RequestFeed.fetch``)."""

    records: Mapping[int, Sequence[RequestRecord]]
    skipped: Mapping[int, Skipped] = {}


#: How long a fetch waits for records before the partitions followed are checked again.
FETCH_WAIT_MS = 200


class Feed(Protocol):
    """Review-requests as the intake reads it (``review_topics.RequestFeed``)."""

    def follow(self, positions: Mapping[int, tuple[int, int]]) -> None:
        """Read the partitions of ``positions`` (partition: the serial of its assignment, the
        next offset to record); a partition new, or of another serial, from its offset."""
        ...

    def following(self) -> bool: ...

    async def fetch(self, timeout_ms: int, max_records: int) -> Fetched: ...


class RequestIntake:
    """Review-requests from ``feed`` to ``take``, batch by batch (see the module docstring).

    ``positions`` says what to read (``ReviewScheduler.intake_positions``); ``changed`` is set
    when it changes. ``room`` says whether more may be recorded now
    (``ReviewScheduler.has_room``): while it says no, nothing is fetched and it asks again every
    ``fetch_wait_ms`` (what waits in memory is bounded; the rest waits in Kafka). ``handling``
    marks a batch in hand (the supervisor's stall watch). ``batch`` is the most records a fetch
    hands over.
    """

    def __init__(
        self,
        take: Take,
        feed: Feed,
        positions: Callable[[], Mapping[int, tuple[int, int]]],
        changed: asyncio.Event,
        *,
        room: Callable[[], bool] = lambda: True,
        handling: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        batch: int = INTAKE_BATCH,
        fetch_wait_ms: int = FETCH_WAIT_MS,
    ) -> None:
        self.take = take
        self.feed = feed
        self.positions = positions
        self.changed = changed
        self.room = room
        self.handling = handling
        self.batch = batch
        self.fetch_wait_ms = fetch_wait_ms

    async def run(self, stop: asyncio.Event) -> None:
        """Record what arrives until ``stop`` is set (or recording fails: raises)."""
        while not stop.is_set():
            self.changed.clear()
            followed = self.positions()
            self.feed.follow(followed)  # only here: nothing handed over is unrecorded
            if not self.feed.following():
                await _first(self.changed.wait(), stop.wait())
                continue
            if not self.room():
                await _first(asyncio.sleep(self.fetch_wait_ms / 1000), stop.wait())
                continue
            records, skipped = await self.feed.fetch(self.fetch_wait_ms, self.batch)
            partitions = set(records) | set(skipped)
            if self.changed.is_set():  # a partition went or came back meanwhile: its records
                now = self.positions()  # are read again once followed anew
                partitions = {p for p in partitions if p in now and now[p][0] == followed[p][0]}
            if partitions:
                with self.handling():
                    await asyncio.gather(
                        *(self.take(p, records.get(p, ()), skipped.get(p)) for p in partitions)
                    )


async def _first(*waits: Awaitable[object]) -> None:
    """Return once any of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
