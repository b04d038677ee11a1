"""The chaos run: a steady prediction stream through every fault at once, then an account.

On the sandbox (Apache Kafka, moto, the A2I emulator with simulated reviewers), one ingest
process and two review processes (so partitions move between them) route a steady stream of
predictions while a schedule of faults strikes, overlapping:

- SIGKILL of the ingest process and of each review process, each restarted after a pause;
- a broker restart (records, offsets and the ledger survive it);
- emulator storms: throttling (a low request quota: 429), 500s, the open-loops quota (402),
  added latency; and an emulator restart;
- windows in which S3 and SQS do not answer (the moto server is stopped with SIGSTOP);
- duplicate, late and out-of-order completion notices (copies of EventBridge events sent to
  the watchers' queue long after the fact);
- a removed and a corrupted output.json.

Then the faults stop, every process is running, and :func:`account` reads the output and
dead-letter topics whole and accounts for every input event by id:

- exactly one final outcome per event (identical redeliveries counted separately);
- no conflicting outcomes; no event with a second first loop (the emulator's loops by name);
  no loop without an outcome;
- recovery time after each fault: from the fault's end to the next outcome published (for a
  fault of the review path, the next outcome of a review: accepted events flow meanwhile);
- what each role's ``/readyz`` said during each fault of the broker (:class:`Readiness`, asked
  every second; ingest's stall threshold is 10 s here, so a window of 15 s shows).

With ``backend="label-studio"`` the reviews go to a real Label Studio with simulated
annotators instead, and the backend's faults are its own: Label Studio restarted, Label Studio
silent (SIGSTOP) for a window, and duplicate, late and out-of-order webhook posts for finished
tasks sent to both review instances (the kills and the broker restart are the same).

The flood (:meth:`Plan.flood`, ``scripts/chaos --flood``) is a model gone wrong: every
prediction is unsure, produced as fast as the harness can for a minute, against a route budget
of 300 reviews with the ``accept-unreviewed`` fallback, the same faults striking. Besides the
account it says how many reviews the backend holds against the budget (overspent must be 0)
and how long after the stream ended the last outcome came.

On a cluster (``brokers=3``, ``scripts/chaos --brokers 3``: three Apache Kafka nodes, the
router's topics replicated 3 times with ``min.insync.replicas`` 2) the broker restart gives way
to the faults of a cluster, one at a time: SIGKILL of the node leading most partitions of
review-requests, the output topic and the ledger (back after 5 to 15 s); a rolling restart of
all three nodes (each stopped, started, and back in sync before the next); one node down for
``Plan.node_down_s``; and two nodes down for ``Plan.two_down_s``, when writes with
``acks=all`` are refused.

``scripts/chaos`` runs it (``--long`` for the on-demand length, ``--backend label-studio``,
``--brokers 3``); ``tests/chaos/test_chaos.py`` runs a short one of each backend in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream_router.labelstudio.client import LabelStudioClient
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.naming import first_name_of
from stream_router.sandbox.kafka.cluster import KafkaCluster
from stream_router.sandbox.process import ManagedProcess, free_port
from stream_router.sandbox.settings import FlowDefinition, Latency, Reviewers, SandboxSettings
from stream_router.sandbox.stack import Backend, Sandbox, SandboxInfo
from stream_router.settings import Settings
from stream_router.topics import create_topics
from tests.chaos.soak import Sample, Sampler, table

PARTITIONS = 4
LABELS = ["cat", "dog", "bird", "other"]


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the short run for CI, the long one on demand."""

    duration_s: float
    rate_per_s: float
    kills_per_role: int
    settle_s: float = 300.0
    review_every: int = 3  #: one event in this many is unsure (sent to review)
    budget_per_day: int | None = None  #: the review route's budget (None: unlimited)
    node_down_s: float = 20.0  #: on a cluster: how long one node stays down
    two_down_s: float = 15.0  #: on a cluster: how long two nodes stay down together
    sample_every_s: float | None = None  #: the soak samples memory, fds, ledger, lag, backlog

    @classmethod
    def short(cls, backend: Backend = "a2i") -> Plan:
        return cls(duration_s=100.0, rate_per_s=_rate(20.0, backend), kills_per_role=2)

    @classmethod
    def long(cls, backend: Backend = "a2i") -> Plan:
        rate = _rate(30.0, backend)
        return cls(duration_s=900.0, rate_per_s=rate, kills_per_role=10, settle_s=600.0,
                   node_down_s=120.0, two_down_s=30.0)  # fmt: skip

    @classmethod
    def soak(cls, duration_s: float = 3600.0) -> Plan:
        """A steady stream for ``duration_s`` with the faults spread through it, sampled every
        30 s (``tests/chaos/soak.py``). No process is killed: what a process holds is the
        question, and a kill would start it afresh (the long run is where kills are)."""
        return cls(duration_s=duration_s, rate_per_s=20.0, kills_per_role=0, settle_s=600.0,
                   node_down_s=120.0, two_down_s=30.0, sample_every_s=30.0)  # fmt: skip

    @classmethod
    def flood(cls) -> Plan:
        """A model that sends every prediction to review for a minute, as fast as the harness
        produces (about 2,000 events/s here), against a budget of 300 reviews and its fallback
        (``accept-unreviewed``), the usual faults meanwhile (A2I only)."""
        return cls(duration_s=60.0, rate_per_s=2000.0, kills_per_role=2, settle_s=900.0,
                   review_every=1, budget_per_day=300)  # fmt: skip


def _rate(a2i_rate: float, backend: Backend) -> float:
    """Events per second: about a third of them go to review, and Label Studio with its
    simulated annotators on this 2-core machine finishes about 6 reviews/s at best
    (``tests/bench/bench_review.py``), so its runs send 8 events/s."""
    return a2i_rate if backend == "a2i" else 8.0


@dataclass
class Fault:
    kind: str
    started_s: float
    ended_s: float | None = None


@dataclass
class Report:
    events: int
    outcomes: int
    lost: list[str]
    conflicting: dict[str, list[str]]
    duplicate_identical: int
    duplicate_loops: int
    loops_without_outcome: list[str]
    kills: Counter[str]
    exits: Counter[str]  #: processes that exited on their own (restarted, as k8s would)
    recovery_s: dict[str, list[float]]
    faults: list[Fault] = field(default_factory=list)
    paid_twice: int = 0  #: Label Studio: reviews annotated on two tasks (a person paid twice)
    budget: int | None = None  #: the route's reviews a day, when it has a budget
    reviews_started: int = 0  #: reviews the backend holds (every attempt)
    drained_s: float | None = None  #: from the stream's end to the last outcome
    #: per broker fault, what the roles' /readyz said from its start to 30 s after its end
    readiness: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)  #: the soak's (Plan.sample_every_s)

    def lines(self) -> list[str]:
        out = [
            f"events {self.events}, outcomes {self.outcomes}, lost {len(self.lost)}, "
            f"conflicting {len(self.conflicting)}, duplicate-identical "
            f"{self.duplicate_identical}, duplicate loops {self.duplicate_loops}, "
            f"loops without outcome {len(self.loops_without_outcome)}, "
            f"reviews paid twice {self.paid_twice}",
            "kills: " + ", ".join(f"{role} {n}" for role, n in sorted(self.kills.items())),
            "exits on their own: "
            + (", ".join(f"{r} {n}" for r, n in sorted(self.exits.items())) or "none"),
        ]
        if self.budget is not None:
            out.append(f"budget {self.budget} reviews: started {self.reviews_started}, "
                       f"overspent {max(0, self.reviews_started - self.budget)}")  # fmt: skip
        if self.drained_s is not None:
            out.append(f"every outcome {self.drained_s:.1f} s after the stream ended")
        for kind, times in sorted(self.recovery_s.items()):
            out.append(
                f"recovery after {kind} ({len(times)}): median {statistics.median(times):.1f} s, "
                f"max {max(times):.1f} s"
            )
        out += self.readiness
        if self.samples:
            out += table(self.samples)
        if self.lost:
            out.append(f"lost (first 10): {self.lost[:10]}")
        if self.conflicting:
            out.append(f"conflicting (first 5): {dict(list(self.conflicting.items())[:5])}")
        return out

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.conflicting
            or self.duplicate_loops
            or self.paid_twice
            or self.loops_without_outcome
            or self.exits
            or (self.budget is not None and self.reviews_started > self.budget)
        )


def sandbox_settings() -> SandboxSettings:
    quick = Reviewers(
        pickup=Latency(distribution="fixed", median_s=1.0),
        work=Latency(distribution="fixed", median_s=1.0),
    )
    return SandboxSettings(flow_definitions=[FlowDefinition(name="chaos", reviewers=quick)])


def router_settings(
    info: SandboxInfo, tag: str, work: Path, backend: str = "a2i", budget: int | None = None
) -> dict[str, Any]:
    flow = info.flow_definition_arns["chaos"] if backend == "a2i" else "chaos"
    config: dict[str, Any] = {
        "kafka": info.kafka_config(session_timeout_s=6, heartbeat_interval_s=1),
        "ingest": {"input_topics": [f"chaos-in-{tag}"], "output_topic": f"chaos-out-{tag}",
                   "review_requests_topic": f"chaos-rr-{tag}",
                   "dead_letter_topic": f"chaos-dlq-{tag}", "group_id": f"chaos-ingest-{tag}",
                   "fetch_wait_s": 0.05, "stall_after_s": 10},
        "policies": {"version": "chaos", "routes": [{
            "name": "general", "review_flow": flow,
            "policy": {"type": "confidence", "below": 0.7}}]},
        "review": {"app_id": f"chaos-review-{tag}", "loop_events_topic": f"chaos-le-{tag}",
                   "topic_partitions": PARTITIONS, "rate_per_s": 20, "burst": 5,
                   "data_dir": str(work / "review-data"), "monitor_interval_s": 5,
                   "catch_up_after_s": 15,
                   # segments close every 2 minutes: Kafka compacts the ledger while it is read
                   "ledger_segment_s": 120,
                   # the run measures faults, not budgets: no limit, said explicitly
                   "budgets": {"general": {"unlimited": True}},
                   "backend": {"name": "a2i", "event_queue_url": info.event_queue_url,
                               "output_queue_url": info.output_queue_url, "wait_time_s": 1}},
        "watchers": {"reconcile_interval_s": 10, "reconcile_grace_s": 20},
        "topics": {"partitions": PARTITIONS},
        "aws": {"region": info.region},
        # each role's port comes from its environment (Roles); /readyz is asked (Readiness)
        "metrics": {"enabled": True, "host": "127.0.0.1"},
        "logging": {"level": "INFO"},
    }  # fmt: skip
    if budget is not None:
        config["review"]["budgets"] = {"general": {"per_day": budget}}
        config["review"]["budget_fallback"] = "accept-unreviewed"
    if backend == "label-studio":
        lifetime = sandbox_settings().flow_definitions[0].task_availability_lifetime_s
        config["review"]["backend"] = {
            "name": "label-studio",
            "url": info.label_studio_url, "api_token": info.label_studio_token,
            "projects": {"chaos": {"project": info.label_studio_projects["chaos"],
                                   "annotations_per_task": 1, "deadline_s": lifetime}},
        }  # fmt: skip
    return config


class Roles:
    """The router's processes: one ingest, two review instances."""

    def __init__(self, config: Path, env: dict[str, str], backend: str) -> None:
        self.config = config
        self.env = env
        #: each review instance's Label Studio webhook port, the same in every life (one URL
        #: registered)
        self.webhook_ports = (
            {name: free_port() for name in ("review-a", "review-b")}
            if backend == "label-studio"
            else {}
        )
        #: each instance's metrics port (/readyz), the same in every life
        self.metrics_ports = {name: free_port() for name in ("ingest", "review-a", "review-b")}
        self.procs: dict[str, ManagedProcess] = {}
        self.kills: Counter[str] = Counter()
        self.exits: Counter[str] = Counter()  #: exits on their own (not killed)
        self.lives: Counter[str] = Counter()
        self._turns: dict[str, asyncio.Lock] = {}

    def _make(self, name: str) -> ManagedProcess:
        role = "ingest" if name == "ingest" else "review"
        data = self.config.parent / f"data-{name}"
        env = {**self.env, "STREAM_ROUTER_REVIEW__DATA_DIR": str(data),
               "STREAM_ROUTER_METRICS__PORT": str(self.metrics_ports[name])}  # fmt: skip
        if name in self.webhook_ports:
            env["STREAM_ROUTER_REVIEW__BACKEND__WEBHOOK__PORT"] = str(self.webhook_ports[name])
        return ManagedProcess(
            f"chaos-{name}",
            [sys.executable, "-m", "stream_router.cli", "run", "--role", role,
             "--config", str(self.config)],
            ready_pattern=r"assigned \d+ partitions|Worker ready|ledger read",
            env=env,
            log_path=self.config.parent / f"{name}.{self.lives[name]}.log",  # one per life
            stop_timeout_s=60,
        )  # fmt: skip

    def start(self, name: str) -> None:
        self.lives[name] += 1
        proc = self._make(name)
        proc.start()
        self.procs[name] = proc

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.running():
            proc.kill()
            self.kills[name] += 1

    def turn(self, name: str) -> asyncio.Lock:
        return self._turns.setdefault(name, asyncio.Lock())

    def ensure_running(self) -> None:
        for name in ("ingest", "review-a", "review-b"):
            proc = self.procs.get(name)
            if proc is None or not proc.running():
                self.start(name)

    async def supervise(self) -> None:
        """As an orchestrator would: restart a process that exited on its own (counted)."""
        while True:
            for name, proc in list(self.procs.items()):
                if not proc.running() and not self.turn(name).locked():
                    self.exits[name] += 1
                    self.start(name)
            await asyncio.sleep(1.0)  # an orchestrator's probe period

    async def stop(self) -> None:
        for proc in self.procs.values():
            await proc.stop_async()


@dataclass
class Spell:
    role: str
    said: str  #: "ready", "no answer", or the problems (durations as N s: a spell is one state)
    started_s: float  #: monotonic
    ended_s: float


class Readiness:
    """What each role's ``/readyz`` said through the run, as spells of one answer."""

    BROKER_FAULTS = ("broker restart", "kill leading node", "rolling restart", "one node down",
                     "two nodes down")  # fmt: skip

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.spells: list[Spell] = []
        self._current: dict[str, Spell] = {}

    async def watch(self, every_s: float = 1.0) -> None:
        timeout = aiohttp.ClientTimeout(total=every_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                for role, port in self.ports.items():
                    self._note(role, await _readyz(http, port))
                await asyncio.sleep(every_s)  # a probe's period

    def _note(self, role: str, said: str) -> None:
        now = time.monotonic()
        spell = self._current.get(role)
        if spell is not None and spell.said == said:
            spell.ended_s = now
            return
        spell = self._current[role] = Spell(role, said, now, now)
        self.spells.append(spell)

    def during(self, fault: Fault, after_s: float = 30.0) -> str:
        """One line: each role's answers other than ready from the fault's start to
        ``after_s`` after its end, with how long each lasted."""
        assert fault.ended_s is not None
        start, end = fault.started_s, fault.ended_s + after_s
        said: dict[str, Counter[str]] = defaultdict(Counter)
        for spell in self.spells:
            overlap = min(end, spell.ended_s) - max(start, spell.started_s)
            if overlap >= 0 and spell.said != "ready":
                said[spell.role][spell.said] += max(overlap, 1.0)  # asked once a second
        length = fault.ended_s - fault.started_s
        parts = []
        for role in self.ports:
            if not said[role]:
                parts.append(f"{role} ready throughout")
                continue
            answers = "; ".join(f"{s} ({t:.0f} s)" for s, t in said[role].most_common(3))
            parts.append(f"{role}: {answers}")
        return f"readyz during {fault.kind} ({length:.0f} s, to 30 s after): " + " | ".join(parts)


async def _readyz(http: aiohttp.ClientSession, port: int) -> str:
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "no answer"
    if body.get("status") == "ready":
        return "ready"
    problems = body.get("problems") or [str(body.get("status"))]
    said = re.sub(r"\d+(\.\d+)? s\b", "N s", "; ".join(str(p) for p in problems))
    return re.sub(r"Kafka at \S+", "Kafka", said)[:160]


class Stream:
    """The steady prediction stream, and what each event should become."""

    def __init__(
        self, bootstrap: str, topic: str, tag: str, rate_per_s: float, review_every: int = 3
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.tag = tag
        self.rate_per_s = rate_per_s
        self.review_every = review_every
        self.sent: dict[str, str] = {}  # event id -> "review" or "accepted"
        self.ended: float | None = None  #: epoch seconds of the last event's acknowledgement

    async def run(self, duration_s: float) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
            request_timeout_ms=120_000, retry_backoff_ms=500,
        )  # fmt: skip
        await producer.start()
        try:
            start = time.monotonic()
            index = 0
            while time.monotonic() - start < duration_s:
                due = start + index / self.rate_per_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing the stream
                event_id = f"{self.tag}-e{index}"
                unsure = index % self.review_every == 0
                event = {"event_id": event_id, "label": LABELS[index % 4],
                         "ground_truth": LABELS[(index + index % 2) % 4],
                         "confidence": 0.5 if unsure else 0.95}  # fmt: skip
                await producer.send(self.topic, orjson.dumps(event), key=event_id.encode())
                self.sent[event_id] = "review" if unsure else "accepted"
                index += 1
            await producer.flush()
            self.ended = time.time()
        finally:
            await producer.stop()


class Outcomes:
    """Reads the output and dead-letter topics as they grow."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[tuple[str, float, dict[str, Any]]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                          enable_auto_commit=False)  # fmt: skip
        await self._consumer.start()
        tps = [TopicPartition(t, p) for t in self.topics for p in range(PARTITIONS)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)

    async def poll(self) -> None:
        assert self._consumer is not None
        try:
            batches = await self._consumer.getmany(timeout_ms=500)
        except KafkaError:  # the broker restarts: read again on the next poll
            return
        for tp, records in batches.items():
            for record in records:
                if record.value is not None:
                    value = orjson.loads(record.value)
                    self.records.append((tp.topic, record.timestamp / 1000, value))

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def by_event(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for _, _, value in self.records:
            event_id, verdict = verdict_of(value)
            if event_id is not None:
                found[event_id].append(verdict)
        return found


def verdict_of(value: dict[str, Any]) -> tuple[str | None, str]:
    """(event id, what became of it) of an output or dead-letter record."""
    if "decision" in value:
        review = value.get("review") or {}
        detail = review.get("label") or review.get("failure_code") or ""
        return value.get("event_id"), f"{value['decision']}:{json.dumps(detail)}"
    request = value.get("review_request")
    if isinstance(request, dict):
        return request.get("event_id"), f"dead-lettered:{value.get('reason_class')}"
    return None, "dead-lettered"  # an input that never became an event


class Faults:
    """The fault schedule, each fault recorded with its window."""

    def __init__(
        self, sandbox: Sandbox, roles: Roles, rng: random.Random, echo: Callable[[str], None]
    ) -> None:
        self.echo = echo
        self.sandbox = sandbox
        self.roles = roles
        self.rng = rng
        self.log: list[Fault] = []
        self._nodes = asyncio.Lock()  #: a cluster's faults, one at a time
        #: the emulator's storms and its restart, one at a time (a storm set while the emulator
        #: restarts finds no one to set it: seen when a restart took 5 s on the cluster)
        self._emulator = asyncio.Lock()

    async def _window(self, kind: str, begin: Callable[[], Awaitable[None]],
                      end: Callable[[], Awaitable[None]], length_s: float) -> None:  # fmt: skip
        fault = Fault(kind, time.monotonic())
        self.log.append(fault)
        self.echo(f"{time.strftime('%H:%M:%S')} fault: {kind} ({length_s:.0f} s)")
        await begin()
        try:
            await asyncio.sleep(length_s)  # the fault's window
        finally:
            await end()
            fault.ended_s = time.monotonic()

    async def kill(self, name: str) -> None:
        async def down() -> None:
            self.roles.kill(name)

        async def up() -> None:
            self.roles.start(name)

        async with self.roles.turn(name):  # one kill of a role at a time: each one counts
            await self._window(f"kill {name}", down, up, self.rng.uniform(1.0, 4.0))

    async def storm(self) -> None:
        storms: list[tuple[str, dict[str, Any]]] = [
            ("429 storm", {"quota_rps": 3.0, "quota_burst": 1}),
            ("500 storm", {"internal_error_rate": 0.3}),
            ("402 storm", {"max_active_loops": 5}),
            ("latency storm", {"extra_latency_s": 1.5}),
        ]  # fmt: skip
        kind, changes = self.rng.choice(storms)
        calm = {"quota_rps": None, "internal_error_rate": 0.0, "max_active_loops": None,
                "extra_latency_s": 0.0}  # fmt: skip

        async def begin() -> None:
            await self.sandbox.a2i.set_faults(**changes)

        async def end() -> None:
            await self.sandbox.a2i.set_faults(**calm)

        async with self._emulator:
            await self._window(kind, begin, end, 10.0)

    async def aws_silent(self) -> None:
        await self._frozen("S3 and SQS silent", self.sandbox.moto.process.pid)

    async def _frozen(self, kind: str, pid: int | None) -> None:
        """A server that does not answer for 10 s (stopped with SIGSTOP, then continued)."""
        assert pid is not None

        async def begin() -> None:
            os.kill(pid, signal.SIGSTOP)

        async def end() -> None:
            os.kill(pid, signal.SIGCONT)

        await self._window(kind, begin, end, 10.0)

    async def broker_restart(self) -> None:
        await self._instant("broker restart", self.sandbox.broker.restart)

    # -- a cluster's faults (one at a time: two at once could take all three nodes) ----------

    @property
    def cluster(self) -> KafkaCluster:
        broker = self.sandbox.broker
        assert isinstance(broker, KafkaCluster)
        return broker

    async def leader_kill(self, topics: list[str]) -> None:
        """SIGKILL the node leading most partitions of ``topics``; it is back after 5-15 s."""
        async with self._nodes:
            leaders = await _leaders(self.cluster.bootstrap_servers, topics)
            node = max(range(len(self.cluster.nodes)), key=lambda i: leaders[i + 1])

            async def down() -> None:
                await self.cluster.stop_node(node, kill=True)

            async def up() -> None:
                await self.cluster.start_node(node)

            await self._window(f"kill leading node {node + 1}", down, up,
                               self.rng.uniform(5.0, 15.0))  # fmt: skip

    async def rolling_restart(self, topics: list[str]) -> None:
        """Each node in turn stopped (SIGTERM) and started, and every replica of ``topics`` in
        sync again before the next, as an upgrade does it."""
        async with self._nodes:

            async def roll() -> None:
                for node in range(len(self.cluster.nodes)):
                    await self.cluster.stop_node(node)
                    await self.cluster.start_node(node)
                    await _in_sync(self.cluster.bootstrap_servers, topics)

            await self._instant("rolling restart", roll)

    async def node_down(self, length_s: float) -> None:
        """One node down (SIGKILL) for ``length_s``: its partitions run under-replicated."""
        async with self._nodes:
            node = self.rng.randrange(len(self.cluster.nodes))

            async def down() -> None:
                await self.cluster.stop_node(node, kill=True)

            async def up() -> None:
                await self.cluster.start_node(node)

            await self._window("one node down", down, up, length_s)

    async def two_down(self, length_s: float) -> None:
        """Two nodes down (SIGKILL) for ``length_s``: fewer replicas in sync than
        ``min.insync.replicas``, so every write with ``acks=all`` is refused meanwhile."""
        async with self._nodes:
            nodes = self.rng.sample(range(len(self.cluster.nodes)), 2)

            async def down() -> None:
                for node in nodes:
                    await self.cluster.stop_node(node, kill=True)

            async def up() -> None:
                await asyncio.gather(*(self.cluster.start_node(node) for node in nodes))

            await self._window("two nodes down", down, up, length_s)

    async def emulator_restart(self) -> None:
        async with self._emulator:
            await self._instant("emulator restart", self.sandbox.a2i.restart)

    async def label_studio_restart(self) -> None:
        await self._instant("Label Studio restart", self.sandbox.label_studio.restart)

    async def label_studio_silent(self) -> None:
        await self._frozen("Label Studio silent", self.sandbox.label_studio.process.pid)

    async def webhook_notices(self, info: SandboxInfo) -> None:
        """Copies of annotation posts for finished tasks, sent again late and out of order to
        both review instances (Label Studio itself posts each once)."""
        fault = Fault("duplicate and late webhook posts", time.monotonic())
        self.log.append(fault)
        self.echo(f"{time.strftime('%H:%M:%S')} fault: {fault.kind}")
        finished = [task for task in await _tasks(info) if task.get("total_annotations")]
        self.rng.shuffle(finished)
        async with aiohttp.ClientSession() as session:
            for task in finished[:20]:
                body = {"action": self.rng.choice(["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]),
                        "task": {"id": task["id"], "data": task.get("data")},
                        "annotation": {"id": 0}}  # fmt: skip
                for port in self.roles.webhook_ports.values():
                    with contextlib.suppress(aiohttp.ClientError):  # an instance killed now
                        url = f"http://127.0.0.1:{port}/label-studio/webhook"
                        async with session.post(url, json=body) as answer:
                            await answer.read()
        fault.ended_s = time.monotonic()

    async def _instant(self, kind: str, action: Callable[[], Awaitable[None]]) -> None:
        """A fault that is over once ``action`` returns (a restart)."""

        async def nothing() -> None:
            return None

        await self._window(kind, action, nothing, 0.0)

    async def notices(self, info: SandboxInfo) -> None:
        """Copies of old completion events, sent again late and out of order."""
        sqs = boto3.client("sqs", endpoint_url=info.aws_endpoint_url, region_name=info.region,
                           aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        a2i = boto3.client("sagemaker-a2i-runtime", endpoint_url=info.a2i_endpoint_url,
                           region_name=info.region, aws_access_key_id="x",
                           aws_secret_access_key="x")  # fmt: skip
        fault = Fault("duplicate and late notices", time.monotonic())
        self.log.append(fault)
        self.echo(f"{time.strftime('%H:%M:%S')} fault: {fault.kind}")
        loops = await asyncio.to_thread(_loops, a2i, info.flow_definition_arns["chaos"])
        ended = [loop for loop in loops if loop["HumanLoopStatus"] != "InProgress"]
        self.rng.shuffle(ended)
        for loop in ended[:20]:
            body = _status_event(loop, info)
            for _ in range(self.rng.choice([1, 2])):
                await asyncio.to_thread(sqs.send_message, QueueUrl=info.event_queue_url,
                                        MessageBody=json.dumps(body))  # fmt: skip
        fault.ended_s = time.monotonic()

    async def outputs(self, info: SandboxInfo) -> None:
        """Remove one output.json and corrupt another, of loops still open."""
        s3 = boto3.client("s3", endpoint_url=info.aws_endpoint_url, region_name=info.region,
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        fault = Fault("removed and corrupted output.json", time.monotonic())
        self.log.append(fault)
        self.echo(f"{time.strftime('%H:%M:%S')} fault: {fault.kind}")
        listing = await asyncio.to_thread(
            s3.list_objects_v2, Bucket=info.output_bucket, Prefix=info.output_prefix
        )
        keys = [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("output.json")]
        if len(keys) >= 2:
            removed, corrupted = self.rng.sample(keys[-40:], 2)
            await asyncio.to_thread(s3.delete_object, Bucket=info.output_bucket, Key=removed)
            await asyncio.to_thread(s3.put_object, Bucket=info.output_bucket, Key=corrupted,
                                    Body=b"{not json")  # fmt: skip
        fault.ended_s = time.monotonic()


async def _tasks(info: SandboxInfo) -> list[dict[str, Any]]:
    """Every task of the chaos flow's Label Studio project."""
    assert info.label_studio_url is not None
    assert info.label_studio_token is not None
    # Long enough to outlast Label Studio's own faults (silent 10 s, a restart).
    client = LabelStudioClient(info.label_studio_url, info.label_studio_token, timeout_s=90)
    async with client:
        project = info.label_studio_projects["chaos"]
        return [task async for task in client.tasks(project, page_size=500)]


async def _review_names(info: SandboxInfo, backend: str) -> list[str]:
    """The name of every review the backend holds (a loop, a task): paid reviews."""
    if backend == "label-studio":
        return [str((task.get("data") or {}).get(NAME_FIELD)) for task in await _tasks(info)]
    a2i = boto3.client("sagemaker-a2i-runtime", endpoint_url=info.a2i_endpoint_url,
                       region_name=info.region, aws_access_key_id="x",
                       aws_secret_access_key="x")  # fmt: skip
    loops = await asyncio.to_thread(_loops, a2i, info.flow_definition_arns["chaos"])
    return [loop["HumanLoopName"] for loop in loops]


def _loops(a2i: Any, flow: str) -> list[dict[str, Any]]:
    return [
        summary
        for page in a2i.get_paginator("list_human_loops").paginate(FlowDefinitionArn=flow)
        for summary in page["HumanLoopSummaries"]
    ]


def _status_event(loop: dict[str, Any], info: SandboxInfo) -> dict[str, Any]:
    name = loop["HumanLoopName"]
    output = None
    if loop["HumanLoopStatus"] == "Completed":
        output = {"outputS3Uri": f"s3://{info.output_bucket}/{info.output_prefix}/{name}"}
    return {
        "version": "0", "id": str(uuid.uuid4()),
        "detail-type": "SageMaker A2I HumanLoop Status Change", "source": "aws.sagemaker",
        "account": "123456789012", "time": "2026-12-02T00:00:00Z", "region": info.region,
        "resources": [], "detail": {
            "creationTime": "2026-12-02T00:00:00Z", "failureCode": None, "failureReason": None,
            "flowDefinitionArn": info.flow_definition_arns["chaos"],
            "humanLoopArn": f"arn:aws:sagemaker:{info.region}:123456789012:human-loop/{name}",
            "humanLoopName": name, "humanLoopOutput": output,
            "humanLoopStatus": loop["HumanLoopStatus"],
        },
    }  # fmt: skip


async def run(
    plan: Plan,
    work: Path,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    backend: Backend = "a2i",
    brokers: int = 1,
) -> Report:
    """One chaos run on a fresh sandbox (see the module docstring); returns the account."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:6]
    async with Sandbox(
        sandbox_settings(), broker="kafka", state_dir=work / "sandbox", backend=backend,
        brokers=brokers,
    ) as sandbox:  # fmt: skip
        info = sandbox.info()
        raw = router_settings(info, tag, work, backend, plan.budget_per_day)
        if brokers > 1:
            raw["topics"].update(replication_factor=min(brokers, 3), min_insync_replicas=2)
        config = work / "router.yaml"
        config.write_text(yaml.safe_dump(raw))
        await create_topics(Settings.model_validate(raw))
        await sandbox.broker.create_topics([f"chaos-in-{tag}"], partitions=PARTITIONS)
        roles = Roles(config, info.router_env(), backend)
        roles.ensure_running()
        stream = Stream(info.bootstrap_servers, f"chaos-in-{tag}", tag, plan.rate_per_s,
                        plan.review_every)  # fmt: skip
        outcomes = Outcomes(info.bootstrap_servers, [f"chaos-out-{tag}", f"chaos-dlq-{tag}"])
        await outcomes.start()
        faults = Faults(sandbox, roles, rng, echo)
        readiness = Readiness(roles.metrics_ports)
        watching = asyncio.ensure_future(readiness.watch())
        sampler = Sampler(lambda: roles.procs, roles.metrics_ports,
                          lambda: _partition_dirs(sandbox, f"chaos-review-{tag}-ledger"),
                          plan.sample_every_s or 30.0)  # fmt: skip
        sampling = asyncio.ensure_future(sampler.run() if plan.sample_every_s else _never())
        producing = asyncio.ensure_future(stream.run(plan.duration_s))
        supervising = asyncio.ensure_future(roles.supervise())
        reading = asyncio.ensure_future(_read_until(outcomes, producing, stream, plan))
        try:
            await _schedule(faults, plan, info, backend, tag)
            await producing
            roles.ensure_running()
            echo(f"stream done: {len(stream.sent)} events; waiting for every outcome")
            await reading
            if backend == "label-studio":
                await _settle_duplicates(info, echo)
        finally:
            producing.cancel()
            reading.cancel()
            supervising.cancel()
            watching.cancel()
            sampling.cancel()
            await roles.stop()
            await outcomes.stop()
        reviews = await _review_names(info, backend)
        paid_twice = await _paid_twice(info) if backend == "label-studio" else 0
    report = account(stream.sent, outcomes, reviews, roles.kills, roles.exits, faults.log)
    report.paid_twice = paid_twice
    report.samples = sampler.samples
    report.readiness = [
        readiness.during(fault)
        for fault in faults.log
        if fault.ended_s is not None and fault.kind.startswith(Readiness.BROKER_FAULTS)
    ]
    report.budget = plan.budget_per_day
    report.reviews_started = len(reviews)
    last = max((ts for _, ts, _ in outcomes.records), default=None)
    if stream.ended is not None and last is not None and not report.lost:
        report.drained_s = max(0.0, last - stream.ended)
    return report


#: A Label Studio import cut short by a kill can land 10 s and more after the process died, and
#: the review role deletes such a second task of a name when it next sees the name (its
#: reconciler lists the open tasks every reconcile_interval_s, 10 s here). Seen under load: the
#: last outcome arrived before that sweep, so the accounting found 3 second tasks that the next
#: sweep would have deleted. The accounting waits this long, roles running, for that sweep.
DUPLICATE_SETTLE_S = 45.0


def _extra_tasks(names: list[str]) -> int:
    counts = Counter(name for name in names if not name.endswith("-a2"))
    return sum(n - 1 for n in counts.values() if n > 1)


async def _settle_duplicates(info: SandboxInfo, echo: Callable[[str], None]) -> None:
    """Wait until no review has a second task, or DUPLICATE_SETTLE_S passed (then the
    accounting counts what is left as duplicate loops)."""
    deadline = time.monotonic() + DUPLICATE_SETTLE_S
    while extra := _extra_tasks(await _review_names(info, "label-studio")):
        if time.monotonic() >= deadline:
            echo(f"{extra} second task(s) still there after {DUPLICATE_SETTLE_S:.0f} s")
            return
        await asyncio.sleep(1.0)  # polling Label Studio; the deleting is another process's


async def _paid_twice(info: SandboxInfo) -> int:
    """Reviews with annotations on more than one of their tasks: people paid twice."""
    annotated = Counter(
        str((task.get("data") or {}).get(NAME_FIELD))
        for task in await _tasks(info)
        if task.get("total_annotations")
    )
    return sum(1 for name, n in annotated.items() if n > 1 and not name.endswith("-a2"))


async def _schedule(
    faults: Faults, plan: Plan, info: SandboxInfo, backend: Backend, tag: str
) -> None:
    """Every fault at least once, kills ``kills_per_role`` times per role, overlapping (a
    cluster's faults one at a time)."""
    steps: list[Callable[[], Awaitable[None]]] = []
    for name in ("ingest", "review-a", "review-b"):
        steps += [lambda n=name: faults.kill(n)] * plan.kills_per_role  # type: ignore[misc]
    if info.brokers > 1:
        busiest = [f"chaos-rr-{tag}", f"chaos-out-{tag}", f"chaos-review-{tag}-ledger"]
        steps += [lambda: faults.leader_kill(busiest)] * max(2, plan.kills_per_role // 3)
        steps += [lambda: faults.rolling_restart(busiest)]
        steps += [lambda: faults.node_down(plan.node_down_s)]
        steps += [lambda: faults.two_down(plan.two_down_s)]
    else:
        steps += [faults.broker_restart]
    if backend == "a2i":
        steps += [faults.storm] * max(4, plan.kills_per_role)
        steps += [faults.aws_silent] * max(1, plan.kills_per_role // 3)
        steps += [faults.emulator_restart]
        steps += [lambda: faults.notices(info), lambda: faults.outputs(info)]
    else:
        steps += [faults.label_studio_silent] * max(2, plan.kills_per_role // 3)
        steps += [faults.label_studio_restart]
        steps += [lambda: faults.webhook_notices(info)] * 2
    faults.rng.shuffle(steps)
    gap = plan.duration_s * 0.85 / len(steps)
    running: list[asyncio.Future[None]] = []
    for step in steps:
        await asyncio.sleep(faults.rng.uniform(0.3, 1.0) * gap * 2)  # the schedule's pacing
        running.append(asyncio.ensure_future(step()))
    await asyncio.gather(*running)


async def _never() -> None:
    await asyncio.Event().wait()


def _partition_dirs(sandbox: Sandbox, topic: str) -> list[Path]:
    """Every node's directories of ``topic``'s partitions (``<topic>-<partition>``)."""
    broker = sandbox.broker
    nodes = broker.nodes if isinstance(broker, KafkaCluster) else [broker]
    found: list[Path] = []
    for node in nodes:
        data = getattr(node, "data_dir", None)
        if isinstance(data, Path) and data.is_dir():
            found += [d for d in data.iterdir() if d.name.rsplit("-", 1)[0] == topic]
    return found


async def _leaders(bootstrap: str, topics: list[str]) -> Counter[int]:
    """How many partitions of ``topics`` each node leads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return Counter(p["leader"] for topic in described for p in topic["partitions"])


async def _in_sync(bootstrap: str, topics: list[str], timeout_s: float = 120.0) -> None:
    """Until every partition of ``topics`` has all its replicas in sync (polled: the broker
    says nothing when a follower catches up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            described = await admin.describe_topics(topics)
            if all(len(p["isr"]) == len(p["replicas"])
                   for topic in described for p in topic["partitions"]):  # fmt: skip
                return
        except KafkaError:
            pass  # a node is starting: ask again
        finally:
            with contextlib.suppress(KafkaError):
                await admin.close()
        await asyncio.sleep(1.0)
    raise TimeoutError(f"replicas of {topics} not in sync within {timeout_s:.0f} s")


async def _read_until(outcomes: Outcomes, producing: asyncio.Future[None], stream: Stream,
                      plan: Plan) -> None:  # fmt: skip
    deadline: float | None = None
    while True:
        await outcomes.poll()
        if producing.done():
            if deadline is None:
                deadline = time.monotonic() + plan.settle_s
            if set(outcomes.by_event()) >= set(stream.sent) or time.monotonic() > deadline:
                return


def account(
    sent: dict[str, str],
    outcomes: Outcomes,
    reviews: list[str],
    kills: Counter[str],
    exits: Counter[str],
    faults: list[Fault],
) -> Report:
    by_event = outcomes.by_event()
    lost = sorted(set(sent) - set(by_event))
    conflicting = {e: v for e, v in by_event.items() if e in sent and len(set(v)) > 1}
    duplicates = sum(len(v) - 1 for e, v in by_event.items() if e in sent and len(set(v)) == 1)
    first_loops = Counter(name for name in reviews if not name.endswith("-a2"))
    duplicate_loops = sum(n - 1 for n in first_loops.values() if n > 1)
    named = {
        value["review"]["loop_name"]
        for _, _, value in outcomes.records
        if value.get("review") and value["review"].get("loop_name")
    } | {
        value["review_request"]["loop_name"]
        for _, _, value in outcomes.records
        if isinstance(value.get("review_request"), dict)
    }
    with_outcome = {first_name_of(name) for name in named}
    without = sorted(name for name in reviews if first_name_of(name) not in with_outcome)
    every = sorted(ts for _, ts, _ in outcomes.records)
    # Review outcomes: what a fault of the review path delays (accepted events flow meanwhile).
    reviewed = sorted(
        ts for _, ts, v in outcomes.records if v.get("review") or v.get("review_request")
    )
    recovery: dict[str, list[float]] = defaultdict(list)
    epoch_offset = time.time() - time.monotonic()
    for fault in faults:
        if fault.ended_s is None:
            continue
        ended = fault.ended_s + epoch_offset
        times = every if fault.kind == "kill ingest" else reviewed
        after = [ts for ts in times if ts >= ended]
        if after:
            recovery[fault.kind].append(after[0] - ended)
    recovery = {k: v for k, v in recovery.items() if v}
    return Report(
        events=len(sent),
        outcomes=sum(1 for e in by_event if e in sent),
        lost=lost,
        conflicting=conflicting,
        duplicate_identical=duplicates,
        duplicate_loops=duplicate_loops,
        loops_without_outcome=without,
        kills=kills,
        exits=exits,
        recovery_s=recovery,
        faults=faults,
    )
