"""Benchmark: the review path's start rate and completion overhead, per review backend.

    .venv/bin/python tests/bench/bench_review.py [--backend both|a2i|label-studio]
        [--requests 300] [--rate 10] [--capacity 200] [--intake 3000]
        [--drain 0 [--drain-takeover-only]]

One sandbox runs the A2I emulator and, for ``label-studio``, a real Label Studio with its
simulated annotators; both backends are measured in the same run, so the figures sit side by
side. For each backend, N review requests wait in a fresh review-requests topic and
``stream-router run --role review`` starts them at the configured rate (burst 2: the first two
are immediate, then the steady rate); the emulator's quota is twice that rate. Simulated
reviewers (the same model for both backends) answer one second after a review starts.

Prints, per backend:
- the achieved start rate (loop creation times from ListHumanLoops; task creation times from
  Label Studio's task list) against the configured one, and the 429s seen (target: within 3 %,
  no 429);
- the completion overhead: from the reviewer's submission (the loop's end, the annotation's
  time) to the reviewed record's creation in Kafka, p50 and p99;
- the capacity (``--capacity N``, 0 to skip): N requests with no rate limit and no emulator
  quota, so the figure is how many reviews per second the backend takes (tasks created per
  second for Label Studio), with its ratio to A2I's emulator;
- Label Studio's start-up time (a fresh data directory: migrations, admin user, projects) and
  its resident memory after the runs;
- the intake of one review instance (``--intake N``, 0 to skip; A2I): N requests wait in a fresh
  review-requests topic; the rate is N over the span of the create times of their PENDING
  ledger records, first to last, with the role's CPU per request beside it, against the goal
  of 5,000/s (``rate_per_s`` 0.1 keeps the backend out of what is measured); a request recorded
  twice is reported;
- the drain of a flood (``--drain N``, 0 to skip; A2I): N requests against a budget of 10 a day
  with ``accept-unreviewed``, as in ``scripts/chaos --flood``: outcomes published per second,
  first to last, by one instance that recorded them itself (fresh), and by one that took the
  partitions over from an instance killed once every request was recorded.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_router.envelope import review_request
from stream_router.labelstudio.client import LabelStudioClient
from stream_router.models import Prediction, SourceRef
from stream_router.naming import loop_name
from stream_router.policies.routes import Decision
from stream_router.review.events import epoch_s
from stream_router.sandbox.process import tree_rss_bytes
from stream_router.sandbox.settings import (
    Faults,
    FlowDefinition,
    Latency,
    Reviewers,
    SandboxSettings,
)
from stream_router.sandbox.stack import Sandbox, SandboxInfo

PARTITIONS = 4
FLOW = "bench"
UNLIMITED_RPS = 1000.0  # the capacity runs: far above what either backend takes


def requests(count: int, flow: str, tag: str) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        event_id = f"b{tag}-{i}"
        event = {"event_id": event_id, "label": "cat", "confidence": 0.5, "ground_truth": "dog"}
        prediction = Prediction(
            event_id, "cat", 0.5, None, None, None, time.time(), event,
            SourceRef("bench-in", 0, i, f"k{i}".encode()),
        )  # fmt: skip
        name = loop_name(event_id, "bench")
        decision = Decision(True, "general", flow, "bench", "benchmark")
        out.append(
            (name.encode(), review_request(prediction, decision, "bench", name, time.time()))
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def review_config(
    info: SandboxInfo, backend: str, tag: str, topics: dict[str, str], rate: float, tmp: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kafka": info.kafka_config(session_timeout_s=6, heartbeat_interval_s=1),
        "ingest": {"review_requests_topic": topics["rr"], "output_topic": topics["out"],
                   "dead_letter_topic": topics["dlq"]},
        "review": {"app_id": f"bench-{tag}", "loop_events_topic": topics["le"],
                   "topic_partitions": PARTITIONS, "rate_per_s": rate, "burst": 2,
                   "concurrency": 16, "data_dir": str(Path(tmp) / "data")},
        "aws": {"region": info.region},
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING"},
    }  # fmt: skip
    if backend == "a2i":
        config["watchers"] = {"enabled": ["eventbridge"]}
        config["review"]["backend"] = {"name": "a2i", "event_queue_url": info.event_queue_url,
                                       "wait_time_s": 1}  # fmt: skip
    else:  # Label Studio's own signals: its webhook and the reconciler
        config["review"]["backend"] = {
            "name": "label-studio",
            "url": info.label_studio_url,
            "api_token": info.label_studio_token,
            "projects": {FLOW: {"project": info.label_studio_projects[FLOW],
                                "annotations_per_task": 1, "deadline_s": 3600}},
            "webhook": {"port": 0},
        }  # fmt: skip
    flow = info.flow_definition_arns[FLOW] if backend == "a2i" else FLOW
    # The requests name route `general`: the review role refuses requests of unconfigured routes.
    config["policies"] = {"version": "bench", "routes": [{"name": "general", "review_flow": flow,
                          "policy": {"type": "confidence", "below": 0.7}}]}  # fmt: skip
    config["review"]["budgets"] = {"general": {"unlimited": True}}  # it measures throughput
    return config


def start_review(info: SandboxInfo, config: dict[str, Any], tmp: str) -> subprocess.Popen[bytes]:
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


@dataclass
class Run:
    """One backend's run: when each review was created, and the reviewed records."""

    backend: str
    count: int
    rate: float
    created: list[float] = field(default_factory=list)
    results: list[tuple[float, Any]] = field(default_factory=list)
    throttled: int | None = None  #: 429s the backend answered (None: it has no quota)
    failed: int | None = None  #: 500s the backend answered

    @property
    def achieved(self) -> float:
        if len(self.created) < 2 or self.created[-1] <= self.created[0]:
            return 0.0
        return (len(self.created) - 1) / (self.created[-1] - self.created[0])

    def overhead(self) -> list[float]:
        return [
            record_ts - envelope["review"]["ended_s"]
            for record_ts, envelope in self.results
            if envelope.get("review") and envelope["review"].get("ended_s")
        ]


async def run(sandbox: Sandbox, backend: str, count: int, rate: float) -> Run:
    """N requests through one review instance on ``backend``, until N records are out."""
    info = sandbox.info()
    tag = uuid.uuid4().hex[:6]
    topics = await new_topics(sandbox, tag)
    flow = info.flow_definition_arns[FLOW] if backend == "a2i" else FLOW
    records = requests(count, flow, tag)
    names = {key.decode() for key, _ in records}
    before = await sandbox.a2i.stats() if backend == "a2i" else None
    await fill(info.bootstrap_servers, topics["rr"], records)
    with tempfile.TemporaryDirectory() as tmp:
        router = start_review(info, review_config(info, backend, tag, topics, rate, tmp), tmp)
        try:
            results = await read_results(info.bootstrap_servers, topics["out"], count)
        finally:
            router.send_signal(signal.SIGTERM)
            await asyncio.to_thread(router.wait, 60)
    outcome = Run(backend, count, rate, results=results)
    if backend == "a2i":
        outcome.created = a2i_created(info, flow, names)
        after = await sandbox.a2i.stats()
        assert before is not None
        outcome.throttled = _count(after, before, "ThrottlingException")
        outcome.failed = _count(after, before, "InternalServerException")
    else:
        outcome.created = await label_studio_created(info, names)
    return outcome


def _count(after: dict[str, Any], before: dict[str, Any], error: str) -> int:
    now = after["requests"].get("StartHumanLoop", {}).get(error, 0)
    then = before["requests"].get("StartHumanLoop", {}).get(error, 0)
    return int(now - then)


def a2i_created(info: SandboxInfo, flow: str, names: set[str]) -> list[float]:
    a2i = boto3.client("sagemaker-a2i-runtime", endpoint_url=info.a2i_endpoint_url,
                       region_name=info.region, aws_access_key_id="x",
                       aws_secret_access_key="x")  # fmt: skip
    return sorted(
        s["CreationTime"].timestamp()
        for page in a2i.get_paginator("list_human_loops").paginate(FlowDefinitionArn=flow)
        for s in page["HumanLoopSummaries"]
        if s["HumanLoopName"] in names
    )


async def label_studio_created(info: SandboxInfo, names: set[str]) -> list[float]:
    if not info.label_studio_url or not info.label_studio_token:
        raise RuntimeError("the sandbox runs no Label Studio")
    created: list[float] = []
    async with LabelStudioClient(info.label_studio_url, info.label_studio_token) as client:
        async for task in client.tasks(info.label_studio_projects[FLOW], page_size=500):
            when = epoch_s(task.get("created_at"))
            if task.get("data", {}).get("review_name") in names and when is not None:
                created.append(when)
    return sorted(created)


async def intake(sandbox: Sandbox, count: int) -> float | None:
    """Requests recorded per second by one review instance (see the module docstring): the
    create times of the PENDING entries its ledger holds, first to last."""
    info = sandbox.info()
    tag = uuid.uuid4().hex[:6]
    topics = await new_topics(sandbox, tag)
    await fill(info.bootstrap_servers, topics["rr"],
               requests(count, info.flow_definition_arns[FLOW], tag))  # fmt: skip
    ledger = f"bench-{tag}-ledger"
    with tempfile.TemporaryDirectory() as tmp:
        config = review_config(info, "a2i", tag, topics, 0.1, tmp)
        config["review"]["intake_max_waiting"] = count + 1  # the recording, not the bound
        router = start_review(info, config, tmp)
        try:
            cpu: list[tuple[float, float]] = []
            recorded = await pending_times(info.bootstrap_servers, ledger, count, router, cpu)
        finally:
            router.send_signal(signal.SIGTERM)
            await asyncio.to_thread(router.wait, 60)
    if len(recorded) < 2 or recorded[-1] <= recorded[0]:
        print(f"intake: the review role recorded {len(recorded)} of {count} requests")
        return None
    rate = (len(recorded) - 1) / (recorded[-1] - recorded[0])
    used = cpu_between(cpu, recorded[0], recorded[-1])
    print(f"intake of one review instance: {len(recorded)} of {count} requests recorded, "
          f"{rate:.0f} requests/s (ledger create times, first to last; {PARTITIONS} "
          f"partitions, one agent); CPU {used / (len(recorded) - 1) * 1e6:.0f} µs a request "
          f"(the role's process); goal 5,000/s: ratio {rate / 5000:.2f}; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    return rate


async def drain(sandbox: Sandbox, count: int, *, takeover: bool) -> float | None:
    """Outcomes published per second by one review instance working off ``count`` requests
    over budget (see the module docstring); ``takeover``: by a second instance, once the
    first recorded every request and was killed."""
    info = sandbox.info()
    tag = uuid.uuid4().hex[:6]
    topics = await new_topics(sandbox, tag)
    await fill(info.bootstrap_servers, topics["rr"],
               requests(count, info.flow_definition_arns[FLOW], tag))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        config = review_config(info, "a2i", tag, topics, 1000.0, tmp)
        config["review"]["budgets"] = {"general": {"per_day": 10}}
        config["review"]["budget_fallback"] = "accept-unreviewed"
        if takeover:  # the first instance records; its starts wait for rate (0.1/s) unbilled
            slow = {**config["review"], "budgets": {"general": {"unlimited": True}},
                    "rate_per_s": 0.1}  # fmt: skip
            first = start_review(info, {**config, "review": slow}, tmp)
            try:
                ledger = f"bench-{tag}-ledger"
                recorded = await pending_times(info.bootstrap_servers, ledger, count, first, [])
            finally:
                first.kill()
                await asyncio.to_thread(first.wait, 60)
            if len(recorded) < count:
                print(f"drain: the first instance recorded {len(recorded)} of {count}")
                return None
        router = start_review(info, config, tmp)
        try:
            results = await read_results(info.bootstrap_servers, topics["out"], count)
        finally:
            router.send_signal(signal.SIGTERM)
            await asyncio.to_thread(router.wait, 60)
    times = sorted(ts for ts, _ in results)
    who = "after a takeover" if takeover else "recorded by the same instance"
    if len(times) < 2 or times[-1] <= times[0]:
        print(f"drain ({who}): {len(times)} of {count} outcomes")
        return None
    rate = (len(times) - 1) / (times[-1] - times[0])
    print(f"drain of a flood over budget ({who}): {len(times)} of {count} outcomes, "
          f"{rate:.0f}/s (first to last, {times[-1] - times[0]:.1f} s); "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    return rate


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds the samples (wall time, CPU seconds) show spent from ``start`` to ``end``,
    from the samples nearest to each (taken every half second or so)."""

    def at(when: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - when))[1]

    return at(end) - at(start)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pending_times(
    bootstrap: str,
    ledger: str,
    count: int,
    router: subprocess.Popen[bytes],
    cpu: list[tuple[float, float]],
) -> list[float]:
    """The create times of the ledger's first PENDING record of each name, once ``count``
    names have one (or the review role exits, or ten minutes pass); ``cpu`` gathers (wall time,
    the role's CPU seconds) meanwhile. A name recorded PENDING twice (not its start's sent mark)
    is a request recorded twice: reported."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    times: list[float] = []
    seen: set[bytes] = set()
    twice = 0
    deadline = time.monotonic() + 600
    try:
        while ledger not in await admin.list_topics():  # the role creates it at start-up
            if router.poll() is not None or time.monotonic() > deadline:
                return times
            await asyncio.sleep(0.2)  # polling the broker's metadata, not synchronising
        partitions = [TopicPartition(ledger, p) for p in range(PARTITIONS)]  # topic_partitions
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while len(times) < count and router.poll() is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            cpu.append((time.time(), cpu_seconds(router.pid)))
            for records in batch.values():
                for r in records:
                    if not r.value or b'"state":"pending"' not in r.value:
                        continue
                    if r.key not in seen:
                        seen.add(r.key)
                        times.append(r.timestamp / 1000)
                    elif b'"sent":true' not in r.value:
                        twice += 1
    finally:
        if twice:
            print(f"{ledger}: {twice} request(s) recorded PENDING twice")
        await consumer.stop()
        await admin.close()
    return sorted(times)


def label_studio_rss(sandbox: Sandbox) -> int:
    """Resident memory of Label Studio's process and its children."""
    pid = sandbox.label_studio.process.pid
    return 0 if pid is None else tree_rss_bytes(pid)


def report(paced: Run) -> None:
    print(f"{paced.backend}: review requests {paced.count}; reviews created "
          f"{len(paced.created)}; results {len(paced.results)}")  # fmt: skip
    quota = ("no quota" if paced.throttled is None
             else f"429s: {paced.throttled}, 500s: {paced.failed}")  # fmt: skip
    print(f"{paced.backend}: start rate configured {paced.rate:.2f}/s, achieved "
          f"{paced.achieved:.2f}/s ({(paced.achieved / paced.rate - 1) * 100:+.1f} %); "
          f"{quota}")  # fmt: skip
    overhead = paced.overhead()
    if overhead:
        print(f"{paced.backend}: completion -> reviewed record, {len(overhead)} results: "
              f"p50 {percentile(overhead, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(overhead, 0.99) * 1000:.0f} ms, "
              f"mean {statistics.mean(overhead) * 1000:.0f} ms")  # fmt: skip


async def main(backends: list[str], count: int, rate: float, capacity: int,
               intake_count: int, drain_count: int = 0, drain_from: int = 0) -> None:  # fmt: skip
    fixed = Reviewers(
        pickup=Latency(distribution="fixed", median_s=0.5),
        work=Latency(distribution="fixed", median_s=0.5),
    )
    settings = SandboxSettings(
        flow_definitions=[FlowDefinition(name=FLOW, reviewers=fixed)],
        faults=Faults(quota_rps=rate * 2, quota_burst=2),
    )
    async with Sandbox(settings) as sandbox:
        started_s = None
        if "label-studio" in backends:
            began = time.monotonic()
            await sandbox.start_label_studio()
            started_s = time.monotonic() - began
        paced = [await run(sandbox, backend, count, rate) for backend in backends if count]
        unlimited = []
        if capacity:
            await sandbox.a2i.set_faults(quota_rps=UNLIMITED_RPS * 10, quota_burst=1000)
            unlimited = [await run(sandbox, b, capacity, UNLIMITED_RPS) for b in backends]
        resident = label_studio_rss(sandbox) if started_s is not None else 0
        if intake_count:
            await sandbox.a2i.set_faults(quota_rps=rate * 2, quota_burst=2)
            await intake(sandbox, intake_count)
        if drain_count:
            await sandbox.a2i.set_faults(quota_rps=rate * 2, quota_burst=2)
            for takeover in (False, True)[drain_from:]:
                await drain(sandbox, drain_count, takeover=takeover)
    for one in paced:
        report(one)
    for one in unlimited:
        print(f"{one.backend}: capacity, {one.count} requests with no rate limit: "
              f"{one.achieved:.1f} reviews created/s ({len(one.created)} created, "
              f"{len(one.results)} results)")  # fmt: skip
    rates = {one.backend: one.achieved for one in unlimited}
    if rates.get("a2i") and "label-studio" in rates:
        print(f"capacity ratio, Label Studio / A2I emulator: "
              f"{rates['label-studio'] / rates['a2i']:.2f}")  # fmt: skip
    if started_s is not None:
        print(f"label-studio: start-up to provisioned (fresh data dir) {started_s:.1f} s; "
              f"resident memory after the runs {resident / 1e6:.0f} MB")  # fmt: skip


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
    parser.add_argument("--backend", choices=("both", "a2i", "label-studio"), default="both")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=200)
    parser.add_argument("--intake", type=int, default=3000)
    parser.add_argument("--drain", type=int, default=0)
    parser.add_argument("--drain-takeover-only", action="store_true")
    args = parser.parse_args()
    backends = ["a2i", "label-studio"] if args.backend == "both" else [args.backend]
    asyncio.run(main(backends, args.requests, args.rate, args.capacity, args.intake, args.drain,
                     int(args.drain_takeover_only)))  # fmt: skip


if __name__ == "__main__":
    cli()
