"""The batch writer: partitioning as aiokafka's default partitioner (Kafka's murmur2), the
output topics' partitions looked up before the first batch, and compression as
``kafka.compression_type`` says."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import confluent_kafka
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from stream_router.app import build_ingest
from stream_router.ingest.loop import Ingest
from stream_router.ingest.writer import BatchWriter, key_partition, murmur2, partition_by_hash
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.review_role import faust_app
from stream_router.settings import Settings


@given(st.binary(max_size=200))
def test_murmur2_matches_the_reference(data: bytes) -> None:
    assert murmur2(data) == reference_murmur2(data) & 0xFFFFFFFF


def test_murmur2_known_values_of_the_java_client() -> None:
    # Values from Kafka's own test of Utils.murmur2, as signed 32-bit ints.
    known = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    for data, signed in known.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_partition_choice_matches_the_default_partitioner(key: bytes, count: int) -> None:
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert partitions[(murmur2(key) & 0x7FFFFFFF) % count] == expected
    assert key_partition(key, count) == partition_by_hash(key, count) == expected


def test_the_writer_partitions_with_librdkafkas_murmur2() -> None:
    """The C hash is in use (a failed import would fall back to the Python one, slower)."""
    assert key_partition is confluent_kafka.murmur2


def test_librdkafkas_partition_equals_the_python_hash_for_keys_of_every_length() -> None:
    """confluent-kafka gives the partition, ``(murmur2(key) & 0x7FFFFFFF) % count``, not the
    hash: with a count of 2**31 - 1 (and - 2) that is the hash's 31 bits that partitioning
    reads. Random keys of every length from 0 to 64 bytes, 300 of each."""
    rng = random.Random(23)
    counts = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 31, 64, 100, 1000, 2**31 - 2, 2**31 - 1)
    for length in range(65):
        for _ in range(300):
            key = rng.randbytes(length)
            hashed = murmur2(key)
            assert hashed == reference_murmur2(key) & 0xFFFFFFFF
            for count in counts:
                assert key_partition(key, count) == (hashed & 0x7FFFFFFF) % count, (key, count)


class MetadataProducer:
    """A producer whose client knows no topic at first: the first lookup of each one costs a
    metadata round trip, later ones read the cache (as ``AIOKafkaProducer.partitions_for``)."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions
        self.cached: set[str] = set()
        self.round_trips: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.events: list[str] = []
        self.sent: list[tuple[str, int]] = []

    async def start(self) -> None:
        self.events.append("producer started")

    async def stop(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        if topic not in self.cached:
            self.round_trips.append(topic)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(0)  # the round trip: other tasks run meanwhile
            self.in_flight -= 1
            self.cached.add(topic)
            self.events.append(f"metadata of {topic}")
        return self.partitions[topic]

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 20, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class IdleConsumer:
    def __init__(self, producer: MetadataProducer) -> None:
        self.events = producer.events

    def subscribe(self, topics: list[str], *, listener: Any) -> None:
        self.events.append("subscribed")

    async def start(self) -> None:
        self.events.append("consumer started")

    async def stop(self) -> None:
        return None


async def test_ingest_looks_up_its_output_topics_at_once_before_it_consumes() -> None:
    settings = Settings(
        ingest={"output_topic": "out", "review_requests_topic": "rr", "dead_letter_topic": "dlq"}
    )
    topics = {"out": {0, 1, 2}, "rr": {0, 1}, "dlq": {0}}
    producer = MetadataProducer(topics)
    ingest = Ingest(
        settings.kafka,
        settings.ingest,
        Routes(settings.policies),
        IngestMetrics(CollectorRegistry()),
        consumer=IdleConsumer(producer),  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
    )
    await ingest.start()
    try:
        assert sorted(producer.round_trips) == ["dlq", "out", "rr"]
        assert producer.most_in_flight == 3  # concurrently, not one after another
        assert producer.events[0] == "producer started"
        assert sorted(producer.events[1:4]) == [
            "metadata of dlq",
            "metadata of out",
            "metadata of rr",
        ]
        assert producer.events[4:] == ["subscribed", "consumer started"]
        await ingest.writer.prepare(["out", "rr", "dlq"])  # what each batch does: no request
        assert len(producer.round_trips) == 3
    finally:
        await ingest.stop()


async def test_partitions_added_after_start_are_used_from_the_next_batch() -> None:
    producer = MetadataProducer({"out": {0}})
    writer = BatchWriter(producer)  # type: ignore[arg-type]
    await writer.look_up(["out"])
    await writer.prepare(["out"])
    writer.add("out", b"a key", b"v")
    await writer.flush()
    assert producer.sent == [("out", 0)]
    producer.partitions["out"] = {0, 1, 2, 3}  # the client's metadata refreshed
    await writer.prepare(["out"])
    keys = [b"key-%d" % i for i in range(40)]
    for key in keys:
        writer.add("out", key, b"v")
    await writer.flush()
    used = {partition for _, partition in producer.sent[1:]}
    assert used == {key_partition(key, 4) for key in keys} == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("setting", "codec"), [("none", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)]
)
async def test_batches_are_compressed_as_kafka_compression_type_says(
    setting: str, codec: int
) -> None:
    """Ingest's writer builds its batches itself (``create_batch``): they carry the codec of the
    ingest producer, which takes ``kafka.compression_type``."""
    ingest = build_ingest(Settings(kafka={"compression_type": setting}), CollectorRegistry())
    producer = ingest.producer
    sent: list[bytes] = []

    async def partitions_for(topic: str) -> set[int]:
        return {0}

    async def send_batch(builder: Any, topic: str, *, partition: int) -> None:
        sent.append(bytes(builder._build()))

    producer.partitions_for = partitions_for  # type: ignore[method-assign]
    producer.send_batch = send_batch  # type: ignore[method-assign]
    try:
        writer = ingest.writer
        await writer.prepare(["out"])
        values = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * 200) for i in range(20)]
        for value in values:
            writer.add("out", b"k", value)
        await writer.flush()
    finally:
        await ingest.stop()
    (raw,) = sent
    batch = MemoryRecords(raw).next_batch()
    assert batch.compression_type == codec
    assert [record.value for record in batch] == values
    assert (len(raw) < sum(map(len, values))) == (codec != 0)


@pytest.mark.parametrize(("setting", "expected"), [("none", None), ("lz4", "lz4")])
def test_the_review_role_produces_with_the_same_compression(
    setting: str, expected: str | None
) -> None:
    app = faust_app(Settings(kafka={"compression_type": setting}))  # type: ignore[arg-type]
    assert app.conf.producer_compression_type == expected
