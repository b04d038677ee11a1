"""Batches the Kafka client cannot decode: located in aiokafka's own fetcher, stepped over.

The broken batches are real record batches (built by aiokafka's builder, then damaged) read by
aiokafka's real ``Fetcher.fetched_records`` (the code under ``getmany``), so what
``undecodable.locate`` reads from the traceback is what it meets in production. Only the
network is missing: the fetcher is given its fetch responses directly.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka import codec as codecs
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, Fetcher, FetchResult, PartitionRecords
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from prometheus_client import CollectorRegistry

from stream_router.errors import UndecodableRecords
from stream_router.ingest.loop import Ingest
from stream_router.ingest.undecodable import locate
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.review_topics import RequestFeed
from stream_router.settings import Settings
from tests.envelope_schema import dead_letter_validator

A, B = TopicPartition("in", 0), TopicPartition("in", 1)
GZIP, SNAPPY = 1, 2


def batch(base: int, values: list[bytes], codec: int = 0, headers: Any = ()) -> bytearray:
    """A record batch (format v2) holding ``values`` at offsets ``base``..."""
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, 0, 1 << 20)
    for delta, value in enumerate(values):
        builder.append(delta, 1000, None, value, list(headers))
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    return data


def with_crc(data: bytearray) -> bytearray:
    """The batch with its CRC made right again (the damage is then past the CRC check)."""
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return data


def event(offset: int) -> bytes:
    return orjson.dumps({"event_id": f"e{offset}", "label": "cat", "confidence": 0.9})


def good(base: int, count: int, codec: int = 0) -> bytearray:
    return batch(base, [event(base + i) for i in range(count)], codec)


def crc_mismatch(base: int, count: int) -> bytearray:
    data = good(base, count)
    data[-1] ^= 0xFF
    return data


def corrupt_gzip(base: int, count: int) -> bytearray:
    data = batch(base, [bytes(range(256)) * 4] * count, GZIP)
    data[61 + 200] ^= 0xFF  # inside the deflate stream: zlib.error
    return with_crc(data)


def unknown_codec(base: int, count: int) -> bytearray:
    data = good(base, count)
    data[22] = (data[22] & ~0x07) | 0x05  # attributes: codec 5 does not exist
    return with_crc(data)


def bad_header_key(base: int, count: int) -> bytearray:
    data = batch(base, [event(base + i) for i in range(count)], headers=[("kk", b"v")])
    data[data.find(b"kk")] = 0xFF  # the first record's header key: not UTF-8
    return with_crc(data)


def unframed(base: int, count: int) -> bytearray:
    data = good(base, count)
    struct.pack_into(">i", data, 8, 5)  # batch length below the minimum: extent unknown
    return data


class Responses:
    """A real aiokafka fetcher fed fetch responses by hand instead of by a broker."""

    def __init__(self, partitions: list[TopicPartition]) -> None:
        self.subscription = SubscriptionState()
        self.subscription.assign_from_user(set(partitions))
        self._assignment = self.subscription.subscription.assignment
        fetcher = Fetcher.__new__(Fetcher)  # what fetched_records needs, without a client
        fetcher._subscriptions = self.subscription
        fetcher._records = collections.OrderedDict()
        fetcher._wait_consume_future = None
        fetcher._fetch_waiters = set()
        fetcher._closed = False
        fetcher._loop = asyncio.get_running_loop()
        self.fetcher = fetcher
        for tp in partitions:
            self._assignment.state_value(tp).seek(0)

    def respond(self, tp: TopicPartition, *batches: bytearray) -> None:
        """The broker's answer to a fetch of ``tp`` at its position."""
        position = self._assignment.state_value(tp).position
        records = PartitionRecords(
            tp, MemoryRecords(b"".join(batches)), [], position, None, None, True, READ_UNCOMMITTED
        )
        self.fetcher._records[tp] = FetchResult(
            tp, assignment=self._assignment, partition_records=records, backoff=0
        )

    def position(self, tp: TopicPartition) -> int:
        return int(self._assignment.state_value(tp).position)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        assigned = set(partitions) or self.subscription.assigned_partitions()
        with self.subscription.fetch_context():
            result: dict[TopicPartition, list[ConsumerRecord]] = await self.fetcher.fetched_records(
                assigned, 0, max_records
            )
            return result


async def failing_fetch(
    broken: Callable[[int, int], bytearray],
) -> tuple[Responses, BaseException]:
    """B answers 2 good records; A answers 3 good records, then the broken batch of 4."""
    responses = Responses([B, A])
    responses.respond(B, good(0, 2))
    responses.respond(A, good(0, 3), broken(3, 4), good(7, 1))
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any type: that is the point
        await responses.getmany(max_records=100)
    return responses, caught.value


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        (crc_mismatch, "CorruptRecordException"),
        (corrupt_gzip, "error"),  # zlib.error
        (unknown_codec, "UnsupportedCodecError"),
        (bad_header_key, "UnicodeDecodeError"),
    ],
)
async def test_a_bad_batch_is_located_with_what_the_fetch_took(
    broken: Callable[[int, int], bytearray], error: str
) -> None:
    responses, exc = await failing_fetch(broken)
    assert type(exc).__name__ == error
    where = locate(exc)
    assert where is not None
    assert (where.tp, where.position, where.next_offset) == (A, 3, 7)
    assert where.skippable
    # What getmany took and dropped: B's records (B's position moved past them), A's first 3.
    assert {tp: [r.offset for r in rs] for tp, rs in where.taken.items()} == {
        B: [0, 1],
        A: [0, 1, 2],
    }
    assert responses.position(B) == 2
    assert responses.position(A) == 0  # where A's fetch began: the next one meets it again


async def test_a_record_failing_inside_a_batch_is_located_from_there() -> None:
    responses = Responses([A])
    broken = batch(0, [event(0), event(1)], headers=[("kk", b"v")])
    broken[broken.rfind(b"kk")] = 0xFF  # only the second record's header key is broken
    responses.respond(A, with_crc(broken))
    with pytest.raises(UnicodeDecodeError) as caught:
        await responses.getmany(max_records=100)
    where = locate(caught.value)
    assert where is not None
    assert (where.position, where.next_offset) == (1, 2)
    assert [r.offset for r in where.taken[A]] == [0]


async def test_a_missing_codec_library_is_not_skippable(monkeypatch: pytest.MonkeyPatch) -> None:
    snappy = batch(3, [b"x" * 100] * 4, SNAPPY)  # built while cramjam is there
    monkeypatch.setattr(codecs, "has_snappy", lambda: False)
    _, exc = await failing_fetch(lambda base, count: snappy)
    where = locate(exc)
    assert where is not None
    assert (where.missing_codec, where.next_offset, where.skippable) == ("snappy", 7, False)


async def test_a_batch_whose_framing_is_broken_has_no_known_extent() -> None:
    _, exc = await failing_fetch(unframed)
    where = locate(exc)
    assert where is not None
    assert (where.tp, where.position, where.next_offset, where.skippable) == (A, 3, None, False)


def test_errors_not_from_decoding_are_not_located() -> None:
    with pytest.raises(ConnectionError) as caught:
        raise ConnectionError("broker went away")
    assert locate(caught.value) is None


# -- the ingest loop over it ----------------------------------------------------------------


class Consumer(Responses):
    """The consumer side ingest uses, over the hand-fed fetcher."""

    def __init__(self, partitions: list[TopicPartition]) -> None:
        super().__init__(partitions)
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.subscription.assigned_partitions())

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.fetcher.seek_to(tp, offset)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class Producer:
    """Accepts every batch at once and keeps what it got."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes | None, bytes]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 20, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        for record in MemoryRecords(bytes(builder._build())).next_batch():
            self.sent.append((topic, partition, record.key, record.value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(value) for t, _, _, value in self.sent if t == topic]


def ingest_over(consumer: Consumer) -> tuple[Ingest, Producer, CollectorRegistry]:
    settings = Settings(ingest={"output_topic": "out", "dead_letter_topic": "dead"})
    producer, registry = Producer(), CollectorRegistry()
    ingest = Ingest(
        settings.kafka,
        settings.ingest,
        Routes(settings.policies),
        IngestMetrics(registry),
        consumer=consumer,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
    )
    return ingest, producer, registry


async def test_ingest_steps_over_a_bad_batch_and_loses_nothing() -> None:
    consumer = Consumer([B, A])
    consumer.respond(B, good(0, 2))
    consumer.respond(A, good(0, 3), crc_mismatch(3, 4), good(7, 1))
    ingest, producer, registry = ingest_over(consumer)

    batch, skipped = await ingest.fetch(0)
    assert {tp: [r.offset for r in rs] for tp, rs in batch.items()} == {B: [0, 1], A: [0, 1, 2]}
    assert [(s.tp, s.first_offset, s.next_offset) for s in skipped] == [(A, 3, 7)]
    assert consumer.position(A) == 7  # past the bad batch
    outcome = await ingest.handle(batch, skipped)
    assert outcome.committed == {B: 2, A: 7}
    assert consumer.commits == [{B: 2, A: 7}]
    assert sorted(e["event_id"] for e in producer.on("out")) == ["e0", "e0", "e1", "e1", "e2"]
    (letter,) = producer.on("dead")
    dead_letter_validator().validate(letter)
    assert letter["reason_class"] == "undecodable"
    assert (letter["source"]["partition"], letter["source"]["offset"]) == (0, 3)
    assert letter["last_offset"] == 6
    assert "CorruptRecordException" in letter["reason"]
    sample = registry.get_sample_value
    labels = {"topic": "in", "outcome": "skipped"}
    assert sample("stream_router_ingest_undecodable_batches_total", labels) == 1
    assert sample("stream_router_ingest_dead_lettered_total", {"reason_class": "undecodable"}) == 1

    consumer.respond(A, good(7, 1))  # the next fetch starts after the bad batch
    batch, skipped = await ingest.fetch(0)
    assert ([r.offset for r in batch[A]], skipped) == ([7], [])


@pytest.mark.parametrize("missing_codec", [True, False])
async def test_ingest_exits_naming_what_it_cannot_step_over(
    missing_codec: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = batch(3, [b"x" * 100] * 4, SNAPPY) if missing_codec else unframed(3, 4)
    if missing_codec:
        monkeypatch.setattr(codecs, "has_snappy", lambda: False)
    consumer = Consumer([A])
    consumer.respond(A, good(0, 3), broken)
    ingest, producer, registry = ingest_over(consumer)
    with pytest.raises(UndecodableRecords) as caught:
        await ingest.fetch(0)
    message = str(caught.value)
    assert "records of in[0] at offset" in message
    if missing_codec:
        assert "offsets 3 to 6" in message
        assert "install the snappy codec" in message
    else:
        assert "offset 3 (the batch's extent is unreadable)" in message
        assert "move the group's offset of in[0] past them" in message
    labels = {"topic": "in", "outcome": "fatal"}
    assert registry.get_sample_value("stream_router_ingest_undecodable_batches_total", labels) == 1
    assert consumer.commits == []
    assert producer.sent == []


async def test_ingest_lets_other_errors_through() -> None:
    class Broken(Consumer):
        async def getmany(self, *partitions: TopicPartition, **kw: Any) -> Any:
            raise ConnectionError("broker went away")

    ingest, _, _ = ingest_over(Broken([A]))
    with pytest.raises(ConnectionError):
        await ingest.fetch(0)


# -- the review role's intake over it ---------------------------------------------------------


async def test_the_review_intake_steps_over_a_bad_batch_with_what_it_took() -> None:
    """``RequestFeed.fetch`` returns the records the failed fetch took and the range to
    dead-letter (``test_scheduler.py`` shows the scheduler's side); the next fetch goes on."""
    consumer = Consumer([B, A])
    consumer.respond(B, good(0, 2))
    consumer.respond(A, good(0, 3), corrupt_gzip(3, 4), good(7, 1))
    feed = RequestFeed(Settings().kafka, "in")
    feed._consumer = consumer  # type: ignore[assignment]
    records, skipped = await feed.fetch(0, 100)
    assert {p: [r.offset for r in rs] for p, rs in records.items()} == {1: [0, 1], 0: [0, 1, 2]}
    assert {p: (s.first, s.next) for p, s in skipped.items()} == {0: (3, 7)}
    assert "cannot be decoded" in skipped[0].reason
    assert consumer.position(A) == 7

    consumer.respond(A, good(7, 1))
    records, skipped = await feed.fetch(0, 100)
    assert ({p: [r.offset for r in rs] for p, rs in records.items()}, skipped) == ({0: [7]}, {})


async def test_the_review_intake_stops_at_a_batch_it_cannot_step_over() -> None:
    consumer = Consumer([A])
    consumer.respond(A, good(0, 3), unframed(3, 4))
    feed = RequestFeed(Settings().kafka, "in")
    feed._consumer = consumer  # type: ignore[assignment]
    with pytest.raises(UndecodableRecords, match=r"in\[0\] at offset 3.*intake position"):
        await feed.fetch(0, 100)
    assert consumer.position(A) == 0  # not moved: nothing is lost by stopping
