"""Kafka helpers for integration tests: produce JSON, read whole topics without a group."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition


async def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Produce (key, value) pairs and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def commit_offsets(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (the group must have had no members)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def json_record(event: dict[str, Any], key: str | None = None) -> tuple[bytes | None, bytes]:
    return (key.encode() if key else None, json.dumps(event).encode())


class TopicReader:
    """Reads topics from the beginning by direct assignment (no group join to wait for)."""

    def __init__(self, bootstrap: str, topics: dict[str, int]) -> None:
        """``topics`` maps each topic to its number of partitions."""
        self.bootstrap = bootstrap
        self.partitions = dict(topics)
        self.topics = list(topics)
        self.records: dict[str, list[ConsumerRecord]] = {t: [] for t in self.topics}
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        partitions = [
            TopicPartition(topic, partition)
            for topic, count in self.partitions.items()
            for partition in range(count)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self) -> int:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
        count = 0
        for tp, records in batch.items():
            self.records[tp.topic].extend(records)
            count += len(records)
        return count

    async def until(self, done: Callable[[TopicReader], bool], timeout_s: float) -> None:
        """Poll until ``done(self)``; fail the test with what was read if it never is."""
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                counts = {topic: len(records) for topic, records in self.records.items()}
                raise AssertionError(f"condition not met within {timeout_s} s; read {counts}")
            await self.poll()

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records[topic]]
