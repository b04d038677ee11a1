"""Benchmark: does the router's memory stay flat over long runs? RSS sampled through each run.

    nice -n 19 .venv/bin/python tests/bench/bench_memory.py [--role both|ingest|review]
        [--events 10000000] [--requests 100000] [--budget 400] [--period 1.0]
        [--ledger-retention-s S] [--intake-max-waiting N] [--trace]

Two runs, each of a real ``stream-router run`` subprocess (the code of this checkout: its
``PYTHONPATH`` is this file's repository), on the sandbox's Apache Kafka:

- **ingest** (``--events``, default 10 M): ``run --role ingest`` with bench_ingest.py's routing
  (``confidence`` and ``margin`` under ``any``, a 1 % ``sample``; metrics served on a free
  port), fed by a producer in its own process. The producer builds every event from a pool of
  10,000 pre-built ones (bench_ingest's events), each with its own ``event_id`` and key, and
  sends them in batches (aiokafka's batch API, one partition per batch) *concurrently with
  ingest*, keeping at most ``--window`` events (default 500,000) ahead of the ingest group's
  committed offsets, so the input never piles up 3 GB: the broker keeps 128 MiB per partition
  (``log.retention.bytes``) and deletes what is older, which is never less than the window.
  Progress is the ingest group's committed offsets: events routed and committed.
- **review** (``--requests``, default 100,000): a flood of review requests waits in
  review-requests before ``run --role review`` starts (A2I backend on the sandbox's emulator,
  EventBridge watcher, as bench_review.py's intake); the route's budget is ``--budget`` reviews
  a day (default 400, shared by the 4 partitions) with ``budget_fallback: accept-unreviewed``,
  so most requests are published unreviewed instead of starting a review; the few reviews
  started are answered by the emulator's simulated reviewers after about a second. Progress is
  the requests recorded (entries in the review role's ledger topic, read as they are written)
  and the outcomes published (records in the output and dead-letter topics); the run ends when
  every request is recorded and has its outcome.

RSS is the role's process and its children (``tree_rss_bytes``), sampled every ``--period``
seconds beside its progress and the load average. Each run prints a table at about ten evenly
spaced points of progress, the RSS at start (the first sample, before the first commit), the
peak and the end, and the slope of a least-squares line through the samples of the second half
of the run (from half the events or requests done to all of them), in MiB per million and in
bytes per event or request.

**Flat** (the pass/fail line): the fitted line grows less than ``--bound-mib`` (default 8 MiB)
over the second half, i.e. 1.7 bytes per event over 5 M events, 168 bytes per request over
50,000 requests. The first half is left out because start-up, the first batches, connection
buffers and the allocator's arenas settle there.

Measured (2026-12-07, 2-core VM shared with other suites, load average 3-11 during the runs;
Apache Kafka 4.4 of the sandbox; stream_router at 742da61):

- ingest, 10 M events: 26k events/s with the producer beside it; RSS 59.5 MiB before the first
  commit, 80 MiB from the first million on, peak 82.0, end 80.5; second half -0.10 MiB per
  million events: flat (PASS);
- review, 100,000 requests: recorded at 437/s, every outcome after 230 s (400 reviews started,
  the rest unreviewed by the fallback); RSS 122.8 MiB -> 189.9 MiB, linear, +544 bytes per
  request over the second half: not flat (FAIL). What grew was the ledger's CLOSED entries,
  kept in memory ``review.ledger_retention_s`` (7 days) for the dedupe of late copies: per entry
  537 bytes (the Entry dataclass and its ``__dict__`` 184, its ``first_name`` and ``flow``
  strings from the request's JSON 202, the ``(closed_s, name)`` tuple in ``_Partition.closed``
  64, the dict slot 38, two floats 48). With ``--ledger-retention-s 30`` the same flood levels
  off at 149.4 MiB (+12 bytes per request over the second half: PASS).

Later the same day (load 1-2, stream_router at a86c2f0): a closed entry is its name and its
closing second only (``PartitionLedger.closed``, about 135 bytes of objects), a waiting request
its bytes as written (638 bytes with its entry, from 2,493), and ``review.intake_max_waiting``
is 20,000 by default. The flood is recorded at 2,996/s (the bound paces it; 10,800/s with the
bound at 100,000), every outcome after 38 s either way; RSS 105.0 -> 171.9 MiB, +158 bytes per
request over the second half (+7.5 MiB): flat (PASS). With ``--intake-max-waiting 100000``:
peak 279.2 MiB, +1,613 bytes per request while the flood is recorded (FAIL).

``--trace`` runs the role under tracemalloc (5 frames; slower, and its RSS then includes the
traces, so the table is not the figure) and prints what grew between a snapshot half-way and one
at the end, by line, with the tracebacks of the three largest, and what is alive at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from bench_ingest import make_event
from bench_review import FLOW, requests, review_config

from stream_router.sandbox.kafka import KafkaBroker
from stream_router.sandbox.process import tree_rss_bytes
from stream_router.sandbox.settings import (
    Faults,
    FlowDefinition,
    Latency,
    Reviewers,
    SandboxSettings,
)
from stream_router.sandbox.stack import Sandbox
from stream_router.settings import load_settings
from stream_router.topics import create_topics

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4
MIB = 1024 * 1024
POOL = 10_000  #: distinct pre-built events the producer cycles through (ids and keys unique)
CHUNK = 20_000  #: events the producer sends before it waits for their acknowledgements
BATCH_BYTES = 512 * 1024  #: the producer's batches (below the broker's message.max.bytes)
RETAINED_BYTES = 128 * MIB  #: what the ingest run's broker keeps per partition
TRACED = "_traced"  #: argv[1] of the role's wrapper under --trace
SNAPSHOT_SIGNAL = signal.SIGRTMIN + 3  #: faust takes SIGUSR1 and SIGUSR2 for itself
FRAMES = 5


# -- sampling and the report ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    done: int  #: events committed, or requests recorded
    rss: int  #: bytes, the role's process tree
    load: float  #: 1-minute load average
    outcomes: int = 0  #: review: outcomes published so far


Progress = Callable[[], Awaitable[tuple[int, int]]]  #: (done, outcomes)


class Role:
    """One ``stream-router run`` subprocess, its log kept in a file."""

    def __init__(self, role: str, config: dict[str, Any], work: Path, env: dict[str, str],
                 snapshots: Path | None) -> None:  # fmt: skip
        path = work / f"{role}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.settings = load_settings(path)  # refused here, with its message, if it is wrong
        self.log = work / f"{role}.log"
        self.snapshots = snapshots
        argv = ["run", "--role", role, "--config", str(path)]
        if snapshots is None:
            command = [sys.executable, "-m", "stream_router.cli", *argv]
        else:
            command = [sys.executable, __file__, TRACED, str(snapshots), *argv]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=work
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def failed(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        tail = self.log.read_text(errors="replace").splitlines()[-30:]
        return f"the role exited with code {code}; its log ends:\n" + "\n".join(tail)

    def snapshot(self) -> None:
        if self.snapshots is not None:
            os.kill(self.pid, SNAPSHOT_SIGNAL)

    async def stop(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)


async def sample(role: Role, progress: Progress, finished: Callable[[int, int], bool],
                 period_s: float, timeout_s: float, total: int) -> list[Sample]:  # fmt: skip
    """RSS and progress every ``period_s`` until ``finished(done, outcomes)``; under --trace a
    snapshot at half of ``total`` and one at the end (the second half, as the slope)."""
    began = time.monotonic()
    samples: list[Sample] = []
    half_taken = False
    while True:
        done, outcomes = await progress()
        rss = tree_rss_bytes(role.pid)
        samples.append(Sample(time.monotonic() - began, done, rss, os.getloadavg()[0], outcomes))
        if not half_taken and done >= total / 2:
            role.snapshot()
            half_taken = True
        if finished(done, outcomes):
            role.snapshot()
            return samples
        problem = role.failed()
        if problem is not None:
            raise RuntimeError(problem)
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"not finished after {timeout_s:.0f} s: {done} of {total} done, "
                               f"{outcomes} outcomes")  # fmt: skip
        await asyncio.sleep(period_s)  # the sampling period


def second_half(samples: list[Sample], total: int) -> list[Sample]:
    """The samples from half of ``total`` done to the first with all of it done."""
    half: list[Sample] = []
    for one in samples:
        if one.done >= total / 2:
            half.append(one)
        if one.done >= total:
            break
    return half


def _start(samples: list[Sample]) -> Sample:
    """The last sample before anything was done: the role up, its first commit to come."""
    before = [s for s in samples if s.done == 0]
    return before[-1] if before else samples[0]


def report(title: str, unit: str, done: str, samples: list[Sample], total: int,
           bound_mib: float, outcomes: bool = False) -> bool:  # fmt: skip
    """Print the table and the verdict; returns whether RSS stayed flat."""
    print(f"\n{title}")
    head = f"{'elapsed s':>10} {unit + ' ' + done:>18} {'RSS MiB':>9} {'load 1m':>8}"
    print(head + (f" {'outcomes':>10}" if outcomes else ""))
    start = _start(samples)
    points = [start]
    for tenth in range(1, 11):
        target = total * tenth / 10
        point = next((s for s in samples if s.done >= target), samples[-1])
        if point is not points[-1]:
            points.append(point)
    if samples[-1] is not points[-1]:
        points.append(samples[-1])
    for one in points:
        line = (f"{one.elapsed_s:>10.0f} {one.done:>18,} {one.rss / MIB:>9.1f} "
                f"{one.load:>8.2f}")  # fmt: skip
        print(line + (f" {one.outcomes:>10,}" if outcomes else ""))
    peak = max(samples, key=lambda s: s.rss)
    print(f"RSS start {start.rss / MIB:.1f} MiB (the last sample before the first commit), "
          f"peak {peak.rss / MIB:.1f} MiB (at {peak.done:,} {unit}), "
          f"end {samples[-1].rss / MIB:.1f} MiB; {len(samples)} samples")  # fmt: skip
    half = second_half(samples, total)
    if len(half) < 3 or half[-1].done == half[0].done:
        print(f"too few samples in the second half ({len(half)}) for a slope: no verdict")
        return False
    fit = statistics.linear_regression([s.done for s in half], [s.rss for s in half])
    span = total - total / 2
    growth_mib = fit.slope * span / MIB
    print(f"second half ({half[0].done:,} -> {half[-1].done:,} {unit}, {len(half)} samples): "
          f"slope {fit.slope * 1e6 / MIB:+.2f} MiB per million {unit} "
          f"({fit.slope:+.2f} bytes per {unit.rstrip('s')}), fitted growth over the half "
          f"{growth_mib:+.1f} MiB; RSS {half[0].rss / MIB:.1f} -> "
          f"{half[-1].rss / MIB:.1f} MiB")  # fmt: skip
    flat = growth_mib < bound_mib
    print(f"{'PASS' if flat else 'FAIL'}: RSS {'flat' if flat else 'not flat'} "
          f"(criterion: fitted growth over the second half < {bound_mib:g} MiB)")  # fmt: skip
    return flat


# -- ingest: 10 M events fed by a producer in its own process -------------------------------


def event_pool(size: int) -> list[tuple[bytes, bytes]]:
    """bench_ingest's events, each cut around its id: (before the id, after it)."""
    rng = random.Random(1)
    pool = []
    for i in range(size):
        value = make_event(i, rng)
        before, sep, after = value.partition(f'"evt-{i:09d}"'.encode())
        if not sep:
            raise RuntimeError(f"event {i} has no id where bench_ingest puts it: {value[:80]!r}")
        pool.append((before, after))
    return pool


async def committed(admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]) -> int:
    offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    return sum(max(0, meta.offset) for meta in offsets.values())


async def feed(bootstrap: str, topic: str, group: str, total: int, window: int) -> None:
    """Produce ``total`` events, at most ``window`` ahead of ``group``'s committed offsets."""
    pool = event_pool(POOL)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_batch_size=BATCH_BYTES)  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await producer.start()
    await admin.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    sent = done = 0
    try:
        while sent < total:
            if sent - done >= window:
                done = await committed(admin, group, tps)
                if sent - done >= window:
                    await asyncio.sleep(0.2)  # the period at which it reads ingest's progress
                continue
            count = min(CHUNK, total - sent, done + window - sent)
            await send_chunk(producer, topic, pool, sent, count)
            sent += count
    finally:
        await admin.close()
        await producer.stop()


async def send_chunk(producer: AIOKafkaProducer, topic: str, pool: list[tuple[bytes, bytes]],
                     first: int, count: int) -> None:  # fmt: skip
    """Events ``first`` .. ``first + count - 1``, event i to partition i % PARTITIONS."""
    acks = []
    for partition in range(PARTITIONS):
        batch = producer.create_batch()
        for i in range(first + (partition - first) % PARTITIONS, first + count, PARTITIONS):
            before, after = pool[i % POOL]
            value = b'%s"evt-%010d"%s' % (before, i, after)
            if batch.append(key=b"k%d" % i, value=value, timestamp=None) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=b"k%d" % i, value=value, timestamp=None)
        if batch.record_count():
            acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)


def feed_process(bootstrap: str, topic: str, group: str, total: int, window: int) -> None:
    asyncio.run(feed(bootstrap, topic, group, total, window))


def ingest_config(bootstrap: str, tag: str, idempotence: bool) -> dict[str, Any]:
    """bench_ingest.py's settings (its three policies), as a configuration file says them."""
    return {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 6,
                  "heartbeat_interval_s": 1, "idempotence": idempotence},
        "ingest": {"input_topics": [f"mem-in-{tag}"], "output_topic": f"mem-out-{tag}",
                   "review_requests_topic": f"mem-rr-{tag}",
                   "dead_letter_topic": f"mem-dlq-{tag}", "group_id": f"mem-ingest-{tag}",
                   "fetch_wait_s": 0.05, "batch_max_records": 1000},
        "policies": {"version": "bench", "routes": [
            {"name": "uncertain", "review_flow": "fd-general",
             "policy": {"type": "any", "policies": [{"type": "confidence", "below": 0.6},
                                                    {"type": "margin", "min_margin": 0.02}]}},
            {"name": "audit", "review_flow": "fd-audit",
             "policy": {"type": "sample", "percent": 1}},
        ]},
        "metrics": {"enabled": True, "port": 0},
        "logging": {"level": "WARNING"},
    }  # fmt: skip


async def ingest_run(args: argparse.Namespace, env: dict[str, str], work: Path) -> bool:
    retained = {
        "log.retention.bytes": str(RETAINED_BYTES),
        "log.segment.bytes": str(16 * MIB),
        "log.retention.check.interval.ms": "5000",
        "log.segment.delete.delay.ms": "1000",
    }
    async with KafkaBroker(state_dir=work / "kafka", extra_config=retained) as broker:
        tag = uuid.uuid4().hex[:6]
        config = ingest_config(broker.bootstrap_servers, tag, broker.idempotence)
        settings = load_settings(_write(work / "check.yaml", config))
        await create_topics(settings)
        group, topic = settings.ingest.group_id, settings.ingest.input_topics[0]
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        spawn = multiprocessing.get_context("spawn")
        feeder = spawn.Process(target=feed_process, name="feeder", args=(
            broker.bootstrap_servers, topic, group, args.events, args.window))  # fmt: skip
        feeder.start()
        role = Role("ingest", config, work, env, _snapshots(args, work, "ingest"))
        began = time.monotonic()

        async def progress() -> tuple[int, int]:
            if feeder.exitcode not in (None, 0):
                raise RuntimeError(f"the producer exited with code {feeder.exitcode}")
            return await committed(admin, group, tps), 0

        try:
            samples = await sample(role, progress, lambda done, _: done >= args.events,
                                   args.period, args.timeout, args.events)  # fmt: skip
        finally:
            code = await role.stop()
            await asyncio.to_thread(feeder.join, 60)
            if feeder.is_alive():
                feeder.kill()
            await admin.close()
    wall = time.monotonic() - began
    print(f"\ningest: {args.events:,} events in {wall:.0f} s ({args.events / wall:,.0f} events/s "
          f"with the producer on the same machine); role exit code {code}")  # fmt: skip
    flat = report(f"run --role ingest, {args.events:,} events (RSS of the role's process tree)",
                  "events", "committed", samples, args.events, args.bound_mib)  # fmt: skip
    _print_growth(role)
    return flat


# -- review: a flood of requests, most over budget ------------------------------------------


async def end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    return sum((await consumer.end_offsets(tps)).values())


class LedgerReader:
    """Requests recorded: the review entries (keys without ``_``) its ledger topic holds.

    The review group's committed offsets are no measure of it: faust commits behind what the
    ledger has recorded (in a run under tracemalloc, 2,764 committed when 19,600 requests had
    their outcome).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="earliest")  # fmt: skip
        self.names: set[bytes] = set()

    @property
    def recorded(self) -> int:
        return len(self.names)

    async def run(self) -> None:
        await self.consumer.start()
        try:
            self.consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
            while True:
                for records in (await self.consumer.getmany(timeout_ms=500)).values():
                    self.names.update(r.key for r in records if r.key and r.key[:1] != b"_")
        finally:
            await self.consumer.stop()


async def fill(bootstrap: str, topic: str, records: Iterator[tuple[bytes, bytes]]) -> None:
    """The flood, in batches, each record in its key's partition as ingest writes it (the
    review role finds a review's loop events in the partition its request came from)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_batch_size=BATCH_BYTES)  # fmt: skip
    partitions = list(range(PARTITIONS))
    await producer.start()
    try:
        batches = [producer.create_batch() for _ in partitions]
        acks = []
        for key, value in records:
            p = DefaultPartitioner()(key, partitions, partitions)
            if batches[p].append(key=key, value=value, timestamp=None) is None:
                acks.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=value, timestamp=None)
        for p, batch in enumerate(batches):
            if batch.record_count():
                acks.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def review_run(args: argparse.Namespace, env: dict[str, str], work: Path) -> bool:
    answer = Reviewers(pickup=Latency(distribution="fixed", median_s=0.5),
                       work=Latency(distribution="fixed", median_s=0.5))  # fmt: skip
    settings = SandboxSettings(
        flow_definitions=[FlowDefinition(name=FLOW, reviewers=answer)],
        faults=Faults(quota_rps=args.review_rate * 2, quota_burst=10),
    )
    async with Sandbox(settings, broker="kafka", state_dir=work / "sandbox") as sandbox:
        info = sandbox.info()
        tag = uuid.uuid4().hex[:6]
        topics = {name: f"mem-{name}-{tag}" for name in ("rr", "out", "le", "dlq")}
        config = review_config(info, "a2i", tag, topics, args.review_rate, str(work))
        review = config["review"]
        review["budgets"] = {"general": {"per_day": args.budget}}
        review["budget_fallback"] = "accept-unreviewed"
        config["metrics"] = {"enabled": True, "port": 0}
        if args.intake_max_waiting:
            review["intake_max_waiting"] = args.intake_max_waiting
        if args.ledger_retention_s:
            review["ledger_retention_s"] = args.ledger_retention_s
            config["topics"] = {"review_requests_retention_s": args.ledger_retention_s}
        # As the README says: stream-router topics create (the ledger too, so it can be read).
        await create_topics(load_settings(_write(work / "check.yaml", config)))
        flood = requests(args.requests, info.flow_definition_arns[FLOW], tag)
        began = time.monotonic()
        await fill(info.bootstrap_servers, topics["rr"], iter(flood))
        print(f"\nreview: {args.requests:,} requests waiting in review-requests "
              f"({time.monotonic() - began:.0f} s to produce); budget {args.budget} a day, "
              f"fallback accept-unreviewed, rate {args.review_rate:g}/s")  # fmt: skip
        del flood
        outs = [TopicPartition(topics[t], p) for t in ("out", "dlq") for p in range(PARTITIONS)]
        reader = AIOKafkaConsumer(bootstrap_servers=info.bootstrap_servers)
        await reader.start()
        ledger = LedgerReader(info.bootstrap_servers, f"{review['app_id']}-ledger")
        reading = asyncio.create_task(ledger.run())
        role = Role("review", config, work, {**env, **info.env()},
                    _snapshots(args, work, "review"))  # fmt: skip

        async def progress() -> tuple[int, int]:
            if reading.done():
                reading.result()  # its error, if it failed
            return ledger.recorded, await end_offsets(reader, outs)

        began = time.monotonic()
        try:
            samples = await sample(
                role, progress, lambda done, out: done >= args.requests and out >= args.requests,
                args.period, args.timeout, args.requests,
            )  # fmt: skip
        finally:
            code = await role.stop()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            await reader.stop()
        wall = time.monotonic() - began
        recorded_at = next(s.elapsed_s for s in samples if s.done >= args.requests)
        stats = await sandbox.a2i.stats()
    started = stats["requests"].get("StartHumanLoop", {})
    print(f"review: all {args.requests:,} recorded after {recorded_at:.0f} s "
          f"({args.requests / recorded_at:,.0f} requests/s), every one with its outcome after "
          f"{wall:.0f} s ({samples[-1].outcomes:,} outcome records); StartHumanLoop answers "
          f"{started}; role exit code {code}")  # fmt: skip
    flat = report(f"run --role review, a flood of {args.requests:,} requests (RSS of the role's "
                  "process tree, against requests recorded)", "requests", "recorded", samples,
                  args.requests, args.bound_mib, outcomes=True)  # fmt: skip
    _print_growth(role)
    return flat


# -- under --trace: the role wrapped, and what grew ------------------------------------------


def _snapshots(args: argparse.Namespace, work: Path, role: str) -> Path | None:
    if not args.trace:
        return None
    path = work / f"{role}-snapshots"
    path.mkdir()
    return path


def traced_role(snapshots: Path, argv: list[str]) -> int:
    """The role under tracemalloc, dumping a snapshot on each SNAPSHOT_SIGNAL."""
    tracemalloc.start(FRAMES)
    numbers = itertools.count()

    def dump(signum: int, frame: object) -> None:
        path = snapshots / f"{next(numbers)}.snapshot"
        tracemalloc.take_snapshot().dump(str(path))

    signal.signal(SNAPSHOT_SIGNAL, dump)
    from stream_router.cli import main  # noqa: PLC0415 - imported once tracing runs

    return main(argv)


def _print_growth(role: Role) -> None:
    if role.snapshots is None:
        return
    paths = sorted(role.snapshots.glob("*.snapshot"), key=lambda p: int(p.stem))
    if len(paths) < 2:
        print(f"--trace: {len(paths)} snapshot(s) written, two needed")
        return
    first, last = (tracemalloc.Snapshot.load(str(p)) for p in (paths[0], paths[-1]))
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    first, last = first.filter_traces(keep), last.filter_traces(keep)
    print("\ntracemalloc, the end against half-way (traced memory, by line):")
    for stat in last.compare_to(first, "lineno")[:15]:
        print(f"  {stat}")
    print("tracemalloc, alive at the end (by line):")
    for stat in last.statistics("lineno")[:10]:
        print(f"  {stat}")
    print("tracemalloc, the three largest growths and the three largest alive at the end:")
    for stat in last.compare_to(first, "traceback")[:3]:
        print(f"  {stat.size_diff / MIB:+.1f} MiB, {stat.count_diff:+,} blocks, allocated at:")
        for line in stat.traceback.format(most_recent_first=True):
            print(f"    {line}")
    for alive in last.statistics("traceback")[:3]:
        print(f"  {alive.size / MIB:.1f} MiB, {alive.count:,} blocks, allocated at:")
        for line in alive.traceback.format(most_recent_first=True):
            print(f"    {line}")


# -- the command -----------------------------------------------------------------------------


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _commit() -> str:
    def git(*argv: str) -> str:
        argv = ("git", "-C", str(REPO), *argv)
        return subprocess.run(argv, check=False, capture_output=True, text=True).stdout.strip()

    dirty = " with uncommitted changes" if git("status", "--porcelain", "stream_router") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


async def main(args: argparse.Namespace) -> bool:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the roles run this checkout's code
    print(f"bench_memory: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; stream_router at "
          f"{REPO} ({_commit()}); Apache Kafka (sandbox)"
          f"{'; under tracemalloc: RSS is not the figure' if args.trace else ''}")  # fmt: skip
    verdicts = []
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        if args.role in ("both", "ingest"):
            verdicts.append(await ingest_run(args, env, work))
        if args.role in ("both", "review"):
            verdicts.append(await review_run(args, env, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    return all(verdicts)


def cli() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == TRACED:
        sys.exit(traced_role(Path(sys.argv[2]), sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("both", "ingest", "review"), default="both")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--window", type=int, default=500_000,
                        help="events produced at most ahead of ingest's commits")  # fmt: skip
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--budget", type=int, default=400, help="reviews a day (the route's)")
    parser.add_argument("--review-rate", type=float, default=20.0, help="review starts/s")
    parser.add_argument("--intake-max-waiting", type=int,
                        help="review.intake_max_waiting (default: the setting's)")  # fmt: skip
    parser.add_argument("--ledger-retention-s", type=float,
                        help="review.ledger_retention_s (default: the setting's)")  # fmt: skip
    parser.add_argument("--period", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per run")
    parser.add_argument("--bound-mib", type=float, default=8.0,
                        help="flat: fitted growth over the second half below this")  # fmt: skip
    parser.add_argument("--trace", action="store_true", help="the role under tracemalloc")
    args = parser.parse_args()
    # SIGTERM (as from timeout(1)) unwinds like Ctrl-C: the role and the sandbox are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(0 if asyncio.run(main(args)) else 1)


if __name__ == "__main__":
    cli()
