"""Benchmark: the ingest path against a plain aiokafka loop and a Quix Streams application, on
the same broker and events; then ingest's decision latency under paced loads.

    .venv/bin/python tests/bench/bench_ingest.py [--broker kafka|tansu] [--events 100000]
        [--rounds 5] [--no-quix] [--loads 0.1,0.5,0.9] [--latency-s 10] [--no-freeze-at 0.5]
        [--max-rate MSG_PER_S] [--warm-up-s 10] [--broker-java=-Xmn256m] [--broker-gc ZGC]

The broker is the sandbox's Apache Kafka (default) or Tansu; every side meets the same one.

Throughput: N events (about 300 bytes of JSON each) wait in a 4-partition topic. Each round
runs every side, one after the other on fresh consumer groups, the order rotating from round to
round (the broker slows as its log grows, so a fixed order would favour the first):

- plain: getmany → orjson.loads (the JSON library ingest uses) → produce the value → wait for
  acks → commit;
- ingest: the real ingest path (parse with the mapping, three policies — ``confidence`` and
  ``margin`` under ``any``, and a 1 % ``sample`` — envelopes, produce to output/review-requests,
  acks, commit, metrics on a registry);
- quix: the same routing as a Quix Streams application (librdkafka underneath), calling
  stream_router's parser, routes and envelopes per message, in a process and a virtual
  environment of its own (``quix_routing.py``, ``quix_env.py``; skipped, with the reason, when
  that environment cannot be made).

plain and ingest use the same client settings: consumer ``max_poll_records`` and ``getmany``
1000 records with a 50 ms wait, producer ``acks=all`` and idempotent (on Apache Kafka; Tansu
refuses idempotent producers), no linger, no compression, the same
largest batch (``kafka.producer_batch_max_bytes``); quix runs with Quix's defaults. Each looks
up its output topics' partitions before it consumes; each is timed from its first record to
the commit of the last one (group joins, look-ups and process start-up excluded). CPU per
message is the process's CPU time over that interval, all its threads (librdkafka's too), per
record. Each round prints msg/s, CPU per message and the ratios of that round; the summary
gives the medians: ingest / plain (the goal: at least 0.80), quix / plain and quix / ingest.

Latency (``ingest_latency.py``): for each load (a fraction of ``--max-rate``, by default the
median ingest rate just measured), the router as deployed (``stream-router run --role ingest``,
in its own process, ready before the first event) routes events a paced producer sends from a
third process (after an unreported warm-up run, ``--warm-up-s`` at half the maximum: a fresh
broker's JVM spends its first seconds compiling, and it showed: p50 in seconds on the first run,
5 ms on the third, 2026-12-07); events are built before its clock starts and stamped with the
time they are produced. The decision latency of an event is its output record's create time
minus that timestamp (the clock assumptions are in ``ingest_latency.py``). Each load prints p10,
p50, p90, p99 and max, the ratios to the goals (p99 / 20 ms and p50 / 5 ms), the load average
before and after, the cores the router, the broker, the pacer and everything else on the machine
used while the events were sent (a 2-core machine shared with other work: a latency figure means
little without them), the router's batches (rate, size, duration), and what each spike over 20
ms overlapped: a pause of the broker's JVM (its GC log; Kafka only) or a collection of the
router's Python garbage collector (``gc.callbacks``), the spikes by when they began, the
percentiles of the events sent after the first second, and each event's time split at the
broker's append (the pacer and the broker before it, the router after it). Before each run a
router decides ``--prelude-s`` seconds (3 by default) of events and is restarted: on partitions
just created the broker answers slowly for about a second, and that, not the router, was the
spike every run began with (``ingest_latency.py`` has the figures). The router freezes its
start-up objects (``gc.freeze``); at the loads of ``--no-freeze-at`` it runs a second time
without, to show what that changes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout, from anywhere

from stream_router.app import build_ingest
from stream_router.kafka_clients import client_options
from stream_router.sandbox.broker import Broker, BrokerKind, TansuBroker
from stream_router.sandbox.kafka import KafkaBroker
from stream_router.settings import KafkaSettings, Settings
from tests.bench import ingest_latency
from tests.bench.ingest_events import PARTITIONS, make_event, router_config
from tests.bench.quix_env import QuixUnavailable, quix_python, quix_run

__all__ = ["PARTITIONS", "make_event", "settings_for"]


def settings_for(bootstrap: str, topic: str, tag: str, *, idempotence: bool = True) -> Settings:
    return Settings(**router_config(bootstrap, topic, tag, idempotence=idempotence))


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
    #: The CPU per message by thread, where the side reports it (µs).
    threads_us: dict[str, float] = {}  # noqa: RUF012 - replaced, never mutated


def rate(total: int, began_wall: float, began_cpu: float) -> Rate:
    result = Rate(total / (time.perf_counter() - began_wall))
    result.cpu_us = (time.process_time() - began_cpu) / total * 1e6
    return result


async def plain_loop(bootstrap: str, topic: str, total: int, idempotence: bool) -> Rate:
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
    # The ingest producer's settings: acks=all, idempotent where the broker allows it (as
    # ingest's), no linger, the same largest batch.
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=idempotence,
        max_batch_size=kafka.producer_batch_max_bytes,
        **client_options(kafka),
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


async def ingest_path(broker: Broker, topic: str, total: int) -> Rate:
    tag = uuid.uuid4().hex[:8]
    settings = settings_for(broker.bootstrap_servers, topic, tag, idempotence=broker.idempotence)
    ingest = build_ingest(settings, CollectorRegistry())
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


async def quix_side(python: Path, broker: Broker, topic: str, total: int) -> Rate:
    tag = uuid.uuid4().hex[:8]
    config = router_config(broker.bootstrap_servers, topic, tag)["ingest"]
    outputs = [config[k] for k in ("output_topic", "review_requests_topic", "dead_letter_topic")]
    await broker.create_topics(outputs, partitions=PARTITIONS)  # as ingest's are, 4 partitions
    figures = await quix_run(python, broker.bootstrap_servers, topic, tag, total)
    result = Rate(figures["count"] / figures["seconds"])
    result.cpu_us = figures["cpu_s"] / figures["count"] * 1e6
    result.threads_us = {
        key[len("cpu_") : -len("_s")] if key.startswith("cpu_") else "of which gc": value
        / figures["count"]
        * 1e6
        for key, value in figures.items()
        if key not in ("count", "seconds", "cpu_s")
    }
    return result


def with_gc_log(broker: KafkaBroker, gc_log: Path, java_options: str = "") -> KafkaBroker:
    """The broker's JVM writes its collections to ``gc_log`` (wall-clock milliseconds); with
    ``java_options`` too (options the sandbox's command line does not set)."""
    options = f"-Xlog:gc:file={gc_log}:timemillis {java_options}".strip()
    broker.process.env = {"JAVA_TOOL_OPTIONS": options}
    return broker


async def throughput(
    broker: Broker, topic: str, events: int, rounds: int, quix: Path | None
) -> float:
    """The rounds (see the module docstring); returns the median ingest rate."""
    bootstrap = broker.bootstrap_servers
    sides = ["plain", "ingest", *(["quix"] if quix else [])]
    results: dict[str, list[Rate]] = {side: [] for side in sides}
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(sides)
        order = sides[shift:] + sides[:shift]
        for side in order:
            if side == "plain":
                results[side].append(await plain_loop(bootstrap, topic, events, broker.idempotence))
            elif side == "ingest":
                results[side].append(await ingest_path(broker, topic, events))
            else:
                assert quix is not None
                results[side].append(await quix_side(quix, broker, topic, events))
        shown = ", ".join(
            f"{side} {results[side][-1]:,.0f} msg/s ({results[side][-1].cpu_us:.1f} us CPU/msg)"
            for side in sides
        )
        print(f"round {round_no} ({' > '.join(order)}; load {ingest_latency.load_average()}): "
              f"{shown}; {ratios(sides, {side: results[side][-1] for side in sides})}",
              flush=True)  # fmt: skip
    medians = {side: Rate(statistics.median(results[side])) for side in sides}
    for side in sides:
        medians[side].cpu_us = statistics.median(r.cpu_us for r in results[side])
    print(f"median of {rounds} rounds: "
          + ", ".join(f"{side} {medians[side]:,.0f} msg/s ({medians[side].cpu_us:.1f} us CPU/msg)"
                      for side in sides)
          + f"; {ratios(sides, medians)}")  # fmt: skip
    for pair in itertools.combinations(sides, 2):
        per_round = [a / b for a, b in zip(results[pair[1]], results[pair[0]], strict=True)]
        print(f"  {pair[1]} / {pair[0]}: median of the per-round ratios "
              f"{statistics.median(per_round):.2f} (rounds {min(per_round):.2f}-"
              f"{max(per_round):.2f})"
              + ("; target >= 0.80" if pair == ("plain", "ingest") else ""))  # fmt: skip
    if "quix" in results:
        split = {
            thread: statistics.median(r.threads_us[thread] for r in results["quix"])
            for thread in results["quix"][0].threads_us
        }
        print("  quix CPU per message by thread (median): "
              + ", ".join(f"{thread} {us:.1f} us" for thread, us in split.items()))  # fmt: skip
    return float(medians["ingest"])


def ratios(sides: list[str], rates: dict[str, Rate]) -> str:
    """Each side's rate and CPU per message against the others'."""
    parts = []
    for first, second in itertools.combinations(sides, 2):
        a, b = rates[first], rates[second]
        parts.append(f"{second}/{first} {b / a:.2f} (CPU {a.cpu_us / b.cpu_us:.2f})")
    return "ratios " + ", ".join(parts)


async def main(kind: BrokerKind, state: Path, args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load {ingest_latency.load_average()}")
    # Output topics appear on first use, with the input's partition count (as on Tansu).
    auto = {"auto.create.topics.enable": "true", "num.partitions": str(PARTITIONS)}
    gc_log = state / "broker-gc.log"
    broker: Broker
    if kind == "kafka":
        kafka = KafkaBroker(state_dir=state, extra_config=auto, collector=args.broker_gc)
        broker = with_gc_log(kafka, gc_log, args.broker_java)
    else:
        broker = TansuBroker()
    quix: Path | None = None
    if args.rounds and not args.no_quix:
        try:
            quix = await asyncio.to_thread(quix_python)
        except QuixUnavailable as exc:
            print(f"quix: skipped, {exc}")
    async with broker:
        print(f"broker: {kind}, ready in {time.monotonic() - started:.1f} s, "
              f"{broker.process.resident_bytes() / 1e6:.0f} MB resident")  # fmt: skip
        maximum = args.max_rate
        if args.rounds:
            topic = f"bench-in-{uuid.uuid4().hex[:6]}"
            await broker.create_topics([topic], partitions=PARTITIONS)
            rng = random.Random(1)
            values = [make_event(i, rng) for i in range(args.events)]
            size = statistics.mean(len(v) for v in values)
            produced = await produce_all(broker.bootstrap_servers, topic, values)
            print(f"events: {args.events} x {size:.0f} bytes in {PARTITIONS} partitions "
                  f"(produced at {produced:,.0f} msg/s)")  # fmt: skip
            measured = await throughput(broker, topic, args.events, args.rounds, quix)
            maximum = maximum or measured
        if not maximum or not args.loads:
            return
        print(f"decision latency, the router in its own process (maximum {maximum:,.0f} msg/s"
              f"{' as given' if args.max_rate else ', the median ingest rate'}):")  # fmt: skip
        if args.warm_up_s:  # the broker's JIT compiles its request paths: unreported
            warm = await ingest_latency.measure(
                broker, gc_log, state, round(maximum / 2, -2), args.warm_up_s, freeze=True
            )
            print(f"  (warm-up, not counted: {args.warm_up_s:g} s at half the maximum, "
                  f"{warm.report('warm-up')[0].split(': ', 2)[-1]})")  # fmt: skip
        for load in args.loads:
            rate = round(maximum * load, -2)
            for freeze in (True, False) if load in args.no_freeze_at else (True,):
                run = await ingest_latency.measure(
                    broker,
                    gc_log,
                    state,
                    rate,
                    args.latency_s,
                    freeze=freeze,
                    prelude_s=args.prelude_s,
                )
                for line in run.report(f"{load:.0%} of the maximum"):
                    print(line, flush=True)


def fractions(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every side (0: none)")
    parser.add_argument("--no-quix", action="store_true", help="leave out the Quix application")
    parser.add_argument(
        "--loads",
        type=fractions,
        default=[0.1, 0.5, 0.9],
        help="latency runs at these fractions of the maximum (empty: none)",
    )
    parser.add_argument("--latency-s", type=float, default=10.0, help="seconds of paced events")
    parser.add_argument(
        "--warm-up-s",
        type=float,
        default=10.0,
        help="an unreported latency run first, at half the maximum (0: none)",
    )
    parser.add_argument(
        "--prelude-s",
        type=float,
        default=3.0,
        help="before each latency run, a router decides this many seconds of events, unmeasured,"
        " and is restarted (0: none, the run on new partitions)",
    )
    parser.add_argument(
        "--no-freeze-at", type=fractions, default=[0.5], help="loads also run without gc.freeze"
    )
    parser.add_argument(
        "--broker-java",
        default="",
        help="JVM options for the Kafka broker beyond the sandbox's (e.g. -Xmn256m)",
    )
    parser.add_argument(
        "--broker-gc",
        default="SerialGC",
        help="the Kafka broker's collector, -XX:+Use<this> (the sandbox's: SerialGC; ZGC, "
        "ShenandoahGC, G1GC, ParallelGC)",
    )
    parser.add_argument(
        "--max-rate", type=float, help="the maximum the loads are fractions of (default: measured)"
    )
    args = parser.parse_args()  # fmt: skip
    if not args.rounds and not args.max_rate:
        parser.error("--rounds 0 needs --max-rate")
    state = Path(tempfile.mkdtemp(prefix="bench-ingest-"))  # Kafka's log
    try:
        asyncio.run(main(args.broker, state, args))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    cli()
