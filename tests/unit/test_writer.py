"""The batch writer's partitioning matches aiokafka's default partitioner (Kafka's murmur2)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from hypothesis import given
from hypothesis import strategies as st

from stream_router.ingest.writer import murmur2


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
