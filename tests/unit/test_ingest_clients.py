"""Closing Kafka clients within a bound, whatever aiokafka's own close does.

The stray cancellation itself needs a broker that goes away under an assigned consumer: the
integration tests (``tests/integration/test_broker_down.py``) meet it for real. Here the clients'
close is replaced by what it does then (hang, or raise a cancellation of its own), and the
aiokafka internals the finishing touches are checked to exist.
"""

from __future__ import annotations

import asyncio
import logging
import math
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from stream_router import kafka_clients as clients
from stream_router.app import build_ingest
from stream_router.kafka_clients import RetryingProducer, stop_consumer, stop_producer
from stream_router.review_role import faust_app
from stream_router.review_topics import KafkaLedgerLog
from stream_router.settings import KafkaSettings, Settings


class FakeClient:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeFetcher:
    """What aiokafka's fetcher holds: its routine and the fetch tasks it started."""

    def __init__(self, tasks: list[asyncio.Task[None]]) -> None:
        self._fetch_task = tasks[0]
        self._pending_tasks = set(tasks[1:])


async def forever() -> None:
    await asyncio.Event().wait()


async def stray_cancellation() -> None:
    """What ``AIOKafkaConsumer.stop`` does with fetch tasks in their retry back-off."""
    fetch = asyncio.ensure_future(forever())
    fetch.cancel()
    await fetch  # re-raises the fetch task's CancelledError, as Fetcher.close does


class FakeConsumer:
    def __init__(self, stop: object) -> None:
        self._stop = stop
        self._client = FakeClient()
        self.tasks = [asyncio.ensure_future(forever()) for _ in range(3)]
        self._fetcher = FakeFetcher(self.tasks)
        self.stopping = asyncio.Event()

    async def stop(self) -> None:
        self.stopping.set()
        await self._stop()  # type: ignore[operator]


async def test_a_consumer_whose_close_cancels_itself_is_closed_and_nothing_is_raised() -> None:
    consumer = FakeConsumer(stray_cancellation)
    await stop_consumer(consumer, timeout_s=30)  # type: ignore[arg-type]
    assert consumer._client.closed
    assert all(task.cancelled() for task in consumer.tasks)


async def test_a_consumer_close_that_hangs_is_abandoned_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumer(forever)
    await stop_consumer(consumer, timeout_s=0.05)  # type: ignore[arg-type]
    assert consumer._client.closed
    assert all(task.cancelled() for task in consumer.tasks)
    assert "the Kafka consumer could not leave its group within 0.05 s" in caplog.text


async def test_a_clean_close_is_left_alone_and_its_error_raised() -> None:
    async def fine() -> None:
        return None

    consumer = FakeConsumer(fine)
    await stop_consumer(consumer, timeout_s=30)  # type: ignore[arg-type]
    assert not consumer._client.closed  # aiokafka closed it itself
    assert not any(task.done() for task in consumer.tasks)
    for task in consumer.tasks:
        task.cancel()

    async def broken() -> None:
        raise RuntimeError("bug in close")

    with pytest.raises(RuntimeError, match="bug in close"):
        await stop_consumer(FakeConsumer(broken), timeout_s=30)  # type: ignore[arg-type]


async def test_the_callers_cancellation_propagates_and_cancels_the_close() -> None:
    consumer = FakeConsumer(forever)
    closing = asyncio.ensure_future(stop_consumer(consumer, timeout_s=30))  # type: ignore[arg-type]
    await consumer.stopping.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert not consumer._client.closed  # not finished by us: the caller is going away
    for task in consumer.tasks:
        task.cancel()


class FakeSender:
    def __init__(self) -> None:
        self.sender_task = asyncio.ensure_future(forever())


class FakeProducer:
    def __init__(self) -> None:
        self._sender = FakeSender()
        self.client = FakeClient()

    async def stop(self) -> None:
        await forever()  # unsent records, and no broker to take them


async def test_a_producer_that_cannot_send_its_last_records_is_closed_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    producer = FakeProducer()
    await stop_producer(producer, timeout_s=0.05)  # type: ignore[arg-type]
    assert producer.client.closed
    assert producer._sender.sender_task.cancelled()
    assert "the Kafka producer could not send its last records within 0.05 s" in caplog.text


async def test_the_aiokafka_internals_used_exist_and_a_never_started_client_closes() -> None:
    """If aiokafka renames what ``kafka_clients.py`` reaches into, this fails first."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    assert consumer._fetcher is None
    assert isinstance(consumer._client, AIOKafkaClient)
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    assert producer._sender.sender_task is None
    fetcher = Fetcher(AIOKafkaClient(bootstrap_servers="127.0.0.1:1"), SubscriptionState())
    assert isinstance(fetcher._fetch_task, asyncio.Task)
    assert fetcher._pending_tasks == set()
    await fetcher.close()
    await stop_consumer(consumer, timeout_s=clients.CLOSE_TIMEOUT_S)
    await stop_producer(producer, timeout_s=clients.CLOSE_TIMEOUT_S)


@pytest.mark.parametrize("idempotence", [True, False])
async def test_both_roles_producers_are_idempotent_as_set_and_never_give_a_batch_up(
    idempotence: bool,
) -> None:
    """Ingest's producer and faust's (the review role's) are the same RetryingProducer: acks=all,
    idempotent as ``kafka.idempotence`` says, and no batch lifetime (kafka_clients.py)."""
    settings = Settings(kafka={"idempotence": idempotence})  # type: ignore[arg-type]
    ingest = build_ingest(settings, CollectorRegistry())
    app = faust_app(settings)
    made = app.transport.create_producer()._new_producer()
    for producer in (ingest.producer, made):
        assert isinstance(producer, RetryingProducer)
        assert (producer._txn_manager is not None) is idempotence
        assert producer._sender._acks == -1
        accumulator = producer._message_accumulator
        # A batch takes the accumulator's lifetime when it is made: it never expires.
        batch = accumulator._append_batch(accumulator.create_builder(), TopicPartition("t", 0))
        assert batch._ttl == math.inf
        assert not batch.expired()
    await stop_producer(made)
    await ingest.stop()


async def test_acknowledged_says_what_waits_and_returns_or_raises_as_gather(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    first.set_result("a")
    loop.call_later(0.05, second.set_result, "b")  # after several of the 0.01 s periods
    with caplog.at_level(logging.WARNING, logger="stream_router.kafka_clients"):
        assert await clients.acknowledged([first, second], "the batch", "k:9092", 0.01) == [
            "a",
            "b",
        ]
    said = [r.getMessage() for r in caplog.records]
    assert said
    assert said[0] == (
        "Kafka at k:9092 has not acknowledged the batch for 0 s; the producer keeps trying"
    )
    failed = loop.create_future()
    failed.set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await clients.acknowledged([failed], "the batch", "k:9092", 1)
    held = loop.create_future()
    waiting = asyncio.ensure_future(clients.acknowledged([held], "the batch", "k:9092", 1))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert held.cancelled()  # as gather does: the caller's cancellation reaches the acks


async def test_waits_hold_each_wait_for_acknowledgements_while_it_lasts() -> None:
    now = [100.0]
    waits = clients.Waits(lambda: now[0])
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    older = asyncio.ensure_future(clients.acknowledged([first], "a", "k:9092", 60, waits=waits))
    await asyncio.sleep(0)
    now[0] = 130.0
    newer = asyncio.ensure_future(clients.acknowledged([second], "b", "k:9092", 60, waits=waits))
    await asyncio.sleep(0)
    now[0] = 140.0
    assert waits.oldest_s() == 40.0
    first.set_result(None)
    await older
    assert waits.oldest_s() == 10.0  # the newer one is the oldest now
    newer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await newer
    assert waits.oldest_s() == 0.0  # a wait cancelled is over too


async def test_a_ledger_write_is_held_in_the_ledgers_waits_until_acknowledged() -> None:
    """What ``stream_router_review_ledger_unacknowledged_seconds`` reads (review_role.py)."""
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[None]] = []
    both_sent = asyncio.Event()

    async def send(topic: str, partition: int, key: bytes, value: bytes | None) -> Any:
        acks.append(loop.create_future())
        if len(acks) == 2:
            both_sent.set()
        return acks[-1]

    reader = SimpleNamespace(kafka=KafkaSettings(bootstrap_servers="k:9092"))
    log = KafkaLedgerLog("app-ledger", send, reader)  # type: ignore[arg-type]
    now = [10.0]
    log.waits.clock = lambda: now[0]
    write = asyncio.ensure_future(log.write_many(0, [("a", b"1"), ("b", b"2")]))
    await both_sent.wait()
    now[0] = 25.0
    assert log.waits.oldest_s() == 15.0
    for ack in acks:
        ack.set_result(None)
    await write
    assert log.waits.oldest_s() == 0.0
