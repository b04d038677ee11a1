"""The ingest loop on aiokafka: consume a batch, decide, produce, then commit.

One batch at a time::

    getmany ──► parse (bad → dead letter) ──► Routes.decide ──► produce
        accepted        → output topic, keyed like the input
        review          → review-requests topic, keyed by the human loop name
        malformed       → dead-letter topic, keyed like the input
    ──► wait for every produce to be acknowledged ──► commit the batch's offsets

Offsets are committed only after the broker acknowledged every record the batch produced, so a
crash at any point replays the batch (at-least-once). Deciding the next batch overlaps the
acknowledgements of the previous ones (``max_in_flight_batches``); commits stay in batch order.
Replays are harmless for reviews: a review request's key is the deterministic loop name, and the
review path starts each name once.
Ingest never waits on AWS.

Several instances share the input partitions through the consumer group. ``run`` returns when
``stop`` is set, after finishing the batch in hand (SIGTERM drains).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError

from stream_router.envelope import accepted_envelope, dead_letter, review_request
from stream_router.errors import PoisonEvent
from stream_router.ingest.parser import EventParser
from stream_router.ingest.writer import BatchWriter
from stream_router.metrics import IngestMetrics
from stream_router.models import Prediction, SourceRef
from stream_router.naming import loop_name
from stream_router.policies.routes import Decision, Routes
from stream_router.settings import IngestSettings, KafkaSettings

logger = logging.getLogger(__name__)

#: A record that could not be parsed, where it came from and why.
_Dead = tuple[ConsumerRecord, SourceRef, PoisonEvent]


@dataclass
class BatchOutcome:
    """What one batch did (for tests and logs)."""

    consumed: int = 0
    accepted: int = 0
    review_requested: int = 0
    dead_lettered: int = 0
    committed: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class _InFlight:
    """A produced batch waiting for its acknowledgements before its offsets are committed."""

    outcome: BatchOutcome
    acks: list[asyncio.Future[Any]]
    #: Event timestamps of the batch's predictions (the events themselves are not kept).
    timestamps: list[float]
    started: float


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tracks ownership of partitions for readiness, and forgets lag of revoked ones."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Commit what is acknowledged while the partitions are still ours.
        await self.ingest.drain()
        self.ingest.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        logger.info("assigned %d partitions", len(assigned))
        if assigned:
            self.ingest.assigned.set()


class Ingest:
    """Consumes predictions and routes them; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: IngestSettings,
        routes: Routes,
        metrics: IngestMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.routes = routes
        self.metrics = metrics
        self.clock = clock
        self.parser = EventParser(settings.mapping)
        self.consumer = AIOKafkaConsumer(
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_records=settings.batch_max_records,
            **kafka.consumer_options(),
        )
        self.producer = AIOKafkaProducer(
            acks="all",
            max_batch_size=kafka.producer_batch_max_bytes,
            **kafka.client_options(),
        )
        self.writer = BatchWriter(self.producer)
        self._output_topics = [
            settings.output_topic,
            settings.review_requests_topic,
            settings.dead_letter_topic,
        ]
        self.batches = 0
        self.last_progress_s: float | None = None
        self._next_offsets: dict[TopicPartition, int] = {}
        #: Set while this instance owns partitions (after a rebalance assigned some).
        self.assigned = asyncio.Event()
        self._in_flight: deque[_InFlight] = deque()
        self._settling = asyncio.Lock()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions are no longer ours: stop reporting their lag."""
        for tp in partitions:
            if self._next_offsets.pop(tp, None) is not None:
                with contextlib.suppress(KeyError):  # no lag reported yet
                    self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self.assigned.clear()

    async def start(self) -> None:
        self.routes.start()
        await self.producer.start()
        try:
            self.consumer.subscribe(self.settings.input_topics, listener=_Listener(self))
            await self.consumer.start()
        except BaseException:
            await self.producer.stop()
            raise
        logger.info(
            "ingest consuming %s as group %s",
            ", ".join(self.settings.input_topics),
            self.settings.group_id,
        )

    async def stop(self) -> None:
        """Leave the group and flush; offsets of finished batches are already committed."""
        try:
            await self.consumer.stop()
        finally:
            await self.producer.stop()
            self.routes.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Handle batches until ``stop`` is set; batches in hand are finished and committed."""
        timeout_ms = int(self.settings.fetch_wait_s * 1000)
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=timeout_ms, max_records=self.settings.batch_max_records
                )
                self.last_progress_s = self.clock()
                if batch:
                    await self.submit(batch)
                else:
                    await self.settle(block=False)
        finally:
            await self.drain()

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> BatchOutcome:
        """Decide, produce and commit one batch, and wait until it is committed."""
        outcome = await self.submit(batch)
        await self.drain()
        return outcome

    async def submit(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> BatchOutcome:
        """Decide and produce one batch; its commit follows once the broker acknowledged it.

        Up to ``max_in_flight_batches`` batches wait for acknowledgements at once, so deciding
        the next batch overlaps the broker's work on the previous ones. Commits stay in order.

        Parsing, deciding and encoding a batch allocate thousands of containers that reference
        counting frees; the cyclic garbage collector is paused for that synchronous stretch (no
        await inside) and runs once after it, instead of a dozen times in the middle of it
        (measured: about a sixth of ingest's CPU per event).
        """
        started = time.perf_counter()
        await self.writer.prepare(self._output_topics)
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            outcome, decisions, dead, consumed, timestamps = self._decide(batch)
        finally:
            if collecting:
                gc.enable()
        acks = await self.writer.flush()
        self._in_flight.append(_InFlight(outcome, acks, timestamps, started))
        self._record_decisions(decisions, dead, consumed)
        await self.settle(block=len(self._in_flight) > self.settings.max_in_flight_batches)
        return outcome

    def _decide(
        self, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> tuple[BatchOutcome, list[Decision], list[_Dead], Counter[tuple[str, ...]], list[float]]:
        """Parse, decide and append the batch's records to the writer (no I/O)."""
        now = self.clock()
        outcome = BatchOutcome()
        predictions: list[Prediction] = []
        dead: list[_Dead] = []
        consumed: Counter[tuple[str, ...]] = Counter()
        parse = self.parser.parse
        for tp, records in batch.items():
            consumed[(tp.topic,)] += len(records)
            outcome.committed[tp] = records[-1].offset + 1
            for record in records:
                source = SourceRef(
                    record.topic, record.partition, record.offset, record.key, record.timestamp
                )
                try:
                    predictions.append(parse(record.value, source))
                except PoisonEvent as poison:
                    dead.append((record, source, poison))
        outcome.consumed = sum(consumed.values())
        decisions = self.routes.decide(predictions)
        self._write(predictions, decisions, dead, now, outcome)
        timestamps = [p.timestamp_s for p in predictions if p.timestamp_s is not None]
        return outcome, decisions, dead, consumed, timestamps

    async def settle(self, *, block: bool) -> None:
        """Commit the oldest batches whose produces are all acknowledged.

        With ``block`` it waits for the oldest batch, so at most ``max_in_flight_batches`` stay.
        """
        async with self._settling:  # the rebalance listener settles too
            while self._in_flight:
                oldest = self._in_flight[0]
                if not block and not all(ack.done() for ack in oldest.acks):
                    return
                await asyncio.gather(*oldest.acks)  # a failed produce raises: nothing committed
                acknowledged = self.clock()
                await self._commit(oldest.outcome.committed)
                self._in_flight.popleft()
                self._record_completion(oldest, acknowledged)
                block = False

    async def drain(self) -> None:
        """Wait for every batch in flight and commit it."""
        while self._in_flight:
            await self.settle(block=True)

    def _write(
        self,
        predictions: Sequence[Prediction],
        decisions: Sequence[Decision],
        dead: Sequence[_Dead],
        now: float,
        outcome: BatchOutcome,
    ) -> None:
        settings = self.settings
        version = self.routes.version
        add = self.writer.add
        output, requests = settings.output_topic, settings.review_requests_topic
        for prediction, decision in zip(predictions, decisions, strict=True):
            if decision.review:
                name = loop_name(prediction.event_id, version)
                value = review_request(prediction, decision, version, name, now)
                add(requests, name.encode(), value)
                outcome.review_requested += 1
            else:
                value = accepted_envelope(prediction, decision, version, now)
                add(output, prediction.source.key, value)
                outcome.accepted += 1
        for record, source, poison in dead:
            value = dead_letter(record.value, source, poison.reason_class, str(poison), now)
            headers = [("x-stream-router-reason-class", poison.reason_class.encode())]
            add(settings.dead_letter_topic, record.key, value, headers)
            outcome.dead_lettered += 1
            logger.warning(
                "dead-lettered %s[%d]@%d: %s",
                source.topic,
                source.partition,
                source.offset,
                poison.reason_class,
            )

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        owned = self.consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not mine:
            return
        try:
            await self.consumer.commit(mine)
            self._next_offsets.update(mine)
        except CommitFailedError:
            # The group rebalanced while the batch was in hand: the new owner replays it.
            logger.warning("commit failed after a rebalance; the batch will be replayed")

    def _record_decisions(
        self,
        decisions: Sequence[Decision],
        dead: Sequence[_Dead],
        consumed: Counter[tuple[str, ...]],
    ) -> None:
        metrics = self.metrics
        metrics.count(metrics.consumed, consumed)
        accepted: Counter[tuple[str, ...]] = Counter()
        reviewed: Counter[tuple[str, ...]] = Counter()
        for decision in decisions:
            if decision.review:
                reviewed[(decision.route or "", decision.policy)] += 1
            else:
                accepted[(decision.policy,)] += 1
        metrics.count(metrics.accepted, accepted)
        metrics.count(metrics.review_requested, reviewed)
        metrics.count(metrics.dead_lettered, Counter((p.reason_class,) for _, _, p in dead))
        metrics.count(metrics.shadow_hits, self.routes.drain_shadow_hits())

    def _record_completion(self, done: _InFlight, acknowledged: float) -> None:
        metrics = self.metrics
        metrics.decision_latency.observe_many(
            [max(0.0, acknowledged - timestamp) for timestamp in done.timestamps]
        )
        for tp, next_offset in self._next_offsets.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - next_offset)
                )
        metrics.batch_duration.observe(time.perf_counter() - done.started)
        metrics.batch_size.observe(done.outcome.consumed)
        self.batches += 1
