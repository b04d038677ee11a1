"""RequestAudit.sweep over the wire, with the ledger and the actors stood in by small fakes.

The review application's group is committed on the broker, the audit's watermark lives in its
own group there, and the re-sent copies are collected: what the sweep reads, re-sends and
commits is checked against a real broker.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_router.review.audit import RequestAudit
from stream_router.sandbox.stack import Sandbox
from stream_router.settings import KafkaSettings
from tests.integration.kafka_helpers import commit_offsets, produce

pytestmark = pytest.mark.integration


class Audited:
    """A topic of requests ``r0``..``r{n-1}`` (one partition) and the audit's collaborators."""

    def __init__(self, sandbox: Sandbox, count: int) -> None:
        self.bootstrap = sandbox.broker.bootstrap_servers
        self.sandbox = sandbox
        self.topic = f"audit-{uuid.uuid4().hex[:8]}"
        self.group = f"app-{self.topic}"
        self.count = count
        self.known: set[str] = set()
        self.in_hand: set[str] = set()
        self.paused = False
        self.resent: list[str] = []
        self.flushes = 0

    async def setup(self) -> None:
        await self.sandbox.broker.create_topics([self.topic], partitions=1)
        records = [
            (f"r{i}".encode(), orjson.dumps({"loop_name": f"r{i}", "route": "general"}))
            for i in range(self.count)
        ]
        await produce(self.bootstrap, self.topic, records)

    async def commit(self, group: str, offset: int) -> None:
        await commit_offsets(self.bootstrap, group, {TopicPartition(self.topic, 0): offset})

    async def watermark(self) -> int | None:
        group = f"{self.group}-audit"
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group,
                                    enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        try:
            consumer.assign([TopicPartition(self.topic, 0)])
            committed: int | None = await consumer.committed(TopicPartition(self.topic, 0))
            return committed
        finally:
            await consumer.stop()

    @contextlib.asynccontextmanager
    async def running(self, max_sweep_s: float = 30.0) -> AsyncIterator[RequestAudit]:
        """An audit of the topic, started for the block."""
        audit = self.audit(max_sweep_s)
        await audit.start()
        try:
            yield audit
        finally:
            await audit.stop()

    def audit(self, max_sweep_s: float = 30.0) -> RequestAudit:
        async def resend(key: bytes | None, value: bytes) -> None:
            self.resent.append(orjson.loads(value)["loop_name"])

        async def flush() -> None:
            self.flushes += 1

        return RequestAudit(
            KafkaSettings(bootstrap_servers=self.bootstrap),
            self.topic,
            self.group,
            known=self.known.__contains__,
            in_hand=self.in_hand.__contains__,
            resend=resend,
            flush=flush,
            max_age_s=3600.0,
            paused=lambda: self.paused,
            max_sweep_s=max_sweep_s,
        )


async def test_a_sweep_resends_the_unknown_stops_at_one_in_hand_and_resumes_there(
    sandbox: Sandbox,
) -> None:
    topic = Audited(sandbox, 10)
    await topic.setup()
    topic.known = {f"r{i}" for i in range(10)} - {"r2", "r7"}
    topic.in_hand = {"r7"}
    async with topic.running() as audit:
        assert await audit.sweep([0]) == 0  # the application has committed nothing yet
        assert await topic.watermark() is None

        await topic.commit(topic.group, 10)
        assert await audit.sweep([0]) == 1
        assert topic.resent == ["r2"]
        assert await topic.watermark() == 7  # stopped at the request still in hand
        assert topic.flushes == 1  # the ledger was flushed before the watermark moved

        topic.in_hand.clear()  # r7 finished without an entry (its start was lost)
        assert await audit.sweep([0]) == 1
        assert topic.resent == ["r2", "r7"]
        assert await topic.watermark() == 10
        assert await audit.sweep([0]) == 0  # nothing new: nothing re-sent twice
        assert await topic.watermark() == 10


async def test_a_paused_sweep_sends_nothing_and_keeps_the_watermark(sandbox: Sandbox) -> None:
    topic = Audited(sandbox, 5)
    await topic.setup()
    await topic.commit(topic.group, 5)
    await topic.commit(f"{topic.group}-audit", 1)
    topic.paused = True  # a rebalance began: the ledger is not whole
    async with topic.running() as audit:
        assert await audit.sweep([0]) == 0
        assert topic.resent == []
        assert await topic.watermark() == 1
        topic.paused = False
        assert await audit.sweep([0]) == 4  # from the watermark on: r0 is not looked at
        assert topic.resent == ["r1", "r2", "r3", "r4"]
        assert await topic.watermark() == 5


async def test_a_sweep_out_of_time_keeps_its_place(sandbox: Sandbox) -> None:
    topic = Audited(sandbox, 50)
    await topic.setup()
    await topic.commit(topic.group, 50)
    # No time to read: the sweep only keeps its place.
    async with topic.running(max_sweep_s=0.0) as audit:
        assert await audit.sweep([0]) == 0
        assert await topic.watermark() == 0
    async with topic.running() as audit:
        assert await audit.sweep([0]) == 50
        assert topic.resent == [f"r{i}" for i in range(50)]
