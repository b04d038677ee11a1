"""The review-requests agent's intake: records go to the scheduler a batch at a time.

One acknowledged ledger write per record, made before the agent asks for the next, caps an
instance at a few hundred requests a second (a broker round trip each), and a model that
suddenly sends everything to review then takes hours to record what budgets and fallbacks can
act on. :class:`RequestIntake` reads review-requests as it arrives, acknowledgements off (the
framework's manual-ack stream), and while one batch is recorded the next gathers. A batch is
handed to :meth:`~stream_router.review.scheduler.ReviewScheduler.take_requests` per partition,
in offset order, which writes its entries together; once every partition's call returned, the
batch's records are acknowledged, in order.

Rule 1 of the scheduler (nothing is acknowledged before it is recorded) holds per record: a
record is acknowledged only after the call that recorded it returned. When recording fails,
the exception leaves :meth:`RequestIntake.run` with nothing of the batch, nor of what waits
behind it, acknowledged: the framework commits none of it, and the records are delivered again
(redeliveries are duplicates the scheduler recognises).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from stream_router.review.scheduler import INTAKE_BATCH, Delivered

E = TypeVar("E")

#: Takes one partition's records (``ReviewScheduler.take_requests``).
Take = Callable[[int, Sequence[Delivered]], Awaitable[bool]]


class _End:
    """The end of the stream (``error``: why it ended)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class RequestIntake(Generic[E]):
    """Batches of review-requests records to ``take``, each event acknowledged by ``ack`` once
    its batch is recorded (see the module docstring).

    ``record_of`` gives an event's partition and record; ``handling`` marks a batch in hand
    (the supervisor's stall watch). ``batch`` is the most records recorded together; as many
    again wait read while a batch is recorded.
    """

    def __init__(
        self,
        take: Take,
        ack: Callable[[E], Awaitable[object]],
        record_of: Callable[[E], tuple[int, Delivered]],
        *,
        handling: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        batch: int = INTAKE_BATCH,
    ) -> None:
        self.take = take
        self.ack = ack
        self.record_of = record_of
        self.handling = handling
        self.batch = batch

    async def run(self, events: AsyncIterable[E]) -> None:
        """Record and acknowledge ``events`` until they end (or recording fails: raises)."""
        queue: asyncio.Queue[E | _End] = asyncio.Queue(self.batch)
        reader = asyncio.ensure_future(self._read(events, queue))
        try:
            while True:
                batch: list[E] = []
                end: _End | None = None
                item = await queue.get()
                while True:
                    if isinstance(item, _End):
                        end = item
                        break
                    batch.append(item)
                    if len(batch) >= self.batch or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    await self._record(batch)
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, events: AsyncIterable[E], queue: asyncio.Queue[E | _End]) -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:  # handed to run(), which raises it after what came before
            await queue.put(_End(exc))
            return
        await queue.put(_End(None))

    async def _record(self, batch: list[E]) -> None:
        by_partition: dict[int, list[Delivered]] = {}
        for event in batch:
            partition, record = self.record_of(event)
            by_partition.setdefault(partition, []).append(record)
        with self.handling():
            await asyncio.gather(*(self.take(p, records) for p, records in by_partition.items()))
        for event in batch:
            await self.ack(event)
