"""``bench_ingest.py``'s latency runs: a production router, a paced producer, what each spike was.

One run at one rate:

1. a fresh input topic and the router's three output topics (4 partitions each);
2. the router as a deployment runs it, ``stream-router run --role ingest`` (through
   ``ingest_role.py``, which times its garbage collections), in its own process, importing this
   checkout; the run waits until its ``/readyz`` answers 200 (partitions assigned, a fetch
   answered: its start-up, metadata look-ups included, is behind it);
   with a prelude (``prelude_s``, ``bench_ingest.py --prelude-s``, 3 s by default), a first
   router decides that many seconds of paced events, unmeasured, and is stopped (SIGTERM), and a
   second one is started as above: the partitions have had traffic, as a deployment's have. On
   new partitions the broker answers slowly for about a second (measured 2026-12-07 at 30,000
   msg/s, each run's first second against the rest, p99: append to decision 32 against 8 ms,
   the event's timestamp to its append 17.5 against 8.7; after a 3 s prelude with the same
   router, 6.0 and 7.9 ms in the first second; with a router restarted after it, 7-8 and
   7.3-7.4 ms), which put a spike at the start of every run;
3. the paced producer (``ingest_pacer.py``) in a third process: it builds every event, warms
   its connection, then sends on schedule, stamping each event as it produces it;
4. once every event has its decision on the output or review-requests topic, the router is
   stopped with SIGTERM (it drains and commits) and the decisions are read back.

The decision latency of an event is its output record's create time minus the event's
timestamp. Clocks: all three processes read the same system clock (``CLOCK_REALTIME``, one
machine), so no offset between them; the create time is in whole milliseconds, set by the
router's Kafka client (``int(time.time() * 1000)``) when it appends the record to the batch it
then produces, i.e. once the decision is made and encoded, before the batch is sent and
acknowledged. Truncation makes each figure 0-1 ms low (0.5 ms on average).

The input topic keeps the broker's append time (``message.timestamp.type`` LogAppendTime), so
each latency splits in two: the event's timestamp to its append (the pacer's client and the
broker) and the append to the decision (the router's fetch, work and batching). The report
gives both, for the run's first second and for the rest.

A spike is a run of events slower than ``SPIKE_S`` whose intervals (event timestamp to create
time) overlap. Each is set against what happened meanwhile: the broker JVM's collections (its
GC log, ``-Xlog:gc`` with wall-clock milliseconds; each pause ends when its line is written)
and the router's collections (``gc.callbacks``). A spike with neither is the machine: other
processes on 2 cores, the scheduler, the network stack.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stream_router.sandbox.broker import Broker
from stream_router.sandbox.process import free_port
from tests.bench.ingest_events import PARTITIONS, router_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPIKE_S = 0.020  # the p99 goal
#: The start of a run left out of the steady-state line (see ``LatencyRun._steady_line``).
STEADY_AFTER_S = 1.0
#: A Python collection at least this long counts as a cause of a spike it overlaps.
PYTHON_GC_FLOOR_S = 0.001
_PAUSE = re.compile(r"^\[(\d+)ms\].*\bPause\b.*?([\d.]+)ms$")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` gives them."""
    return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])


def busy_jiffies() -> int:
    """CPU time the whole machine spent busy (every core, every process), in clock ticks."""
    fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def process_jiffies(pid: int | None) -> int:
    """CPU time of process ``pid`` (every thread, user and system), in clock ticks."""
    if pid is None:
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (already sorted), nearest rank."""
    return values[min(len(values) - 1, int(q * len(values)))]


def jvm_pauses(gc_log: Path) -> list[tuple[float, float]]:
    """``(start_s, duration_s)`` of every pause in a JVM's ``-Xlog:gc:...:timemillis`` log."""
    pauses = []
    if gc_log.is_file():
        for line in gc_log.read_text(encoding="utf-8", errors="replace").splitlines():
            found = _PAUSE.match(line)
            if found:
                ended, took = int(found[1]) / 1000, float(found[2]) / 1000
                pauses.append((ended - took, took))
    return pauses


@dataclass
class Spike:
    """Overlapping slow events: their window, and the collections inside it."""

    began: float
    ended: float
    events: int = 0
    worst_s: float = 0.0
    jvm_s: float = 0.0  # broker GC pause time inside the window
    python_s: float = 0.0  # the longest router collection (>= PYTHON_GC_FLOOR_S) inside it
    python_total_s: float = 0.0  # every router collection's time inside it

    @property
    def cause(self) -> str:
        if self.jvm_s and self.python_s:
            return "both"
        if self.jvm_s:
            return "broker GC"
        if self.python_s:
            return "Python GC"
        return "neither"


@dataclass
class LatencyRun:
    """One run's measurements (times in seconds, wall clock)."""

    rate: float
    freeze: bool
    events: list[tuple[float, float]] = field(default_factory=list)  # (timestamp, decided)
    pacer: dict[str, float] = field(default_factory=dict)
    python_gc: list[tuple[float, float, int]] = field(default_factory=list)
    frozen: int = 0
    jvm: list[tuple[float, float]] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    #: The router's batches (each one fetch and one produce), records and seconds in them.
    router: dict[str, float] = field(default_factory=dict)
    #: Cores used while the pacer sent, by whom: router, broker, pacer, others (the machine).
    cores: dict[str, float] = field(default_factory=dict)
    #: (timestamp, appended, decided) of each event whose append time the input topic has.
    stages: list[tuple[float, float, float]] = field(default_factory=list)

    def latencies(self) -> list[float]:
        return sorted(decided - ts for ts, decided in self.events)

    def spikes(self) -> list[Spike]:
        slow = sorted((ts, decided) for ts, decided in self.events if decided - ts > SPIKE_S)
        spikes: list[Spike] = []
        for ts, decided in slow:
            if not spikes or ts > spikes[-1].ended:
                spikes.append(Spike(ts, decided))
            spike = spikes[-1]
            spike.ended = max(spike.ended, decided)
            spike.events += 1
            spike.worst_s = max(spike.worst_s, decided - ts)
        python = sorted((start, took) for start, took, _ in self.python_gc)
        for spike in spikes:
            spike.jvm_s = _overlap(self.jvm, spike.began, spike.ended)
            spike.python_total_s = _overlap(python, spike.began, spike.ended)
            inside = [took for start, took in python if _overlaps(start, took, spike)]
            spike.python_s = max((t for t in inside if t >= PYTHON_GC_FLOOR_S), default=0.0)
        return spikes

    def report(self, label: str) -> list[str]:
        lat = self.latencies()
        if not lat:
            return [f"{label}: no decisions read back"]
        ms = [value * 1000 for value in lat]
        p10, p50, p90, p99 = (percentile(ms, q) for q in (0.1, 0.5, 0.9, 0.99))
        first = [decided - ts for ts, decided in sorted(self.events)[:1000]]
        began, ended = self.pacer["began"], self.pacer["ended"] + 1.0
        seconds = ended - began
        jvm = [took * 1000 for start, took in self.jvm if began <= start <= ended]
        spikes = self.spikes()
        batches = max(1.0, self.router.get("batches", 0.0))
        causes = Counter(spike.cause for spike in spikes)
        return [
            f"{label}: {self.rate:,.0f} msg/s, {len(lat):,} events, gc.freeze "
            f"{'on' if self.freeze else 'off'} (load {self.load_before} -> {self.load_after}): "
            f"p10 {p10:.1f} ms, p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
            f"max {ms[-1]:.1f} ms; p99 / 20 ms = {p99 / 20:.2f}, p50 / 5 ms = {p50 / 5:.2f}",
            self._steady_line(),
            *self._stage_lines(),
            "  cores busy while it was sent (of 2): "
            + ", ".join(f"{who} {used:.2f}" for who, used in self.cores.items()),
            f"  router: {batches / seconds:,.0f} batches/s (a fetch and a produce each) "
            f"of {self.router.get('records', 0) / batches:,.0f} records on average, "
            f"{self.router.get('batch_s', 0) / batches * 1000:.2f} ms each",
            f"  pacer {self.pacer['rate']:,.0f} msg/s achieved, at most "
            f"{self.pacer['behind_max_ms']:.1f} ms behind schedule; first 1,000 events: max "
            f"{max(first) * 1000:.1f} ms",
            f"  spikes over {SPIKE_S * 1000:.0f} ms: {len(spikes)} "
            f"({sum(s.events for s in spikes):,} events): "
            + ", ".join(f"{causes[c]} {c}" for c in ("broker GC", "Python GC", "both", "neither"))
            + (
                f"; worst {max(s.worst_s for s in spikes) * 1000:.1f} ms ({_worst(spikes).cause})"
                if spikes
                else ""
            ),
            "  the spikes, from the pacer's start (the largest 8 by events): "
            + (
                ", ".join(
                    f"+{spike.began - began:.2f} s {spike.events:,} events worst "
                    f"{spike.worst_s * 1000:.0f} ms ({spike.cause})"
                    for spike in sorted(spikes, key=lambda s: -s.events)[:8]
                )
                or "none"
            ),
            f"  inside the spikes' windows ({sum(s.ended - s.began for s in spikes) * 1000:,.0f}"
            f" ms in all): broker GC pauses {sum(s.jvm_s for s in spikes) * 1000:,.1f} ms, "
            f"router collections {sum(s.python_total_s for s in spikes) * 1000:,.1f} ms",
            f"  broker JVM: {len(jvm)} pauses ({len(jvm) / seconds * 10:.1f} per 10 s)"
            + (f", median {statistics.median(jvm):.1f} ms, max {max(jvm):.1f} ms" if jvm else ""),
            f"  router Python GC ({self.frozen:,} objects frozen): "
            + "; ".join(self._python_gc_line(g, began, ended) for g in (0, 1, 2)),
        ]

    def _steady_line(self) -> str:
        """Percentiles of the events sent from ``STEADY_AFTER_S`` on: the run without its start
        (where partitions without a prelude put a spike)."""
        after = self.pacer["began"] + STEADY_AFTER_S
        ms = sorted((d - ts) * 1000 for ts, d in self.events if ts >= after)
        if not ms:
            return f"  after the first {STEADY_AFTER_S:g} s: no events"
        p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
        return (
            f"  after the first {STEADY_AFTER_S:g} s ({len(ms):,} events): p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms; p99 / 20 ms = {p99 / 20:.2f}"
        )

    def _stage_lines(self) -> list[str]:
        """Where the time went, before and after ``STEADY_AFTER_S``: the event's timestamp to
        the broker's append, and the append to the decision."""
        if not self.stages:
            return ["  stages: the input topic kept no append times"]
        after = self.pacer["began"] + STEADY_AFTER_S
        lines = []
        for part, chosen in (
            (f"first {STEADY_AFTER_S:g} s", [s for s in self.stages if s[0] < after]),
            ("after it", [s for s in self.stages if s[0] >= after]),
        ):
            if not chosen:
                continue
            texts = []
            for stage, pick in (
                ("timestamp to append", lambda s: s[1] - s[0]),
                ("append to decision", lambda s: s[2] - s[1]),
            ):
                ms = sorted(pick(s) * 1000 for s in chosen)
                texts.append(
                    f"{stage} p50 {percentile(ms, 0.5):.1f} / p99 {percentile(ms, 0.99):.1f} / "
                    f"max {ms[-1]:.1f} ms"
                )
            lines.append(f"  stages, {part} ({len(chosen):,} events): " + "; ".join(texts))
        return lines

    def _python_gc_line(self, generation: int, began: float, ended: float) -> str:
        took = [
            d * 1000
            for start, d, gen in self.python_gc
            if gen == generation and began <= start <= ended
        ]
        if not took:
            return f"gen{generation} none"
        return (
            f"gen{generation} {len(took):,} (median {statistics.median(took):.2f} ms, "
            f"max {max(took):.1f} ms)"
        )


def _worst(spikes: list[Spike]) -> Spike:
    return max(spikes, key=lambda spike: spike.worst_s)


def _overlaps(start: float, took: float, spike: Spike) -> bool:
    return start < spike.ended and start + took > spike.began


def _overlap(pauses: list[tuple[float, float]], began: float, ended: float) -> float:
    """Pause time of ``pauses`` (sorted by start) within ``[began, ended]``."""
    total = 0.0
    index = bisect.bisect_left(pauses, (began - 1.0, 0.0))
    for start, took in pauses[index:]:
        if start > ended:
            break
        total += max(0.0, min(ended, start + took) - max(began, start))
    return total


async def measure(
    broker: Broker,
    gc_log: Path,
    work: Path,
    rate: float,
    seconds: float,
    *,
    freeze: bool,
    prelude_s: float = 0.0,
) -> LatencyRun:
    """One latency run at ``rate``: see the module docstring. ``prelude_s``: a router first
    decides that many seconds of events at the same rate (a pacer of their own, not measured)
    and is stopped; the run measures a router started after it, on partitions that have had
    traffic (see the module docstring)."""
    bootstrap = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic, warm = f"bench-lat-{tag}", f"bench-warm-{tag}"
    config = router_config(bootstrap, topic, tag, idempotence=broker.idempotence)
    port = free_port()
    config["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    ingest = config["ingest"]
    outputs = [ingest["output_topic"], ingest["review_requests_topic"]]
    await broker.create_topics(
        [topic], partitions=PARTITIONS, configs={"message.timestamp.type": "LogAppendTime"}
    )
    await broker.create_topics([warm, *outputs, ingest["dead_letter_topic"]], partitions=PARTITIONS)
    config_path = work / f"router-{tag}.json"  # JSON is YAML
    config_path.write_text(json.dumps(config), encoding="utf-8")
    router_gc = work / f"router-gc-{tag}.json"
    run = LatencyRun(rate, freeze, load_before=load_average())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_ROUTER_")}
    env["PYTHONPATH"] = str(ROOT)
    role = [sys.executable, str(HERE / "ingest_role.py"), "--config", str(config_path)]
    role += ["--gc-log", str(router_gc), *([] if freeze else ["--no-freeze"])]
    with (work / f"router-{tag}.log").open("wb") as log:
        router = await asyncio.create_subprocess_exec(*role, env=env, stdout=log, stderr=log)
        try:
            await _ready(router, port, work / f"router-{tag}.log")
            earlier = 0
            if prelude_s:  # its events are numbered after the measured ones (keys differ)
                first = int(rate * seconds) + 1
                prelude = await _pacer(env, bootstrap, topic, warm, rate, prelude_s, first)
                assert prelude.stdin is not None
                assert prelude.stdout is not None
                prelude.stdin.write(b"go\n")
                await prelude.stdin.drain()
                earlier = int(json.loads(await prelude.stdout.readline())["sent"])
                if await prelude.wait() != 0:
                    raise RuntimeError(f"the prelude's pacer exited with {prelude.returncode}")
                await _decisions(bootstrap, outputs, earlier)  # all decided and committed
                router.send_signal(signal.SIGTERM)
                if await asyncio.wait_for(router.wait(), 60) != 0:
                    raise RuntimeError(f"the prelude's router exited with {router.returncode}")
                router = await asyncio.create_subprocess_exec(
                    *role, env=env, stdout=log, stderr=log
                )
                await _ready(router, port, work / f"router-{tag}.log")
            pacer = await _pacer(env, bootstrap, topic, warm, rate, seconds, 0)
            assert pacer.stdin is not None
            assert pacer.stdout is not None
            ours = {"router": router.pid, "broker": broker.process.pid}
            before = {who: process_jiffies(pid) for who, pid in ours.items()}
            busy, began = busy_jiffies(), time.monotonic()
            pacer.stdin.write(b"go\n")
            await pacer.stdin.drain()
            run.pacer = json.loads(await pacer.stdout.readline())
            seconds, ticks = time.monotonic() - began, os.sysconf("SC_CLK_TCK")
            used = {who: (process_jiffies(pid) - before[who]) / ticks for who, pid in ours.items()}
            used["pacer"] = run.pacer["cpu_s"]
            others = (busy_jiffies() - busy) / ticks - sum(used.values())
            run.cores = {who: value / seconds for who, value in {**used, "others": others}.items()}
            if await pacer.wait() != 0:
                raise RuntimeError(f"the pacer exited with {pacer.returncode}")
            decisions = await _decisions(bootstrap, outputs, earlier + int(run.pacer["sent"]))
            decisions = [d for d in decisions if d[0] >= run.pacer["began"]]
            run.events = [(ts, decided) for ts, decided, _ in decisions]
            appended = await _appended(bootstrap, topic, earlier + int(run.pacer["sent"]))
            run.stages = [
                (ts, appended[key], decided) for ts, decided, key in decisions if key in appended
            ]
            run.router = await _router_metrics(port)
        finally:
            if router.returncode is None:
                router.send_signal(signal.SIGTERM)
            await asyncio.wait_for(router.wait(), 60)
    run.load_after = load_average()
    report = json.loads(router_gc.read_text(encoding="utf-8"))
    run.python_gc = [tuple(entry) for entry in report["collections"]]  # type: ignore[misc]
    run.frozen = report["frozen"]
    run.jvm = jvm_pauses(gc_log)
    return run


async def _pacer(
    env: dict[str, str],
    bootstrap: str,
    topic: str,
    warm: str,
    rate: float,
    seconds: float,
    first: int,
) -> asyncio.subprocess.Process:
    """A paced producer, ready: it has built its events and waits for a line to send them."""
    pacer = await asyncio.create_subprocess_exec(
        *[sys.executable, str(HERE / "ingest_pacer.py"), bootstrap, topic, warm],
        *[str(rate), str(seconds), "--first", str(first)],
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert pacer.stdout is not None
    if (await pacer.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the pacer did not start; see its output above")
    return pacer


async def _ready(router: asyncio.subprocess.Process, port: int, log: Path) -> None:
    """Until the router's ``/readyz`` answers 200 (polled: it is the router's own signal)."""
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if router.returncode is not None:
                tail = await asyncio.to_thread(log.read_text, encoding="utf-8", errors="replace")
                raise RuntimeError(f"the router exited ({router.returncode}):\n{tail[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("the router did not report ready within 90 s")


async def _router_metrics(port: int) -> dict[str, float]:
    """The router's batch counters from its ``/metrics``: batches, records, seconds in them."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        text = await answer.text()
    wanted = {
        "stream_router_ingest_batch_size_count": "batches",
        "stream_router_ingest_batch_size_sum": "records",
        "stream_router_ingest_batch_duration_seconds_sum": "batch_s",
    }
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


async def _appended(bootstrap: str, topic: str, count: int) -> dict[bytes, float]:
    """The broker's append time of each of the first ``count`` events of ``topic``, by key
    (none when the topic keeps create times: a broker that ignores the topic's setting)."""
    return {
        record.key: record.timestamp / 1000
        for record in await _read(bootstrap, [topic], count, 60.0)
        if record.timestamp_type == 1 and record.key is not None
    }


async def _decisions(
    bootstrap: str, topics: list[str], count: int
) -> list[tuple[float, float, bytes | None]]:
    """``(event timestamp, create time, key)`` of the first ``count`` decisions on
    ``topics``."""
    return [
        (orjson.loads(record.value)["prediction"]["timestamp_s"], record.timestamp / 1000,
         record.key)
        for record in await _read(bootstrap, topics, count, 120.0)
    ]  # fmt: skip


async def _read(
    bootstrap: str, topics: list[str], count: int, timeout_s: float
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of ``topics`` from their beginning (fewer if ``timeout_s``
    passes first)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        found: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count and time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=200)
            found += [record for records in batch.values() for record in records]
        return found
    finally:
        await reader.stop()
