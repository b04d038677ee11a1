"""Batched produce: records appended to per-partition batches, sent once per ingest batch.

Producing one record at a time through ``AIOKafkaProducer.send`` costs a coroutine, a future and
an accumulator call per record. Ingest instead fills one ``BatchBuilder`` per (topic, partition)
and submits each with ``send_batch``: same partitioning (the default murmur2 partitioner, as the
Java client and ``send`` use), same per-partition order, far less work per record.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

Headers = list[tuple[str, bytes]]


class BatchWriter:
    """Collects the records of one ingest batch; ``flush`` submits them and returns the acks."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._builders: dict[tuple[str, int], Any] = {}
        self._pending: list[asyncio.Future[Any]] = []

    async def prepare(self, topics: list[str]) -> None:
        """Look up (and cache) the partitions of the topics this batch writes to."""
        for topic in topics:
            if topic not in self._partitions:
                self._partitions[topic] = sorted(await self.producer.partitions_for(topic))

    async def add(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        partitions = self._partitions[topic]
        partition = self.partitioner(key, partitions, partitions)
        slot = (topic, partition)
        builder = self._builders.get(slot)
        if builder is None:
            builder = self._builders[slot] = self.producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
            # Full: submit it and start another (a record larger than a batch still fits alone).
            self._pending.append(
                await self.producer.send_batch(builder, topic, partition=partition)
            )
            builder = self._builders[slot] = self.producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Submit every open batch; the returned futures resolve when the broker acknowledged."""
        for (topic, partition), builder in self._builders.items():
            self._pending.append(
                await self.producer.send_batch(builder, topic, partition=partition)
            )
        self._builders.clear()
        pending, self._pending = self._pending, []
        return pending

    def forget_partitions(self) -> None:
        """Re-read partition counts on the next batch (after a metadata change)."""
        self._partitions.clear()
