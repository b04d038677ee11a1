"""The review role's own Kafka reads and ledger writes, outside faust's consumer: the adapter
between the review core (``review/``, which imports no Kafka client) and the broker.

:class:`RequestFeed` is review-requests as the intake reads it (``review/intake.py``): a plain
aiokafka consumer in the role's event loop, no group and no commits, assigned the partitions
whose ledgers are read and reading each from the intake position its ledger holds. faust's
group assigns the partitions (through loop-events, partitioned alike) but never reads
review-requests: its consumer's machinery (a thread, a task and an acknowledgement per
message) was most of the CPU a request cost.

:class:`PartitionReader` reads with another plain consumer (no group membership, no commits):

- the ledger topic's partitions, whole, when they are assigned (``review/ledger.py``);
- a range of review-requests the intake did not deliver (``review/scheduler.py``: the offsets
  of a partition are contiguous, so a jump is a gap to re-read);
- end offsets and the timestamp of the oldest request not yet recorded, for the backlog metrics
  and readiness, and the group's commits that a ledger written before intake positions existed
  resumes from.

Reads take turns (one consumer, assigned the partition being read). Kafka's own errors become
:class:`~stream_router.errors.UpstreamError` here (retriable), so the review core handles one
error tree. :class:`KafkaLedgerLog` is the ledger (``review/ledger.py``'s ``LedgerLog``) on its
compacted topic: it writes through the role's producer and reads with the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from stream_router.errors import UndecodableRecords, UpstreamError
from stream_router.ingest.undecodable import Undecodable, describe, locate
from stream_router.kafka_clients import (
    CLOSE_TIMEOUT_S,
    Waits,
    acknowledged,
    client_options,
    stop_consumer,
)
from stream_router.review.intake import Fetched
from stream_router.review.ledger import Send
from stream_router.review.scheduler import Skipped
from stream_router.settings import KafkaSettings

READ_TIMEOUT_MS = 1_000

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Kafka's errors as the review core's: a retriable :class:`UpstreamError`; so are records
    the client cannot decode (the intake steps over them: ``RequestFeed.fetch``)."""
    try:
        yield
    except KafkaError as exc:
        raise UpstreamError(f"Kafka: {what} failed: {exc}") from exc
    except Exception as exc:
        if locate(exc) is None:
            raise
        raise UpstreamError(
            f"Kafka: {what} failed: a record batch cannot be decoded ({exc!r})"
        ) from exc


class PartitionReader:
    """A plain consumer and an admin client of the review role; see the module docstring.

    ``topic`` is review-requests and ``group`` the review application's consumer group (whose
    commits :meth:`start_offset` reads); :meth:`read` reads any topic.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, group: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.group = group
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._turn = asyncio.Lock()

    async def start(self) -> None:
        options = client_options(self.kafka)
        self._consumer = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", **options
        )
        self._admin = AIOKafkaAdminClient(**options)
        await self._consumer.start()
        await self._admin.start()

    async def stop(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        if consumer is not None:
            await stop_consumer(consumer)  # bounded, whatever the broker does
        if admin is not None:
            try:
                await asyncio.wait_for(admin.close(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                logger.warning("closing the ledger reader's admin client timed out; going on")

    def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("PartitionReader used before start()")
        return self._consumer

    async def read(
        self, topic: str, partition: int, start: int | None, stop: int | None
    ) -> AsyncGenerator[Any, None]:
        """Records of the partition from ``start`` (None: its beginning) up to ``stop`` (None:
        its end offset when called), in order. Offsets without a record (compacted away,
        transaction markers) are passed over: the read ends when the position reaches ``stop``.
        """
        async with contextlib.aclosing(self.read_batches(topic, partition, start, stop)) as read:
            async for batch in read:
                for record in batch:
                    yield record

    async def read_batches(
        self, topic: str, partition: int, start: int | None, stop: int | None
    ) -> AsyncGenerator[list[Any], None]:
        """:meth:`read`, the records as the client fetched them (lists, in order)."""
        consumer = self._client()
        tp = TopicPartition(topic, partition)
        async with self._turn:
            batches = self._batches(consumer, tp, start, stop)
            with _translated(f"reading {topic}[{partition}]"):
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        yield batch

    @staticmethod
    async def _batches(
        consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None, stop: int | None
    ) -> AsyncGenerator[list[Any], None]:
        consumer.assign([tp])
        if stop is None:
            stop = (await consumer.end_offsets([tp]))[tp]
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        while await consumer.position(tp) < stop:
            fetched = (await consumer.getmany(tp, timeout_ms=READ_TIMEOUT_MS)).get(tp, [])
            if fetched and fetched[-1].offset >= stop:
                yield [record for record in fetched if record.offset < stop]
                return
            if fetched:
                yield fetched

    async def bounds(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(beginning, end) offsets of each partition."""
        consumer = self._client()
        tps = [TopicPartition(topic, p) for p in partitions]
        with _translated(f"the offsets of {topic}"):
            begins = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        return {tp.partition: (begins[tp], ends[tp]) for tp in tps}

    async def committed(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """The group's committed offsets (partitions without a commit are left out)."""
        if self._admin is None:
            raise RuntimeError("PartitionReader used before start()")
        tps = [TopicPartition(topic, p) for p in partitions]
        with _translated(f"the commits of group {group}"):
            offsets = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def start_offset(self, partition: int, position: int | None) -> int:
        """Where the intake resumes ``partition`` of review-requests: the ledger's ``position``
        or the group's commit (a ledger written before positions existed; faust committed
        then), whichever is further, else the partition's beginning. A position before the
        beginning (retention deleted those records) resumes at the beginning; one past the end
        (the topic was recreated) too, with a warning: everything is read again, and what was
        recorded before is recognised as such."""
        committed = await self.committed(self.group, self.topic, [partition])
        begin, end = (await self.bounds(self.topic, [partition]))[partition]
        resume = max(position or 0, committed.get(partition, 0))
        if resume > end:
            logger.warning(
                "review-requests partition %d: the ledger's intake position %d is past the "
                "partition's end %d (was the topic recreated?); reading it from its beginning",
                partition, resume, end,
            )  # fmt: skip
            return begin
        return max(resume, begin)

    async def ensure_topic(
        self, topic: str, partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> bool:
        """Create ``topic`` unless it exists; True if it was created."""
        if self._admin is None:
            raise RuntimeError("PartitionReader used before start()")
        if topic in await self._admin.list_topics():
            return False
        reply = await self._admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, topic_configs=configs)]
        )
        for _, code, message in reply.topic_errors:
            if code not in (0, 36):  # 36: it exists (created meanwhile)
                raise RuntimeError(f"cannot create topic {topic}: {message or code}")
        return True

    async def timestamp_at(self, topic: str, partition: int, offset: int) -> float | None:
        """The timestamp (epoch seconds) of the first record at or after ``offset``."""
        async with contextlib.aclosing(self.read(topic, partition, offset, None)) as records:
            async for record in records:
                return float(record.timestamp) / 1000
        return None


class RequestFeed:
    """Review-requests for the intake (see the module docstring): :meth:`follow` the
    partitions to read, :meth:`fetch` what arrived."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._following: dict[int, int] = {}  # partition -> the serial of its assignment

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", **client_options(self.kafka)
        )
        await self._consumer.start()

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)

    def following(self) -> bool:
        return bool(self._following)

    def follow(self, positions: Mapping[int, tuple[int, int]]) -> None:
        """Read the partitions of ``positions`` (partition: the serial of its assignment, the
        next offset to record). When they change, each is read again from its offset: a
        caller changes them only once what it was handed is recorded."""
        following = {partition: serial for partition, (serial, _) in positions.items()}
        if following == self._following:
            return
        consumer = self._client()
        consumer.assign([TopicPartition(self.topic, p) for p in following])
        for partition, (_, offset) in positions.items():  # assign() forgot every position
            consumer.seek(TopicPartition(self.topic, partition), offset)
        self._following = following

    async def fetch(self, timeout_ms: int, max_records: int) -> Fetched:
        """What arrived on the partitions followed, by partition and in offset order; waits up
        to ``timeout_ms`` for the first record.

        A record batch the client cannot decode (``ingest/undecodable.py``) is stepped over:
        the records taken before it are returned with the range it spans (``skipped``), for the
        scheduler to dead-letter as one stand-in before the partition's position passes it.
        One that cannot be stepped over (its extent unknown, a codec missing here) raises
        :class:`~stream_router.errors.UndecodableRecords` naming the partition and offset.
        """
        consumer = self._client()
        try:
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:
            where = locate(exc)
            if where is not None:
                return self._step_over(exc, where)
            if isinstance(exc, KafkaError):
                raise UpstreamError(f"Kafka: reading {self.topic} failed: {exc}") from exc
            raise
        return Fetched({tp.partition: records for tp, records in fetched.items() if records})

    def _step_over(self, exc: Exception, where: Undecodable) -> Fetched:
        reason = describe(exc, where)
        if not where.skippable:
            if where.missing_codec is not None:
                hint = f"install the {where.missing_codec} codec (aiokafka decodes it with cramjam)"
            else:
                hint = "the review role cannot step over it; to give those records up, write the "
                hint += "partition's intake position past them"
            raise UndecodableRecords(f"{reason}: {hint}") from exc
        assert where.next_offset is not None  # skippable
        taken = {tp.partition: records for tp, records in where.taken.items() if records}
        tp = where.tp
        if tp not in self._client().assignment():  # no longer followed: its next read meets it
            return Fetched(taken)
        self._client().seek(tp, where.next_offset)
        skipped = Skipped(where.position, where.next_offset, reason)
        return Fetched(taken, {tp.partition: skipped})

    def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("RequestFeed used before start()")
        return self._consumer


class KafkaLedgerLog:
    """The ledger (``review.ledger.LedgerLog``) on its topic: writes through ``send`` (the
    role's producer), reads with ``reader``."""

    def __init__(self, topic: str, send: Send, reader: PartitionReader) -> None:
        self.topic = topic
        self._send = send
        self._reader = reader
        #: Writes waiting for the brokers (``stream_router_review_ledger_unacknowledged_seconds``).
        self.waits = Waits()

    async def write(self, partition: int, key: str, value: bytes | None) -> None:
        delivered = await self._send(self.topic, partition, key.encode(), value)
        await self._acknowledged([delivered], partition, 1)

    async def write_many(self, partition: int, records: Sequence[tuple[str, bytes | None]]) -> None:
        # Every record is with the producer before the first acknowledgement is awaited: they
        # travel in as few requests as the producer's batches allow.
        topic, send = self.topic, self._send
        delivered = [await send(topic, partition, key.encode(), value) for key, value in records]
        await self._acknowledged(delivered, partition, len(records))

    async def _acknowledged(self, delivered: list[Any], partition: int, count: int) -> None:
        """The producer retries until the brokers take the writes (``kafka_clients.py``); the
        log says what waits meanwhile."""
        kafka = self._reader.kafka
        what = f"{count} ledger write(s) to {self.topic}[{partition}]"
        await acknowledged(
            delivered, what, kafka.bootstrap_servers, kafka.request_timeout_s, waits=self.waits
        )

    async def read(self, partition: int) -> AsyncIterator[list[tuple[str, bytes | None]]]:
        async with contextlib.aclosing(
            self._reader.read_batches(self.topic, partition, None, None)
        ) as batches:
            async for batch in batches:
                yield [(r.key.decode(), r.value) for r in batch if r.key is not None]
