"""The sandbox's Apache Kafka broker itself: restarts keep data, offsets and topic configs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream_router.sandbox.kafka import KafkaBroker
from tests.integration.test_broker import consume, consume_and_commit, consumer, produce

pytestmark = pytest.mark.integration


async def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (reply,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})]
        )
    finally:
        await admin.close()
    (resource,) = reply.to_object()["resources"]
    (entry,) = resource["config_entries"]
    value: str = entry["config_value"]
    return value


async def test_a_restart_keeps_records_offsets_and_topic_configs(tmp_path: Path) -> None:
    topic, group = f"durable-{uuid.uuid4().hex[:6]}", "durable-group"
    async with KafkaBroker(state_dir=tmp_path / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        await broker.create_topics([topic], partitions=1, configs={"cleanup.policy": "compact"})
        values = [f"m{i}" for i in range(50)]
        await produce(bootstrap, topic, values)
        assert await consume_and_commit(bootstrap, group, topic, 30) == values[:30]

        await broker.restart()
        assert broker.bootstrap_servers == bootstrap  # same ports, same storage

        again = consumer(bootstrap, group, topic)
        await again.start()
        try:
            assert await consume(again, 20) == values[30:]
            # Real Kafka reports the log end, where Tansu leaves out the newest batch.
            assert await again.end_offsets([TopicPartition(topic, 0)]) == {
                TopicPartition(topic, 0): 50
            }
        finally:
            await again.stop()
        assert await topic_config(bootstrap, topic, "cleanup.policy") == "compact"
    assert not broker.process.running()


async def test_a_stored_batch_shows_the_codec_it_was_written_with(tmp_path: Path) -> None:
    async with KafkaBroker(state_dir=tmp_path / "kafka") as broker:
        await broker.create_topics(["plain", "squeezed"])
        for topic, codec in (("plain", None), ("squeezed", "zstd")):
            producer = AIOKafkaProducer(
                bootstrap_servers=broker.bootstrap_servers, compression_type=codec
            )
            await producer.start()
            try:
                await producer.send_and_wait(topic, b"x" * 100)
            finally:
                await producer.stop()
        assert broker.batch_codecs("plain") == ["none"]
        assert broker.batch_codecs("squeezed") == ["zstd"]
        assert broker.batch_codecs("absent") == []
