"""The sandbox's three-node Apache Kafka cluster: the router's topics replicated three times, and
acknowledged writes kept through a leader's SIGKILL and two nodes lost and regained."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream_router.sandbox.kafka.cluster import KafkaCluster
from stream_router.settings import Settings
from stream_router.topics import check_topics, create_topics
from tests.integration.test_kafka_broker import topic_config

pytestmark = pytest.mark.integration


async def partitions_of(bootstrap: str, topic: str) -> list[dict[str, object]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions: list[dict[str, object]] = described["partitions"]
    return partitions


async def test_topics_create_replicates_the_router_topics_three_times(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    async with KafkaCluster(state_dir=tmp_path / "kafka") as cluster:
        settings = Settings(
            kafka={"bootstrap_servers": cluster.bootstrap_servers},  # type: ignore[arg-type]
            ingest={"input_topics": [f"in-{tag}"], "output_topic": f"out-{tag}",  # type: ignore[arg-type]
                    "review_requests_topic": f"rr-{tag}", "dead_letter_topic": f"dlq-{tag}"},
            review={"app_id": f"app-{tag}", "loop_events_topic": f"le-{tag}"},  # type: ignore[arg-type]
            topics={"replication_factor": 3, "min_insync_replicas": 2},  # type: ignore[arg-type]
        )  # fmt: skip
        created = await create_topics(settings)
        assert set(created.values()) == {"created"}
        await check_topics(settings, "all")
        for topic in created:
            partitions = await partitions_of(cluster.bootstrap_servers, topic)
            assert {len(p["replicas"]) for p in partitions} == {3}  # type: ignore[arg-type]
            assert {len(p["isr"]) for p in partitions} == {3}  # type: ignore[arg-type]
            assert (
                await topic_config(cluster.bootstrap_servers, topic, "min.insync.replicas") == "2"
            )
        leaders = {p["leader"] for p in await partitions_of(cluster.bootstrap_servers, f"rr-{tag}")}
        assert len(leaders) > 1  # the partitions lead on more than one node


async def test_acknowledged_writes_survive_a_leader_killed_and_two_nodes_lost(
    tmp_path: Path,
) -> None:
    """acks=all with idempotence: what was acknowledged is read back once, whichever nodes
    died; with two of three nodes down a write is refused (not acknowledged), and writes go on
    once they are back."""
    topic = f"kept-{uuid.uuid4().hex[:6]}"
    async with KafkaCluster(state_dir=tmp_path / "kafka") as cluster:
        bootstrap = cluster.bootstrap_servers
        await cluster.create_topics([topic], partitions=1)
        (partition,) = await partitions_of(bootstrap, topic)
        leader = int(partition["leader"])  # type: ignore[call-overload]
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
            request_timeout_ms=5000,
        )  # fmt: skip
        await producer.start()
        acknowledged: list[int] = []

        async def write(numbers: range) -> None:
            for number in numbers:
                await producer.send_and_wait(topic, str(number).encode())
                acknowledged.append(number)

        try:
            await write(range(100))
            await cluster.stop_node(leader - 1, kill=True)
            await write(range(100, 200))  # the partition's new leader takes them
            (moved,) = await partitions_of(bootstrap, topic)
            assert moved["leader"] != leader
            others = [i for i in range(3) if i != leader - 1]
            await cluster.stop_node(others[0], kill=True)
            with pytest.raises((KafkaError, TimeoutError)):  # one node: not enough in sync
                await asyncio.wait_for(producer.send_and_wait(topic, b"refused"), 10)
            await cluster.start_node(leader - 1)
            await cluster.start_node(others[0])
            await write(range(200, 300))
        finally:
            await producer.stop()
        read = await read_all(bootstrap, topic, expected=len(acknowledged))
    numbers = [int(value) for value in read if value != b"refused"]
    assert sorted(numbers) == acknowledged  # every acknowledged write, once, nothing else
    assert len(numbers) == len(set(numbers))


async def read_all(bootstrap: str, topic: str, *, expected: int) -> list[bytes]:
    """Every record of ``topic`` from the beginning, once at least ``expected`` are read and
    the end offsets are reached."""
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, isolation_level="read_committed",
    )  # fmt: skip
    await reader.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(60):
            while True:
                batch = await reader.getmany(timeout_ms=500)
                values += [r.value for records in batch.values() for r in records if r.value]
                ends = await reader.end_offsets(list(reader.assignment()))
                positions = {tp: await reader.position(tp) for tp in ends}
                if len(values) >= expected and positions == ends:
                    return values
    finally:
        await reader.stop()
