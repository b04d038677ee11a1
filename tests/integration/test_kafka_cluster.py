"""The sandbox's three-node Apache Kafka cluster: the router's topics replicated three times, and
the roles' producer keeping acknowledged writes through a leader's SIGKILL and waiting out two
nodes lost and regained."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream_router.kafka_clients import RetryingProducer, producer_options, stop_producer
from stream_router.sandbox.kafka.cluster import KafkaCluster
from stream_router.settings import KafkaSettings, Settings
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


@pytest.mark.parametrize("idempotence", [True, False], ids=["idempotent", "not-idempotent"])
async def test_acknowledged_writes_survive_a_leader_killed_and_two_nodes_lost(
    tmp_path: Path, idempotence: bool
) -> None:
    """The roles' producer (``RetryingProducer``): what it acknowledged is read back once,
    whichever nodes died. With two of three nodes down, a write waits, past the point where
    aiokafka's own producer gives the same write up, and is acknowledged when the nodes are
    back: once when idempotent. Without idempotence (Tansu's setting) it may be written more
    than once: each retry is appended to the lone leader's log, committed when it recovers."""
    topic = f"kept-{uuid.uuid4().hex[:6]}"
    async with KafkaCluster(state_dir=tmp_path / "kafka") as cluster:
        bootstrap = cluster.bootstrap_servers
        await cluster.create_topics([topic], partitions=1)
        (partition,) = await partitions_of(bootstrap, topic)
        leader = int(partition["leader"])  # type: ignore[call-overload]
        kafka = KafkaSettings(
            bootstrap_servers=bootstrap, request_timeout_s=5, session_timeout_s=5,
            heartbeat_interval_s=1, idempotence=idempotence,
        )  # fmt: skip
        producer = RetryingProducer(**producer_options(kafka))
        # aiokafka's producer as it comes, for contrast: it gives a batch up request_timeout
        # after it was made.
        plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5000)
        await producer.start()
        await plain.start()
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
            # The other follower goes: the leader is alone and cannot commit an acks=all write.
            (other,) = [i for i in range(3) if i + 1 not in (leader, moved["leader"])]
            await cluster.stop_node(other, kill=True)
            held = await producer.send(topic, b"held")
            given_up = await plain.send(topic, b"given up")
            with pytest.raises(KafkaError):
                await asyncio.wait_for(given_up, 30)
            assert not held.done()  # waited as long as the plain producer, and keeps waiting
            await cluster.start_node(leader - 1)
            await cluster.start_node(other)
            await asyncio.wait_for(held, 60)
            await write(range(200, 300))
        finally:
            await stop_producer(plain)
            await stop_producer(producer)
        read = await read_all(bootstrap, topic, expected=len(acknowledged) + 1)
    held_copies = read.count(b"held")
    print(f"idempotence={idempotence}: held written {held_copies} times")
    assert held_copies == 1 if idempotence else held_copies >= 1
    # b"given up" may have reached the leader's log, committed once the followers came back:
    # a write given up is not a write refused. Every acknowledged write, once, and nothing else.
    numbers = [int(value) for value in read if value not in (b"held", b"given up")]
    if idempotence:
        assert sorted(numbers) == acknowledged
    else:  # a send retried after the leader's SIGKILL may have been written twice too
        assert sorted(set(numbers)) == acknowledged


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
