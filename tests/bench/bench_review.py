"""Benchmark: the review path's StartHumanLoop rate and its completion overhead.

    .venv/bin/python tests/bench/bench_review.py [--requests 300] [--rate 10]

On the sandbox, N review requests wait in the review-requests topic; ``stream-router run --role
review`` starts them at the configured rate (burst 2: the first two are immediate, then the
steady rate)
against an emulator whose quota is twice that rate. Simulated reviewers answer one second after
a loop starts.

Prints:
- the achieved StartHumanLoop rate (loop creation times from ListHumanLoops) against the
  configured one, and the 429s seen (target: within 3 %, no 429);
- the completion overhead: from the reviewer's submission (the loop's end) to the reviewed
  record's creation in Kafka, p50 and p99.
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


async def main(count: int, rate: float) -> None:
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
        topics = {"rr": f"bench-rr-{tag}", "out": f"bench-out-{tag}", "le": f"bench-le-{tag}"}
        await sandbox.broker.create_topics(topics.values(), partitions=PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=info.bootstrap_servers, acks="all")
        await producer.start()
        for key, value in requests(count, flow):
            await producer.send(topics["rr"], value, key=key)
        await producer.stop()

        with tempfile.TemporaryDirectory() as tmp:
            config = {
                "kafka": {"bootstrap_servers": info.bootstrap_servers, "session_timeout_s": 6,
                          "heartbeat_interval_s": 1},
                "ingest": {"review_requests_topic": topics["rr"], "output_topic": topics["out"],
                           "dead_letter_topic": f"bench-dlq-{tag}"},
                "review": {"app_id": f"bench-{tag}", "loop_events_topic": topics["le"],
                           "topic_partitions": PARTITIONS, "rate_per_s": rate, "burst": 2,
                           "concurrency": 16, "data_dir": str(Path(tmp) / "data")},
                "watchers": {"enabled": ["eventbridge"], "event_queue_url": info.event_queue_url,
                             "wait_time_s": 1},
                "aws": {"region": info.region},
                "metrics": {"enabled": False},
                "logging": {"level": "WARNING"},
            }  # fmt: skip
            path = Path(tmp) / "review.yaml"
            path.write_text(yaml.safe_dump(config))
            router = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                [sys.executable, "-m", "stream_router.cli", "run", "--role", "review",
                 "--config", str(path)],
                env={**os.environ, **info.env()},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp,
            )  # fmt: skip
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
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rate))


if __name__ == "__main__":
    cli()
