"""The batch writer: partitioning as aiokafka's default partitioner (Kafka's murmur2), and
compression as ``kafka.compression_type`` says."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from stream_router.app import build_ingest
from stream_router.ingest.writer import murmur2
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
