"""Benchmark: the ingest path against a plain aiokafka loop, on the same broker and events.

    .venv/bin/python tests/bench/bench_ingest.py [--broker kafka|tansu] [--events 100000]
        [--rounds 5] [--rate MSG_PER_S]

The broker is the sandbox's Apache Kafka (default) or Tansu; both sides meet the same one.

Throughput: N events (about 300 bytes of JSON each) wait in a 4-partition topic. Each round
runs both, one after the other on fresh consumer groups, alternating which goes first (the
broker slows as its in-memory log grows, so a fixed order would favour the first):

- plain: getmany → orjson.loads (the JSON library ingest uses) → produce the value → wait for
  acks → commit;
- ingest: the real ingest path (parse with the mapping, three policies — ``confidence`` and
  ``margin`` under ``any``, and a 1 % ``sample`` — envelopes, produce to output/review-requests,
  acks, commit, metrics on a registry).

Both use the same client settings: consumer ``max_poll_records`` and ``getmany`` 1000 records
with a 50 ms wait, producer ``acks=all``, no linger, no compression, the same largest batch
(``kafka.producer_batch_max_bytes``). Both look up their output topics' partitions before they
consume; both are timed from their first record to the commit of the last one (group joins and
those lookups excluded). Each round prints msg/s, CPU per message and the ratio
ingest / plain of that pair; the summary gives the median of the per-round ratios.

Latency: a producer paces events at a fixed rate (by default half the median ingest rate just
measured) into a fresh topic while ingest runs; the decision latency of each event is its output
record's create time minus the event timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from stream_router.app import build_ingest
from stream_router.kafka_clients import client_options
from stream_router.sandbox.broker import Broker, BrokerKind, TansuBroker
from stream_router.sandbox.kafka import KafkaBroker
from stream_router.settings import KafkaSettings, Settings

PARTITIONS = 4
LABELS = ["cat", "dog", "bird", "fish", "other"]


def make_event(i: int, rng: random.Random, ts: float | None = None) -> bytes:
    scores = [rng.random() for _ in LABELS]
    total = sum(scores)
    probs = {label: round(s / total, 4) for label, s in zip(LABELS, scores, strict=True)}
    label = max(probs, key=probs.__getitem__)
    event = {
        "event_id": f"evt-{i:09d}",
        "model": "image-classifier",
        "model_version": "2026.11.3",
        "label": label,
        "confidence": max(0.5, min(0.999, rng.gauss(0.85, 0.12))),
        "scores": probs,
        "timestamp": ts if ts is not None else time.time(),
        "request": {"tenant": f"t{i % 17}", "region": "eu-west-1"},
    }
    return json.dumps(event).encode()


def settings_for(bootstrap: str, topic: str, tag: str) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": bootstrap, "session_timeout_s": 6, "heartbeat_interval_s": 1},
        ingest={
            "input_topics": [topic],
            "output_topic": f"bench-out-{tag}",
            "review_requests_topic": f"bench-rr-{tag}",
            "dead_letter_topic": f"bench-dlq-{tag}",
            "group_id": f"bench-ingest-{tag}",
            "fetch_wait_s": 0.05,
            "batch_max_records": 1000,
        },
        policies={
            "version": "bench",
            "routes": [
                {
                    "name": "uncertain",
                    "review_flow": "fd-general",
                    "policy": {
                        "type": "any",
                        "policies": [
                            {"type": "confidence", "below": 0.6},
                            {"type": "margin", "min_margin": 0.02},
                        ],
                    },
                },
                {
                    "name": "audit",
                    "review_flow": "fd-audit",
                    "policy": {"type": "sample", "percent": 1},
                },
            ],
        },
        metrics={"enabled": False},
    )


async def produce_all(bootstrap: str, topic: str, values: list[bytes]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    await producer.start()
    began = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, v, key=f"k{i}".encode()) for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(values) / (time.perf_counter() - began)


class Rate(float):
    """msg/s, with the process CPU seconds per record spent in the same interval."""

    cpu_us: float = 0.0


def rate(total: int, began_wall: float, began_cpu: float) -> Rate:
    result = Rate(total / (time.perf_counter() - began_wall))
    result.cpu_us = (time.process_time() - began_cpu) / total * 1e6
    return result


async def plain_loop(bootstrap: str, topic: str, total: int) -> Rate:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-plain-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    # The ingest producer's settings: acks=all, no linger, the same largest batch.
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    producer = AIOKafkaProducer(
        acks="all", max_batch_size=kafka.producer_batch_max_bytes, **client_options(kafka)
    )
    out = f"bench-plain-out-{uuid.uuid4().hex[:6]}"
    await producer.start()
    await producer.partitions_for(out)  # as ingest's start: the first batch does not wait for it
    await consumer.start()
    seen = 0
    began: float | None = None
    began_cpu = 0.0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=50, max_records=1000)
            if not batch:
                continue
            if began is None:
                began, began_cpu = time.perf_counter(), time.process_time()
            futures = []
            offsets = {}
            for tp, records in batch.items():
                for record in records:
                    orjson.loads(record.value)
                    futures.append(await producer.send(out, record.value, key=record.key))
                offsets[tp] = records[-1].offset + 1
                seen += len(records)
            await asyncio.gather(*futures)
            await consumer.commit(offsets)
        assert began is not None
        return rate(total, began, began_cpu)
    finally:
        await consumer.stop()
        await producer.stop()


async def ingest_path(bootstrap: str, topic: str, total: int) -> Rate:
    tag = uuid.uuid4().hex[:8]
    ingest = build_ingest(settings_for(bootstrap, topic, tag), CollectorRegistry())
    await ingest.start()
    seen = 0
    began: float | None = None
    began_cpu = 0.0
    try:
        while seen < total:
            batch = await ingest.consumer.getmany(timeout_ms=50, max_records=1000)
            if not batch:
                continue
            if began is None:
                began, began_cpu = time.perf_counter(), time.process_time()
            outcome = await ingest.submit(batch)
            seen += outcome.consumed
        await ingest.drain()
        assert began is not None
        return rate(total, began, began_cpu)
    finally:
        await ingest.stop()


async def latency(bootstrap: str, broker: Broker, rate: float, seconds: float) -> list[float]:
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-lat-{tag}"
    await broker.create_topics([topic], partitions=PARTITIONS)
    settings = settings_for(bootstrap, topic, tag)
    ingest = build_ingest(settings, CollectorRegistry())
    await ingest.start()
    stop = asyncio.Event()
    running = asyncio.create_task(ingest.run(stop))
    await ingest.assigned.wait()  # the group has formed: pace events from now on
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    rng = random.Random(3)
    count = int(rate * seconds)
    began = time.perf_counter()
    for i in range(count):
        due = began + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await producer.send(topic, make_event(i, rng, ts=time.time()), key=f"k{i}".encode())
    await producer.flush()
    await producer.stop()
    outputs = [settings.ingest.output_topic, settings.ingest.review_requests_topic]
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    partitions = [TopicPartition(t, p) for t in outputs for p in range(PARTITIONS)]
    reader.assign(partitions)
    await reader.seek_to_beginning(*partitions)
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    while len(latencies) < count and time.monotonic() < deadline:
        batch = await reader.getmany(timeout_ms=200)
        for records in batch.values():
            for record in records:
                event_ts = json.loads(record.value)["prediction"]["timestamp_s"]
                latencies.append(record.timestamp / 1000 - event_ts)
    await reader.stop()
    stop.set()
    await running
    await ingest.stop()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(kind: BrokerKind, state: Path, events: int, rounds: int, rate: float | None) -> None:
    started = time.monotonic()
    # Output topics appear on first use, with the input's partition count (as on Tansu).
    auto = {"auto.create.topics.enable": "true", "num.partitions": str(PARTITIONS)}
    broker = KafkaBroker(state_dir=state, extra_config=auto) if kind == "kafka" else TansuBroker()
    async with broker:
        print(f"broker: {kind}, ready in {time.monotonic() - started:.1f} s, "
              f"{broker.process.resident_bytes() / 1e6:.0f} MB resident")  # fmt: skip
        bootstrap = broker.bootstrap_servers
        topic = f"bench-in-{uuid.uuid4().hex[:6]}"
        await broker.create_topics([topic], partitions=PARTITIONS)
        rng = random.Random(1)
        values = [make_event(i, rng) for i in range(events)]
        size = statistics.mean(len(v) for v in values)
        produced = await produce_all(bootstrap, topic, values)
        print(f"events: {events} x {size:.0f} bytes in {PARTITIONS} partitions "
              f"(produced at {produced:,.0f} msg/s)")  # fmt: skip
        results: dict[str, list[Rate]] = {"plain": [], "ingest": []}
        ratios: list[float] = []
        for round_no in range(1, rounds + 1):
            order = ["plain", "ingest"] if round_no % 2 else ["ingest", "plain"]
            for side in order:
                run = plain_loop if side == "plain" else ingest_path
                results[side].append(await run(bootstrap, topic, events))
            plain, ours = results["plain"][-1], results["ingest"][-1]
            ratios.append(ours / plain)
            print(f"round {round_no} ({order[0]} first): "
                  f"plain {plain:,.0f} msg/s ({plain.cpu_us:.1f} us CPU/msg), "
                  f"ingest {ours:,.0f} msg/s ({ours.cpu_us:.1f} us CPU/msg), "
                  f"ratio {ours / plain:.2f}")  # fmt: skip
        plain_m = statistics.median(results["plain"])
        ours_m = statistics.median(results["ingest"])
        print(f"median: plain {plain_m:,.0f} msg/s, ingest {ours_m:,.0f} msg/s, "
              f"ratio {statistics.median(ratios):.2f} (median of the {rounds} rounds' ratios; "
              f"target >= 0.80)")  # fmt: skip
        plain_c = statistics.median(r.cpu_us for r in results["plain"])
        ours_c = statistics.median(r.cpu_us for r in results["ingest"])
        print(f"median CPU per message: plain {plain_c:.1f} us, ingest {ours_c:.1f} us "
              f"(CPU-bound ratio {plain_c / ours_c:.2f})")  # fmt: skip
        rate = rate or round(float(ours_m) / 2, -2)  # half the maximum, by default
        lat = await latency(bootstrap, broker, rate, 10.0)
        if lat:
            print(f"decision latency at {rate:,.0f} msg/s over {len(lat)} events: "
                  f"p50 {percentile(lat, 0.5) * 1000:.1f} ms, "
                  f"p99 {percentile(lat, 0.99) * 1000:.1f} ms")  # fmt: skip


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating pairs")
    parser.add_argument("--rate", type=float, help="paced msg/s for latency (default: half max)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-ingest-"))  # Kafka's log
    try:
        asyncio.run(main(args.broker, state, args.events, args.rounds, args.rate))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    cli()
