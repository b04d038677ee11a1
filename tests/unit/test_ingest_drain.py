"""SIGTERM drains within ``ingest.drain_timeout_s``: a batch the broker never acknowledges is
given up uncommitted (consumed again after the restart), and the log says so.

The consumer is the hand-fed aiokafka fetcher of ``test_undecodable``; the producer hands out
acknowledgements the test settles (or never does, as with a broker that is gone).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import CollectorRegistry

from stream_router.ingest.loop import Ingest
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.settings import Settings
from tests.unit.test_undecodable import A, Consumer, good


class UnansweredProducer:
    """Takes batches; their acknowledgements wait for the test (or forever)."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[None]] = []
        self.sent = asyncio.Event()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 20, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        self.sent.set()
        return ack


def ingest_over(consumer: Consumer, drain_timeout_s: float) -> tuple[Ingest, UnansweredProducer]:
    settings = Settings(
        ingest={
            "output_topic": "out",
            "dead_letter_topic": "dead",
            "max_in_flight_batches": 0,  # each batch waits for its acknowledgements
            "drain_timeout_s": drain_timeout_s,
        }
    )
    producer = UnansweredProducer()
    ingest = Ingest(
        settings.kafka,
        settings.ingest,
        Routes(settings.policies),
        IngestMetrics(CollectorRegistry()),
        consumer=consumer,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
    )
    return ingest, producer


async def test_a_batch_never_acknowledged_is_given_up_uncommitted_after_the_drain_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Consumer([A])
    consumer.respond(A, good(0, 3))
    ingest, producer = ingest_over(consumer, drain_timeout_s=0.1)
    stop = asyncio.Event()
    running = asyncio.create_task(ingest.run(stop))
    await producer.sent.wait()  # the batch is produced; no acknowledgement will come
    stop.set()  # SIGTERM
    await running  # returns: no exception, no hang
    assert consumer.commits == []
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "ingest.drain_timeout_s (0.1 s)" in warning.getMessage()
    assert "in[0]" in warning.getMessage()
    assert "consumed again after the restart (at-least-once)" in warning.getMessage()


async def test_a_batch_acknowledged_during_the_drain_is_committed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Consumer([A])
    consumer.respond(A, good(0, 3))
    ingest, producer = ingest_over(consumer, drain_timeout_s=300)
    stop = asyncio.Event()
    running = asyncio.create_task(ingest.run(stop))
    await producer.sent.wait()
    stop.set()
    for ack in producer.acks:  # the broker answers after the stop
        ack.set_result(None)
    await running
    assert consumer.commits == [{A: 3}]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class SlowCommits(Consumer):
    """Commits wait for ``answer`` (a coordinator slow to answer, or gone: ``fail``)."""

    def __init__(self, partitions: list[Any]) -> None:
        super().__init__(partitions)
        self.answer = asyncio.Event()
        self.asked: list[dict[Any, int]] = []
        self.fail: Exception | None = None

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.asked.append(dict(offsets))
        await self.answer.wait()
        if self.fail is not None:
            raise self.fail
        await super().commit(offsets)


async def acknowledged(ingest: Ingest, producer: UnansweredProducer, base: int) -> None:
    """One batch of three records, decided, produced and acknowledged."""
    ingest.consumer.respond(A, good(base, 3))  # type: ignore[attr-defined]
    batch, skipped = await ingest.fetch(0)
    producer.sent.clear()
    submitted = asyncio.ensure_future(ingest.submit(batch, skipped))
    await producer.sent.wait()
    for ack in producer.acks:  # the broker acknowledges
        if not ack.done():
            ack.set_result(None)
    await submitted  # max_in_flight_batches 0: returns once acknowledged, not committed


async def test_the_next_batch_never_waits_for_a_commit_and_commits_stay_in_order() -> None:
    """A batch acknowledged is handed to the committer, and deciding goes on while the commit
    is under way; what is acknowledged meanwhile is committed together next, after it."""
    consumer = SlowCommits([A])
    ingest, producer = ingest_over(consumer, drain_timeout_s=300)
    # Commits do not answer yet; no batch waits for them (each would hang here if it did).
    await asyncio.wait_for(acknowledged(ingest, producer, 0), 5)
    await asyncio.wait_for(acknowledged(ingest, producer, 3), 5)
    await asyncio.wait_for(acknowledged(ingest, producer, 6), 5)
    assert consumer.asked == [{A: 3}]
    assert consumer.commits == []
    consumer.answer.set()
    await ingest.drain()  # waits for the commits of everything acknowledged
    assert consumer.asked == [{A: 3}, {A: 9}]
    assert consumer.commits == [{A: 3}, {A: 9}]


async def test_a_failed_commit_stops_ingest_at_its_next_settle() -> None:
    consumer = SlowCommits([A])
    consumer.fail = ConnectionError("the coordinator went away")
    consumer.answer.set()
    ingest, producer = ingest_over(consumer, drain_timeout_s=300)
    await acknowledged(ingest, producer, 0)
    with pytest.raises(ConnectionError):
        await ingest.drain()
    assert consumer.commits == []


async def test_readiness_learns_since_when_the_oldest_batch_waits_for_the_brokers() -> None:
    """``Ingest.unacknowledged_since``: what /readyz names when the brokers refuse writes."""
    consumer = Consumer([A])
    consumer.respond(A, good(0, 3))
    ingest, producer = ingest_over(consumer, drain_timeout_s=0.1)
    now = [1234.5]
    ingest.clock = lambda: now[0]
    registry = ingest.metrics.registry
    waited = "stream_router_ingest_unacknowledged_seconds"
    assert ingest.unacknowledged_since() is None
    assert registry.get_sample_value(waited) == 0
    stop = asyncio.Event()
    running = asyncio.create_task(ingest.run(stop))
    await producer.sent.wait()  # produced, not acknowledged
    assert ingest.unacknowledged_since() == 1234.5
    now[0] += 75
    assert registry.get_sample_value(waited) == 75  # what StreamRouterKafkaWritesRefused reads
    for ack in producer.acks:
        ack.set_result(None)
    stop.set()
    await running
    assert ingest.unacknowledged_since() is None
    assert registry.get_sample_value(waited) == 0
