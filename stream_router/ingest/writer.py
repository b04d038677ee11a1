"""Batched produce: records appended to per-partition batches, submitted once per ingest batch.

Producing one record at a time through ``AIOKafkaProducer.send`` costs a coroutine, a future and
an accumulator call per record. Ingest instead fills one ``BatchBuilder`` per (topic, partition)
and submits each with ``send_batch``: same partitioning (the default murmur2 partitioner, as the
Java client and ``send`` use), same per-partition order, far less work per record.

The partition of a keyed record is Kafka's murmur2 of the key, as in the Java client:
``(murmur2(key) & 0x7FFFFFFF) % partitions``. librdkafka computes it in C, and confluent-kafka
exposes that (``confluent_kafka.murmur2(key, partitions)``, 2.13 on): a twentieth of the
pure-Python hash's cost, which grows with the key (3 µs for a 60-byte human loop name). Where
confluent-kafka cannot be imported, :func:`murmur2` here computes the same (aiokafka's
pure-Python version reads the key a byte at a time; this one reads it as little-endian 32-bit
words in one ``struct`` call). Tests compare all three.

The partitions of the topics written to are looked up once at start-up, all at once
(:meth:`BatchWriter.look_up`), then read for every batch from the client's metadata
(:meth:`BatchWriter.prepare`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

Headers = list[tuple[str, bytes]]
#: The headers of a record without any (one list for all: the batch builder only reads it).
_NO_HEADERS: Headers = []

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (unsigned 32 bits), as the Java client computes it."""
    length = len(data)
    h = _SEED ^ length
    count = length >> 2
    if count:
        words = _WORDS.get(count)
        if words is None:
            words = _WORDS[count] = struct.Struct(f"<{count}I")
        for word in words.unpack_from(data):
            k = (word * _M) & _MASK
            k = ((k ^ (k >> 24)) * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_by_hash(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for a key among ``partitions``, in Python."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _key_partitioner() -> Callable[[bytes, int], int]:
    try:
        from confluent_kafka import murmur2 as librdkafka_murmur2  # noqa: PLC0415
    except ImportError:  # a dependency, but the Python twin is the reference
        return partition_by_hash
    return librdkafka_murmur2


#: The partition of a keyed record: ``(key, partition count) -> index`` (see the module doc).
key_partition = _key_partitioner()


class BatchWriter:
    """Collects the records of one ingest batch; ``flush`` submits them and returns the acks."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[str, int, Any]] = []

    async def look_up(self, topics: Sequence[str]) -> None:
        """Look up the partitions of ``topics`` concurrently, so that the client's metadata
        holds them before the first batch (for topics new to the client, one round of metadata
        requests for all, instead of one after another inside the first batch)."""
        found = await asyncio.gather(*(self.producer.partitions_for(topic) for topic in topics))
        for topic, partitions in zip(topics, found, strict=True):
            self._partitions[topic] = sorted(partitions)

    async def prepare(self, topics: Sequence[str]) -> None:
        """Look up the partitions of the topics this batch writes to.

        Read for every batch from the client's metadata (no request unless it is missing or
        stale: after :meth:`look_up`, no wait), so added partitions are used from the next
        batch on.
        """
        for topic in topics:
            self._partitions[topic] = sorted(await self.producer.partitions_for(topic))

    def add(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        """Append a record to its partition's batch (``prepare`` must have seen the topic)."""
        partitions = self._partitions[topic]
        if key is None:
            partition = self.partitioner(key, partitions, partitions)
        else:  # the default partitioner's choice, with the faster hash
            partition = partitions[key_partition(key, len(partitions))]
        slot = (topic, partition)
        builder = self._open.get(slot)
        if builder is None:
            builder = self._open[slot] = self.producer.create_batch()
        if headers is None:
            headers = _NO_HEADERS
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full: keep it for flush and start another (a lone record always fits).
            self._full.append((topic, partition, builder))
            builder = self._open[slot] = self.producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Submit every batch, in append order per partition; the futures resolve on ack."""
        batches = [*self._full, *((t, p, b) for (t, p), b in self._open.items())]
        self._full = []
        self._open = {}
        send = self.producer.send_batch
        return [
            await send(builder, topic, partition=partition) for topic, partition, builder in batches
        ]
