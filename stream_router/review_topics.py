"""The review role's own Kafka reads and ledger writes, outside faust's consumer: the adapter
between the review core (``review/``, which imports no Kafka client) and the broker.

:class:`PartitionReader` reads with a plain aiokafka consumer (no group membership, no commits):

- the ledger topic's partitions, whole, when they are assigned (``review/ledger.py``);
- a range of review-requests that faust did not deliver (``review/scheduler.py``: the offsets
  of a partition are contiguous, so a jump is a gap to re-read);
- end offsets, the review group's committed offsets and the timestamp of the oldest request
  not yet recorded, for the backlog metrics and readiness.

Reads take turns (one consumer, assigned the partition being read). Kafka's own errors become
:class:`~stream_router.errors.UpstreamError` here (retriable), so the review core handles one
error tree. :class:`KafkaLedgerLog` is the ledger (``review/ledger.py``'s ``LedgerLog``) on its
compacted topic: it writes through the role's producer and reads with the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from stream_router.errors import UpstreamError
from stream_router.kafka_clients import CLOSE_TIMEOUT_S, client_options, stop_consumer
from stream_router.review.ledger import Send
from stream_router.settings import KafkaSettings

READ_TIMEOUT_MS = 1_000

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Kafka's errors as the review core's: a retriable :class:`UpstreamError`."""
    try:
        yield
    except KafkaError as exc:
        raise UpstreamError(f"Kafka: {what} failed: {exc}") from exc


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
        consumer = self._client()
        tp = TopicPartition(topic, partition)
        async with self._turn:
            records = self._records(consumer, tp, start, stop)
            with _translated(f"reading {topic}[{partition}]"):
                async with contextlib.aclosing(records):
                    async for record in records:
                        yield record

    @staticmethod
    async def _records(
        consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None, stop: int | None
    ) -> AsyncGenerator[Any, None]:
        consumer.assign([tp])
        if stop is None:
            stop = (await consumer.end_offsets([tp]))[tp]
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        while await consumer.position(tp) < stop:
            batches = await consumer.getmany(tp, timeout_ms=READ_TIMEOUT_MS)
            for record in batches.get(tp, []):
                if record.offset >= stop:
                    return
                yield record

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

    async def start_offset(self, partition: int) -> int:
        """Where the group resumes ``partition`` of review-requests: its commit, else the
        partition's beginning."""
        committed = await self.committed(self.group, self.topic, [partition])
        if partition in committed:
            return committed[partition]
        return (await self.bounds(self.topic, [partition]))[partition][0]

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


class KafkaLedgerLog:
    """The ledger (``review.ledger.LedgerLog``) on its topic: writes through ``send`` (the
    role's producer), reads with ``reader``."""

    def __init__(self, topic: str, send: Send, reader: PartitionReader) -> None:
        self.topic = topic
        self._send = send
        self._reader = reader

    async def write(self, partition: int, key: str, value: bytes | None) -> None:
        await (await self._send(self.topic, partition, key.encode(), value))

    async def write_many(self, partition: int, records: Sequence[tuple[str, bytes | None]]) -> None:
        # Every record is with the producer before the first acknowledgement is awaited: they
        # travel in as few requests as the producer's batches allow.
        topic, send = self.topic, self._send
        delivered = [await send(topic, partition, key.encode(), value) for key, value in records]
        await asyncio.gather(*delivered)

    async def read(self, partition: int) -> AsyncIterator[tuple[str, bytes | None]]:
        async for record in self._reader.read(self.topic, partition, None, None):
            if record.key is not None:
                yield record.key.decode(), record.value
