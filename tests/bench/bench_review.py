"""Benchmark: the review path's StartHumanLoop rate and its completion overhead.

    .venv/bin/python tests/bench/bench_review.py [--requests 300] [--rate 10] [--intake 3000]

On the sandbox, N review requests wait in the review-requests topic; ``stream-router run --role
review`` starts them at the configured rate (burst 2: the first two are immediate, then the
steady rate)
against an emulator whose quota is twice that rate. Simulated reviewers answer one second after
a loop starts.

Prints:
- the achieved StartHumanLoop rate (loop creation times from ListHumanLoops) against the
  configured one, and the 429s seen (target: within 3 %, no 429);
- the completion overhead: from the reviewer's submission (the loop's end) to the reviewed
  record's creation in Kafka, p50 and p99;
- the intake of one review instance (``--intake N``, 0 to skip): N requests wait in a fresh
  review-requests topic; the review role records each in its ledger before faust commits it,
  so the rate at which the group's committed offsets reach the end is the rate of requests
  recorded per second (``rate_per_s`` 0.1 keeps the backend out of what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_router.envelope import review_request
from stream_router.models import Prediction, SourceRef
from stream_router.naming import loop_name
from stream_router.policies.routes import Decision
from stream_router.sandbox.settings import (
    Faults,
    FlowDefinition,
    Latency,
    Reviewers,
    SandboxSettings,
)
from stream_router.sandbox.stack import Sandbox

PARTITIONS = 4


def requests(count: int, flow: str) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        event = {"event_id": f"b{i}", "label": "cat", "confidence": 0.5, "ground_truth": "dog"}
        prediction = Prediction(
            f"b{i}", "cat", 0.5, None, None, None, time.time(), event,
            SourceRef("bench-in", 0, i, f"k{i}".encode()),
        )  # fmt: skip
        name = loop_name(f"b{i}", "bench")
        decision = Decision(True, "general", flow, "bench", "benchmark")
        out.append(
            (name.encode(), review_request(prediction, decision, "bench", name, time.time()))
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def review_config(info: Any, tag: str, topics: dict[str, str], rate: float, tmp: str) -> Any:
    return {
        "kafka": {"bootstrap_servers": info.bootstrap_servers, "session_timeout_s": 6,
                  "heartbeat_interval_s": 1},
        "ingest": {"review_requests_topic": topics["rr"], "output_topic": topics["out"],
                   "dead_letter_topic": topics["dlq"]},
        "review": {"app_id": f"bench-{tag}", "loop_events_topic": topics["le"],
                   "topic_partitions": PARTITIONS, "rate_per_s": rate, "burst": 2,
                   "concurrency": 16, "data_dir": str(Path(tmp) / "data")},
        "watchers": {"enabled": ["eventbridge"], "event_queue_url": info.event_queue_url,
                     "wait_time_s": 1},
        "aws": {"region": info.region},
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING"},
    }  # fmt: skip


def start_review(info: Any, config: Any, tmp: str) -> subprocess.Popen[bytes]:
    path = Path(tmp) / "review.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [sys.executable, "-m", "stream_router.cli", "run", "--role", "review",
         "--config", str(path)],
        env={**os.environ, **info.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )  # fmt: skip


async def new_topics(sandbox: Sandbox, tag: str) -> dict[str, str]:
    topics = {name: f"bench-{name}-{tag}" for name in ("rr", "out", "le", "dlq")}
    await sandbox.broker.create_topics(topics.values(), partitions=PARTITIONS)
    return topics


async def fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in records])
    finally:
        await producer.stop()


async def intake(sandbox: Sandbox, count: int) -> None:
    """Requests recorded per second by one review instance (see the module docstring)."""
    info = sandbox.info()
    tag = uuid.uuid4().hex[:6]
    topics = await new_topics(sandbox, tag)
    await fill(info.bootstrap_servers, topics["rr"],
               requests(count, info.flow_definition_arns["bench"]))  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=info.bootstrap_servers)
    await admin.start()
    tps = [TopicPartition(topics["rr"], p) for p in range(PARTITIONS)]
    with tempfile.TemporaryDirectory() as tmp:
        router = start_review(info, review_config(info, tag, topics, 0.1, tmp), tmp)
        first: tuple[float, int] | None = None
        done = time.monotonic()
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                offsets = await admin.list_consumer_group_offsets(f"bench-{tag}", partitions=tps)
                committed = sum(max(0, meta.offset) for meta in offsets.values())
                now = time.monotonic()
                if first is None and committed > 0:
                    first = (now, committed)
                if committed >= count:
                    done = now
                    break
                await asyncio.sleep(0.1)  # sampling the group's progress, not synchronising
        finally:
            router.send_signal(signal.SIGTERM)
            await asyncio.to_thread(router.wait, 60)
            await admin.close()
    if first is None or done <= first[0]:
        print(f"intake: the review role recorded nothing measurable of {count} requests")
        return
    rate = (count - first[1]) / (done - first[0])
    print(f"intake of one review instance: {count} requests recorded, {rate:.0f} requests/s "
          f"(from the first commit to the last; {PARTITIONS} partitions, one agent)")  # fmt: skip


async def main(count: int, rate: float, intake_count: int) -> None:
    fixed = Reviewers(
        pickup=Latency(distribution="fixed", median_s=0.5),
        work=Latency(distribution="fixed", median_s=0.5),
    )
    settings = SandboxSettings(
        flow_definitions=[FlowDefinition(name="bench", reviewers=fixed)],
        faults=Faults(quota_rps=rate * 2, quota_burst=2),
    )
    async with Sandbox(settings) as sandbox:
        info = sandbox.info()
        flow = info.flow_definition_arns["bench"]
        tag = uuid.uuid4().hex[:6]
        topics = await new_topics(sandbox, tag)
        await fill(info.bootstrap_servers, topics["rr"], requests(count, flow))

        with tempfile.TemporaryDirectory() as tmp:
            router = start_review(info, review_config(info, tag, topics, rate, tmp), tmp)
            results = await read_results(info.bootstrap_servers, topics["out"], count)
            router.send_signal(signal.SIGTERM)
            await asyncio.to_thread(router.wait, 60)

        a2i = boto3.client("sagemaker-a2i-runtime", endpoint_url=info.a2i_endpoint_url,
                           region_name=info.region, aws_access_key_id="x",
                           aws_secret_access_key="x")  # fmt: skip
        created = sorted(
            s["CreationTime"].timestamp()
            for page in a2i.get_paginator("list_human_loops").paginate(FlowDefinitionArn=flow)
            for s in page["HumanLoopSummaries"]
        )
        stats = await sandbox.a2i.stats()
        if intake_count:
            await intake(sandbox, intake_count)
    starts = stats["requests"].get("StartHumanLoop", {})
    achieved = (len(created) - 1) / (created[-1] - created[0])
    print(f"review requests: {count}; loops created: {len(created)}; results: {len(results)}")
    print(f"StartHumanLoop rate: configured {rate:.2f}/s, achieved {achieved:.2f}/s "
          f"({(achieved / rate - 1) * 100:+.1f} %); 429s: {starts.get('ThrottlingException', 0)}, "
          f"500s: {starts.get('InternalServerException', 0)}")  # fmt: skip
    overhead = [
        record_ts - envelope["review"]["ended_s"]
        for record_ts, envelope in results
        if envelope.get("review") and envelope["review"].get("ended_s")
    ]
    if overhead:
        print(f"completion overhead (reviewer submission -> reviewed record), {len(overhead)} "
              f"results: p50 {percentile(overhead, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(overhead, 0.99) * 1000:.0f} ms, "
              f"mean {statistics.mean(overhead) * 1000:.0f} ms")  # fmt: skip


async def read_results(bootstrap: str, topic: str, count: int) -> list[tuple[float, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    results: list[tuple[float, Any]] = []
    deadline = time.monotonic() + count * 2 + 120
    try:
        while len(results) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                results.extend((r.timestamp / 1000, orjson.loads(r.value)) for r in records)
    finally:
        await consumer.stop()
    return results


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--intake", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rate, args.intake))


if __name__ == "__main__":
    cli()
