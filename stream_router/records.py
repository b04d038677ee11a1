"""Records in and out of a topic from the command line: ``produce`` and ``tail``.

:func:`publish` is ``stream-router produce TOPIC < events.jsonl``: your own predictions, one
per line.

Each non-blank line becomes one record whose value is the line exactly as read (without its
line break): nothing is parsed or re-encoded, so what ingest meets is what the file says,
malformed lines included (they are how a dead letter looks). ``key_field`` keys each record
by a top-level field of the line's JSON (the router keys its results like its input); a line
that is not a JSON object, or lacks the field, is sent without a key.

Every record is acknowledged (``acks=all``) before the command returns. A record
the broker refuses stops it, naming the line: the lines before it are published, and some after
it may be (up to a thousand are in flight at once).

:func:`tail` is ``stream-router tail TOPIC``: a topic's records as lines from the beginning,
by direct assignment (no group, nothing committed), stopping after ``idle_s`` without new
records unless ``follow`` is set; ``decision`` keeps only result envelopes of one decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

IN_FLIGHT = 1000  #: sends awaited together
Decision = Literal["accepted", "reviewed", "unreviewed"]
DECISIONS: tuple[Decision, ...] = ("accepted", "reviewed", "unreviewed")


class PublishError(Exception):
    """A record could not be published; the message names the line."""


@dataclass(frozen=True)
class Published:
    records: int
    partitions: int


def record_key(line: bytes, key_field: str | None) -> bytes | None:
    """The key of one line: the string form of ``key_field`` in its JSON object, else none."""
    if key_field is None:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get(key_field) is None:
        return None
    value = data[key_field]
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8")


async def topic_partitions(client_options: dict[str, Any], topic: str) -> list[int]:
    """The partitions of ``topic``; LookupError when it does not exist."""
    admin = AIOKafkaAdminClient(**client_options)
    try:
        await admin.start()
        # Listed first: describing a missing topic creates it on brokers that auto-create (Tansu).
        listed = topic in await admin.list_topics()
        described = (await admin.describe_topics([topic]))[0] if listed else {}
    finally:
        await admin.close()
    partitions = described.get("partitions") or []
    if described.get("error_code") or not partitions:
        raise LookupError(
            f"topic {topic!r} does not exist on {client_options['bootstrap_servers']}; create it "
            "with: stream-router topics create --config FILE (it creates ingest.input_topics too)"
        )
    return sorted(p["partition"] for p in partitions)


async def publish(
    client_options: dict[str, Any],
    topic: str,
    lines: Iterable[bytes],
    *,
    key_field: str | None = None,
    max_request_bytes: int = 1_048_576,
) -> Published:
    """Send each non-blank line of ``lines`` to ``topic`` as one record (module docstring)."""
    partitions = await topic_partitions(client_options, topic)
    # Not idempotent: Tansu answers InitProducerId with an error; a retried send may then write
    # a line twice, which the router treats as any redelivery (one outcome per event id).
    producer = AIOKafkaProducer(**client_options, acks="all", max_request_size=max_request_bytes)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a failed start leaves its connections open otherwise
        raise
    sent = 0
    try:
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        for number, raw in enumerate(lines, start=1):
            value = raw.rstrip(b"\r\n")
            if not value.strip():
                continue
            try:
                future = await producer.send(topic, value, key=record_key(value, key_field))
            except KafkaError as exc:
                raise PublishError(f"line {number}: {exc}") from exc
            pending.append((number, future))
            if len(pending) >= IN_FLIGHT:
                sent += await _acknowledged(pending)
                pending = []
        sent += await _acknowledged(pending)
    finally:
        await producer.stop()
    return Published(sent, len(partitions))


async def _acknowledged(pending: list[tuple[int, asyncio.Future[Any]]]) -> int:
    results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
    for (number, _), result in zip(pending, results, strict=True):
        if isinstance(result, BaseException):
            raise PublishError(f"line {number} was not published: {result!r}") from result
    return len(pending)


async def tail(
    client_options: dict[str, Any],
    topic: str,
    *,
    decision: Decision | None = None,
    follow: bool = False,
    idle_s: float = 2.0,
    out: TextIO = sys.stdout,
) -> int:
    """Print the value of each record of ``topic``, one per line; returns how many."""
    printed = 0
    async with assigned_consumer(client_options, topic) as (consumer, assigned):
        await consumer.seek_to_beginning(*assigned)
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=1000)
            if not batch and not follow:
                return printed
            for records in batch.values():
                for record in records:
                    if decision is not None and decision_of(record.value) != decision:
                        continue
                    out.write((record.value or b"").decode("utf-8", "replace") + "\n")
                    printed += 1
            out.flush()


@contextlib.asynccontextmanager
async def assigned_consumer(
    client_options: dict[str, Any], topic: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer assigned every partition of ``topic`` (no group, nothing committed), stopped
    on exit; LookupError when the topic does not exist."""
    partitions = await topic_partitions(client_options, topic)
    consumer = AIOKafkaConsumer(**client_options, enable_auto_commit=False)
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()  # a failed start leaves its connections open otherwise
        raise
    try:
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        yield consumer, assigned
    finally:
        await consumer.stop()


def decision_of(value: bytes | None) -> str | None:
    """The ``decision`` of a result envelope (None for anything else)."""
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    return data.get("decision") if isinstance(data, dict) else None
