"""The ingest loop on aiokafka: consume a batch, decide, produce, then commit.

**The rule: no record's content stops a partition or kills the process.** Every consumed
record ends as exactly one of: an accepted envelope, a review request, a dead letter (with its
``reason_class``), or a counted tombstone skip. Whatever the bytes of a key or a value, parsing
turns them into a prediction or a dead letter, and what ingest writes is valid JSON within
``kafka.max_record_bytes`` (``dispatch.py`` owns this and says why it holds; property tests in
``tests/unit/test_dispatch.py`` check it over arbitrary bytes). A batch the Kafka client cannot
decode is stepped over and dead-lettered as one stand-in (``reason_class`` ``undecodable``,
with its offsets); when stepping over it is impossible (its framing is unreadable) or wrong (a
codec library is missing from this installation), ingest counts it and exits with
:class:`~stream_router.errors.UndecodableRecords` naming the partition and offset
(``undecodable.py``). What does stop ingest is the infrastructure: a produce the brokers refuse
for good (an ACL; what is retriable is retried until they take it: ``kafka_clients.py``), a
bug.

One batch at a time::

    getmany ──► parse (bad → dead letter) ──► Routes.decide ──► produce
        accepted        → output topic, keyed like the input
        review          → review-requests topic, keyed by the human loop name
        malformed       → dead-letter topic, keyed like the input
        tombstone       → skipped and counted (or a dead letter: ``ingest.tombstones``)
    ──► wait for every produce to be acknowledged ──► commit the batch's offsets

Offsets are committed only after the broker acknowledged every record the batch produced, so a
crash at any point replays the batch (at-least-once). Deciding the next batch overlaps the
acknowledgements of the previous ones (``max_in_flight_batches``), and the commits: one task
commits, in batch order, what is acknowledged, everything acknowledged while a commit was under
way together in the next one. A decision never waits for a commit's round trip (which was a
quarter of the decision latency's p99 at half load), and a stop, a rebalance or a death waits
for the commits of what is acknowledged (:meth:`Ingest.drain`).
Replays are harmless for reviews: a review request's key is the deterministic loop name, and the
review path starts each name once.
Ingest never waits on AWS.

Several instances share the input partitions through the consumer group. ``run`` returns when
``stop`` is set, after finishing the batch in hand (SIGTERM drains), or ``ingest.drain_timeout_s``
after ``stop`` when the broker cannot take the batches in hand: they stay uncommitted and are
consumed again after the restart (at-least-once), which the log says.

Whether a broker answers is not what a completed ``getmany`` says: it returns empty after its
timeout whether or not any broker answered. aiokafka fetches in the background and records, per
partition, when a broker last answered a fetch (``last_poll_timestamp``, empty answers
included); :meth:`Ingest.fetches_answered` reports that for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError

from stream_router.errors import OutputTopicGone, UndecodableRecords
from stream_router.ingest.dispatch import BatchOutcome, Counts, Dispatcher, Skipped
from stream_router.ingest.undecodable import Undecodable, describe, locate
from stream_router.ingest.writer import BatchWriter
from stream_router.kafka_clients import (
    RetryingProducer,
    acknowledged,
    consumer_options,
    producer_options,
    say_unacknowledged,
    stop_consumer,
    stop_producer,
)
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.settings import IngestSettings, KafkaSettings

logger = logging.getLogger(__name__)

__all__ = ["BatchOutcome", "Ingest"]

Fetched = dict[TopicPartition, list[ConsumerRecord]]


@dataclass
class _InFlight:
    """A produced batch waiting for its acknowledgements before its offsets are committed."""

    outcome: BatchOutcome
    acks: list[asyncio.Future[Any]]
    #: Event timestamps of the batch's predictions (the events themselves are not kept).
    timestamps: list[float]
    started: float
    produced_s: float  #: clock time its records were handed to the producer

    @property
    def outputs(self) -> str:
        """What waits, as the warning of an unacknowledged write names it."""
        return f"the outputs of a batch of {self.outcome.consumed} events"


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
        self.ingest.assigned_at = self.ingest.clock()
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
        consumer: AIOKafkaConsumer | None = None,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        """``consumer`` and ``producer`` replace the clients these settings make (for tests)."""
        self.kafka = kafka
        self.settings = settings
        self.routes = routes
        self.metrics = metrics
        self.clock = clock
        if consumer is None:
            consumer = AIOKafkaConsumer(
                group_id=settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset=settings.auto_offset_reset,
                max_poll_records=settings.batch_max_records,
                **consumer_options(kafka),
            )
        if producer is None:
            producer = RetryingProducer(**producer_options(kafka))
        self.consumer = consumer
        self.producer = producer
        self.writer = BatchWriter(self.producer)
        metrics.unacknowledged.set_function(self._unacknowledged_s)
        self.dispatcher = Dispatcher(
            settings, kafka.max_record_bytes, routes, self.writer, clock=clock
        )
        self._output_topics = [
            settings.output_topic,
            settings.review_requests_topic,
            settings.dead_letter_topic,
        ]
        self.batches = 0
        self.last_progress_s: float | None = None
        #: Clock time of the latest assignment (a partition's fetches count from there).
        self.assigned_at: float | None = None
        self._routes_started = False
        self._next_offsets: dict[TopicPartition, int] = {}
        #: Set while this instance owns partitions (after a rebalance assigned some).
        self.assigned = asyncio.Event()
        self._in_flight: deque[_InFlight] = deque()
        self._settling = asyncio.Lock()
        #: Acknowledged offsets not committed yet, and the task committing them.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._missing: set[str] = set()  #: output topics the last check did not find
        self._checked_s = 0.0  #: clock time of the last check of an unblocked wait

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions are no longer ours: stop reporting their lag."""
        for tp in partitions:
            if self._next_offsets.pop(tp, None) is not None:
                with contextlib.suppress(KeyError):  # no lag reported yet
                    self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self.assigned.clear()

    async def start(self) -> None:
        """Start the policies and both clients; a failure closes what was opened, then raises.

        The partitions of the output topics are looked up here, all at once, before the
        consumer joins its group: the first batch does not wait for them.
        """
        try:
            self.routes.start()
            self._routes_started = True
            await self.producer.start()
            await self.writer.look_up(self._output_topics)
            self.consumer.subscribe(self.settings.input_topics, listener=_Listener(self))
            await self.consumer.start()
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "ingest consuming %s as group %s",
            ", ".join(self.settings.input_topics),
            self.settings.group_id,
        )

    async def stop(self) -> None:
        """Leave the group and close both clients; offsets of finished batches are committed.

        Safe before :meth:`start`, after a failed start and twice: every path that built an
        ingest calls it, so no client is left unclosed. With no broker answering it does not
        wait on one (``kafka_clients.py``).
        """
        try:
            await stop_consumer(self.consumer)
        finally:
            try:
                await stop_producer(self.producer)
            finally:
                if self._routes_started:
                    self._routes_started = False
                    self.routes.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Handle batches until ``stop`` is set; batches in hand are finished and committed.

        Once ``stop`` is set, finishing gets ``ingest.drain_timeout_s``: past it the batches in
        hand are given up uncommitted (consumed again after the restart) and ``run`` returns.
        """
        work = asyncio.ensure_future(self._handle(stop))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await asyncio.wait({work}, timeout=self.settings.drain_timeout_s)
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
                self._gave_up()
                return
            work.result()  # its exception, if it died
            logger.info("stopping: the batch in hand is finished and committed")
        finally:
            stopped.cancel()
            if not work.done():  # run itself was cancelled
                work.cancel()
                await asyncio.wait({work})
                self.cancel_commits()

    async def _handle(self, stop: asyncio.Event) -> None:
        timeout_ms = int(self.settings.fetch_wait_s * 1000)
        try:
            while not stop.is_set():
                batch, skipped = await self.fetch(timeout_ms)
                self.last_progress_s = self.clock()
                if batch or skipped:
                    await self.submit(batch, skipped)
                else:
                    await self.settle(block=False)
        except Exception:
            await self.drain()  # commit what was acknowledged before dying
            raise
        await self.drain()  # not when cancelled: a cancelled drain must not start again

    def _gave_up(self) -> None:
        partitions = sorted({tp for done in self._in_flight for tp in done.outcome.committed})
        held = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
        logger.warning(
            "stopping without finishing: Kafka at %s did not acknowledge or commit the batches "
            "in hand within ingest.drain_timeout_s (%g s) of the stop (%s); they are not "
            "committed, so their records are consumed again after the restart (at-least-once)",
            self.kafka.bootstrap_servers,
            self.settings.drain_timeout_s,
            f"{len(self._in_flight)} produced, of {held}" if held else "one being produced",
        )
        self._in_flight.clear()
        self.cancel_commits()

    @property
    def brokers(self) -> str:
        """The cluster's address as configured (``kafka.bootstrap_servers``), for messages."""
        return self.kafka.bootstrap_servers

    def fetches_answered(self) -> dict[str, float]:
        """When a broker last answered a fetch of each owned partition (clock seconds), by
        ``topic[partition]``; a partition not answered since its assignment counts from it."""
        since = self.assigned_at if self.assigned_at is not None else self.clock()
        answered: dict[str, float] = {}
        for tp in self.consumer.assignment():
            at_ms = self.consumer.last_poll_timestamp(tp)
            answered[f"{tp.topic}[{tp.partition}]"] = (
                since if at_ms is None else max(since, at_ms / 1000)
            )
        return answered

    def _overdue(self, oldest: _InFlight) -> None:
        """While the oldest batch waits unblocked (nothing more to decide), what a blocked
        wait does every ``kafka.request_timeout_s``: say so, and check the outputs exist."""
        now, every_s = self.clock(), self.kafka.request_timeout_s
        if now - oldest.produced_s < every_s or now - self._checked_s < every_s:
            return
        self._checked_s = now
        say_unacknowledged(self.kafka.bootstrap_servers, oldest.outputs, now - oldest.produced_s)
        self._outputs_exist()

    def _outputs_exist(self) -> None:
        """Raise :class:`OutputTopicGone` when an output topic was missing from the producer's
        metadata at two checks in a row (checks come ``kafka.request_timeout_s`` apart while
        a batch waits). A deleted topic's writes would wait forever; a cluster that is down
        keeps its topics in the metadata the producer last had."""
        cluster = getattr(self.producer, "client", None)
        known = cluster.cluster.partitions_for_topic if cluster is not None else None
        missing = {t for t in self._output_topics if known is not None and known(t) is None}
        gone, self._missing = missing & self._missing, missing
        if gone:
            raise OutputTopicGone(
                f"ingest's output topic(s) {', '.join(sorted(gone))} no longer exist on Kafka at "
                f"{self.kafka.bootstrap_servers}; recreate them (stream-router topics create)"
            )

    def _unacknowledged_s(self) -> float:
        since = self.unacknowledged_since()
        return 0.0 if since is None else max(0.0, self.clock() - since)

    def unacknowledged_since(self) -> float | None:
        """Clock time the oldest batch still waiting for acknowledgements was produced."""
        for batch in self._in_flight:  # in order: the first one not acknowledged is the oldest
            if not all(ack.done() for ack in batch.acks):
                return batch.produced_s
        return None

    async def fetch(self, timeout_ms: int) -> tuple[Fetched, list[Skipped]]:
        """The next records, and the undecodable offsets stepped over (see the module doc)."""
        try:
            batch = await self.consumer.getmany(
                timeout_ms=timeout_ms, max_records=self.settings.batch_max_records
            )
        except Exception as exc:
            where = locate(exc)
            if where is None:
                raise  # not a record the client could not decode
            return self._step_over(exc, where)
        return batch, []

    def _step_over(self, exc: Exception, where: Undecodable) -> tuple[Fetched, list[Skipped]]:
        """Records the failed fetch took, and the stand-in of the batch it could not decode."""
        tp = where.tp
        reason = describe(exc, where)
        if not where.skippable:
            self.metrics.undecodable.labels(tp.topic, "fatal").inc()
            if where.missing_codec is not None:
                hint = f"install the {where.missing_codec} codec (aiokafka decodes it with cramjam)"
            else:
                hint = "ingest cannot step over it; to give those records up, move the group's "
                hint += f"offset of {tp.topic}[{tp.partition}] past them"
            raise UndecodableRecords(f"{reason}: {hint}") from exc
        assert where.next_offset is not None  # skippable
        if tp not in self.consumer.assignment():  # revoked meanwhile: its next owner meets it
            return where.taken, []
        self.metrics.undecodable.labels(tp.topic, "skipped").inc()
        self.consumer.seek(tp, where.next_offset)
        return where.taken, [Skipped(tp, where.position, where.next_offset, reason)]

    async def handle(self, batch: Fetched, skipped: Sequence[Skipped] = ()) -> BatchOutcome:
        """Decide, produce and commit one batch, and wait until it is committed."""
        outcome = await self.submit(batch, skipped)
        await self.drain()
        return outcome

    async def submit(self, batch: Fetched, skipped: Sequence[Skipped] = ()) -> BatchOutcome:
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
            outcome = self.dispatcher.dispatch(batch, skipped)
        finally:
            if collecting:
                gc.enable()
        acks = await self.writer.flush()
        self._in_flight.append(_InFlight(outcome, acks, outcome.timestamps, started, self.clock()))
        self._record_decisions(outcome.counts)
        await self.settle(block=len(self._in_flight) > self.settings.max_in_flight_batches)
        return outcome

    async def settle(self, *, block: bool) -> None:
        """Hand the oldest batches whose produces are all acknowledged to the committer.

        With ``block`` it waits for the oldest batch, so at most ``max_in_flight_batches`` stay.
        A commit that failed (other than for a rebalance) raises here.
        """
        async with self._settling:  # the rebalance listener settles too
            self._check_commits()
            while self._in_flight:
                oldest = self._in_flight[0]
                if not block and not all(ack.done() for ack in oldest.acks):
                    self._overdue(oldest)
                    return
                # A failed produce raises: nothing committed. The producer retries what it can
                # until the brokers take it (kafka_clients.py); meanwhile no fetch completes.
                await acknowledged(
                    oldest.acks,
                    oldest.outputs,
                    self.kafka.bootstrap_servers,
                    self.kafka.request_timeout_s,
                    check=self._outputs_exist,
                )
                acknowledged_s = self.clock()
                self._in_flight.popleft()
                self._to_commit(oldest.outcome.committed)
                self._record_completion(oldest, acknowledged_s)
                block = False

    async def drain(self) -> None:
        """Wait for every batch in flight, and for the commits of all of them."""
        while self._in_flight:
            await self.settle(block=True)
        committing = self._committing
        if committing is not None:
            await asyncio.shield(committing)  # a cancelled drain leaves it to finish
            self._check_commits()

    def _to_commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets of an acknowledged batch, committed after those handed before them."""
        uncommitted = self._uncommitted
        for tp, offset in offsets.items():
            uncommitted[tp] = max(offset, uncommitted.get(tp, offset))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.ensure_future(self._commit_all())

    async def _commit_all(self) -> None:
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            await self._commit(offsets)

    def _check_commits(self) -> None:
        """Raise the failure of the last commit task, if it failed."""
        committing = self._committing
        if committing is not None and committing.done() and not committing.cancelled():
            committing.result()

    def cancel_commits(self) -> None:
        """Stop committing (a stop given up on: what is not committed is consumed again)."""
        if self._committing is not None:
            self._committing.cancel()
        self._uncommitted.clear()

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

    def _record_decisions(self, counts: Counts) -> None:
        metrics = self.metrics
        metrics.count(metrics.consumed, counts.consumed)
        metrics.count(metrics.accepted, counts.accepted)
        metrics.count(metrics.review_requested, counts.review_requested)
        metrics.count(metrics.dead_lettered, counts.dead_lettered)
        metrics.count(metrics.tombstones_skipped, counts.tombstones_skipped)
        metrics.count(metrics.shadow_hits, counts.shadow_hits)

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
