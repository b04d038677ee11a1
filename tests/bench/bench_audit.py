"""Benchmark: how fast the request audit re-reads review requests, against a plain read.

    .venv/bin/python tests/bench/bench_audit.py [--requests 100000] [--missing 0.01] [--rounds 3]

On a local broker, N review requests (built by the wire builder, as ingest writes them) wait in
a 4-partition topic, and a consumer group standing for the review application is committed at
their end. Each round times:

- the baseline: a plain aiokafka consumer reading the same records and parsing each as JSON;
- the audit: ``RequestAudit.sweep`` over every partition (its own watermark group, fresh each
  round), every request judged against a ledger in which a fraction ``--missing`` is absent,
  those re-sent.

Prints records per second of both, their ratio per round and the median, and checks that the
audit re-sent exactly the missing requests. The audit's first sweep (no watermark yet) reads a
partition from its beginning: this is the rate at which it catches up.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_router.envelope import review_request
from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Decision
from stream_router.review.audit import RequestAudit
from stream_router.sandbox.broker import TansuBroker
from stream_router.settings import KafkaSettings

PARTITIONS = 4
FLOW = "arn:aws:sagemaker:us-east-1:000000000000:flow-definition/bench"


def request(i: int) -> tuple[bytes, bytes]:
    name = f"bench-{i}-loop"
    event = {"event_id": f"b{i}", "label": "cat", "confidence": 0.5, "text": "x" * 200}
    prediction = Prediction(
        f"b{i}", "cat", 0.5, {"cat": 0.5, "dog": 0.4}, "model", "1", time.time(), event,
        SourceRef("bench-in", 0, i, f"k{i}".encode()),
    )  # fmt: skip
    decision = Decision(True, "general", FLOW, "bench", "benchmark")
    return name.encode(), review_request(prediction, decision, "bench", name, time.time())


async def produce(bootstrap: str, topic: str, count: int) -> dict[TopicPartition, int]:
    """Produce ``count`` requests; returns each partition's end (from the acknowledgements)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        futures = [
            await producer.send(topic, value, key=key) for key, value in map(request, range(count))
        ]
        for metadata in await asyncio.gather(*futures):
            tp = TopicPartition(topic, metadata.partition)
            ends[tp] = max(ends.get(tp, 0), metadata.offset + 1)
    finally:
        await producer.stop()
    return ends


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def plain_read(bootstrap: str, ends: dict[TopicPartition, int]) -> float:
    """Seconds to read and parse every record up to ``ends`` with a plain consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_poll_records=2_000)  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        started = time.perf_counter()
        left = dict(ends)
        while left:
            batches = await consumer.getmany(*left, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    orjson.loads(record.value or b"")
                if records and records[-1].offset + 1 >= left[tp]:
                    del left[tp]
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def audit_read(
    bootstrap: str, topic: str, group: str, missing: set[str]
) -> tuple[float, int]:
    """Seconds of one full audit sweep, and how many requests it re-sent."""
    resent: list[bytes | None] = []

    async def resend(key: bytes | None, value: bytes) -> None:
        resent.append(key)

    async def flush() -> None:  # no ledger changelog here
        return None

    audit = RequestAudit(
        KafkaSettings(bootstrap_servers=bootstrap),
        topic,
        group,
        known=lambda name: name not in missing,
        in_hand=lambda name: False,
        resend=resend,
        flush=flush,
        max_age_s=86_400.0,
        max_sweep_s=3_600.0,
    )
    await audit.start()
    try:
        started = time.perf_counter()
        await audit.sweep(list(range(PARTITIONS)))
        return time.perf_counter() - started, len(resent)
    finally:
        await audit.stop()


async def main(count: int, missing_fraction: float, rounds: int) -> None:
    async with TansuBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = f"bench-rr-{uuid.uuid4().hex[:6]}"
        await broker.create_topics([topic], partitions=PARTITIONS)
        ends = await produce(bootstrap, topic, count)
        rng = random.Random(7)
        missing = {
            f"bench-{i}-loop" for i in rng.sample(range(count), int(count * missing_fraction))
        }
        print(
            f"{count} review requests in {PARTITIONS} partitions; "
            f"{len(missing)} missing from the ledger"
        )
        ratios = []
        for round_ in range(rounds):
            group = f"bench-app-{uuid.uuid4().hex[:6]}"
            await commit(bootstrap, group, ends)
            if round_ % 2:  # alternate which side reads first
                audit_s, sent = await audit_read(bootstrap, topic, group, missing)
                plain_s = await plain_read(bootstrap, ends)
            else:
                plain_s = await plain_read(bootstrap, ends)
                audit_s, sent = await audit_read(bootstrap, topic, group, missing)
            assert sent == len(missing), f"the audit re-sent {sent}, expected {len(missing)}"
            ratio = plain_s / audit_s
            ratios.append(ratio)
            print(
                f"round {round_ + 1}: plain read {count / plain_s:,.0f} records/s, "
                f"audit {count / audit_s:,.0f} records/s (ratio {ratio:.2f}), re-sent {sent}"
            )
        print(f"median ratio audit/plain: {statistics.median(ratios):.2f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--missing", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.missing, args.rounds))


if __name__ == "__main__":
    cli()
