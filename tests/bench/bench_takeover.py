"""Benchmark: taking over a review partition whose ledger holds a week of finished reviews.

    .venv/bin/python tests/bench/bench_takeover.py [--entries 1000000,10000000] [--open 1000]
        [--baseline CHECKOUT]

A review instance reads a partition's ledger whole when the partition is assigned (a rebalance,
a restart): ``ReviewScheduler._load`` applies every record to a ``PartitionLedger``. The ledger
keeps every CLOSED entry for ``review.ledger_retention_s`` (7 days), so that a late copy of a
request is recognised and never starts a second review: at 10 reviews a second that is about 6
million entries a partition-week, at 100 a second 60 million.

For each size, a fresh one-partition ledger topic on the sandbox's Apache Kafka gets that many
CLOSED entries, as the scheduler writes them (a Completed review closed: ``Entry.moved``,
``ledger.encode``), ``--open`` entries still waiting (PENDING, with a request), and the partition's
budget, audit and intake records. Then a child process (so its memory is its own) reads the
partition as ``_load`` does, through ``KafkaLedgerLog`` and ``PartitionReader``, and reports:

- the time to read it (the takeover's cost beyond joining the group), and records a second;
- resident memory before and after, and the ledger's Python heap (tracemalloc is off: it
  would slow the read; the RSS difference is the figure);
- that every CLOSED name is known afterwards (a sample of 1,000) and the open ones are whole.

With ``--baseline``, a checkout's ``stream_router`` (another commit's worktree) reads each
ledger too, first, and the ratios of this tree to it are printed.

The goal (issue 24): under a minute at 10 million entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_router.envelope import review_request
from stream_router.models import Prediction, SourceRef
from stream_router.naming import loop_name
from stream_router.policies.routes import Decision
from stream_router.review.ledger import (
    BUDGET_KEY,
    INTAKE_KEY,
    End,
    Entry,
    State,
    encode,
    encode_position,
    pending,
)
from stream_router.review.request import ReviewRequest
from stream_router.sandbox.kafka import KafkaBroker

HERE = Path(__file__).resolve().parent
FLOW = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/general"
WEEK_S = 7 * 86400.0
BATCH = 5_000  # records in one produce batch


def closed_name(number: int) -> str:
    """A loop name as the router makes them (``naming.loop_name``)."""
    return loop_name(f"event-{number}", "v1")


def closed_record(number: int, now: float, total: int) -> tuple[bytes, bytes]:
    name = closed_name(number)
    closed_s = now - WEEK_S + WEEK_S * number / total  # spread over the week, in order
    end = End("Completed", f"s3://bucket/a2i/{name}/output.json", source="eventbridge")
    ended = Entry(name, State.ENDED, 1, FLOW, closed_s - 60, closed_s - 1, None,
                  started_s=closed_s - 50, deadline_s=closed_s + 86400, end=end,
                  sent=True)  # fmt: skip
    # Closed as the scheduler closes it (whatever a CLOSED entry keeps is Entry.moved's).
    return name.encode(), encode(ended.moved(State.CLOSED, closed_s, outcome="reviewed"))


def open_record(number: int, now: float) -> tuple[bytes, bytes]:
    """A request still waiting (PENDING), as bench_review.py makes requests."""
    event_id = f"open-{number}"
    event = {"event_id": event_id, "label": "cat", "confidence": 0.42}
    prediction = Prediction(event_id, "cat", 0.42, None, None, None, now, event,
                            SourceRef("predictions", 0, number, f"k{number}".encode()))  # fmt: skip
    name = loop_name(event_id, "v1")
    decision = Decision(True, "general", FLOW, "confidence", "below 0.7")
    request = ReviewRequest.parse(review_request(prediction, decision, "v1", name, now))
    entry = pending(request, now)
    return entry.first_name.encode(), encode(entry)


async def fill(bootstrap: str, topic: str, closed: int, opened: int) -> float:
    """Write the ledger; returns seconds taken."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50,
                                max_batch_size=1_048_576, max_request_size=8_388_608)  # fmt: skip
    await producer.start()
    began = time.perf_counter()
    now = time.time()
    try:
        pending_acks = []
        for first in range(0, closed, BATCH):
            batch = producer.create_batch()
            for number in range(first, min(closed, first + BATCH)):
                key, value = closed_record(number, now, closed)
                if batch.append(key=key, value=value, timestamp=None) is None:
                    pending_acks.append(await producer.send_batch(batch, topic, partition=0))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            pending_acks.append(await producer.send_batch(batch, topic, partition=0))
            if len(pending_acks) > 50:
                await asyncio.gather(*pending_acks)
                pending_acks = []
            if first % 1_000_000 == 0 and first:
                print(f"  {first:,} written, {time.perf_counter() - began:.0f} s", flush=True)
        for number in range(opened):
            key, value = open_record(number, now)
            pending_acks.append(await producer.send(topic, value, key=key, partition=0))
        state = [(BUDGET_KEY, b'{"general": {"day": 0, "used": 0}}'),
                 (INTAKE_KEY, encode_position(opened))]  # fmt: skip
        for key_text, value in state:
            pending_acks.append(
                await producer.send(topic, value, key=key_text.encode(), partition=0)
            )
        await asyncio.gather(*pending_acks)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def read(bootstrap: str, topic: str, closed: int, opened: int) -> dict[str, object]:
    """The child: read the partition as ``ReviewScheduler._load`` does."""
    from stream_router.review.ledger import PartitionLedger  # noqa: PLC0415
    from stream_router.review_topics import KafkaLedgerLog, PartitionReader  # noqa: PLC0415
    from stream_router.settings import KafkaSettings  # noqa: PLC0415

    reader = PartitionReader(KafkaSettings(bootstrap_servers=bootstrap), "unused", "unused")
    await reader.start()

    async def no_writes(*_: object) -> object:
        raise AssertionError("a takeover reads only")

    log = KafkaLedgerLog(topic, no_writes, reader)  # type: ignore[arg-type]
    before = rss_mib()
    began = time.perf_counter()
    cpu = time.process_time()
    ledger = PartitionLedger(0, 0)
    records = 0
    try:
        async for batch in log.read(0):
            for key, value in batch:
                ledger.apply(key, value)
            records += len(batch)
    finally:
        await reader.stop()
    took = time.perf_counter() - began
    cpu = time.process_time() - cpu
    after = rss_mib()
    sample = range(0, closed, max(1, closed // 1000))
    unknown = [n for n in sample if not ledger.knows(closed_name(n))]
    whole = sum(1 for e in ledger.entries.values() if e.request is not None)
    return {"records": records, "seconds": took, "cpu_s": cpu, "rss_before_mib": before,
            "rss_after_mib": after, "closed": len(ledger.closed), "open": len(ledger.entries),
            "unknown_in_sample": len(unknown), "open_whole": whole,
            "position": ledger.position}  # fmt: skip


async def main(sizes: list[int], opened: int, baseline: Path | None) -> None:
    sides: list[tuple[str, dict[str, str]]] = [("this tree", dict(os.environ))]
    if baseline is not None:  # it reads first
        sides.insert(0, (f"baseline {baseline}", {**os.environ, "PYTHONPATH": str(baseline)}))
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp:
        async with KafkaBroker(state_dir=Path(tmp) / "kafka") as broker:
            bootstrap = broker.bootstrap_servers
            print("entries | side | fill | read | records/s | CPU | RSS before → after | all known")
            for size in sizes:
                topic = f"bench-ledger-{uuid.uuid4().hex[:6]}"
                filled = await fill(bootstrap, topic, size, opened)
                reads = []
                for side, env in sides:
                    child = await asyncio.to_thread(
                        subprocess.run,
                        [sys.executable, str(Path(__file__)), "--child", bootstrap, topic,
                         str(size), str(opened)],
                        capture_output=True, text=True, check=True, env=env,
                    )  # fmt: skip
                    got = json.loads(child.stdout.strip().splitlines()[-1])
                    reads.append(got)
                    print(row(size, side, filled, got, opened), flush=True)
                if len(reads) == 2:
                    print(f"{size:,} | this tree / baseline: {ratios(*reads)}", flush=True)


def grown(got: dict[str, float]) -> float:
    return got["rss_after_mib"] - got["rss_before_mib"]


def row(size: int, side: str, filled: float, got: dict[str, Any], opened: int) -> str:
    known = got["unknown_in_sample"] == 0 and got["open_whole"] == opened
    return (
        f"{size:,} | {side} | {filled:.0f} s | {got['seconds']:.1f} s | "
        f"{got['records'] / got['seconds']:,.0f} | {got['cpu_s']:.1f} s | "
        f"{got['rss_before_mib']:.0f} → {got['rss_after_mib']:.0f} MiB "
        f"(+{grown(got) / size * 2**20:.0f} B an entry) | "
        f"{'yes' if known else 'NO: ' + json.dumps(got)}"
    )


def ratios(old: dict[str, float], new: dict[str, float]) -> str:
    return (
        f"read {new['seconds'] / old['seconds']:.2f}, CPU {new['cpu_s'] / old['cpu_s']:.2f}, "
        f"memory grown {grown(new) / grown(old):.2f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, server, name, count, opens = sys.argv
        result = asyncio.run(read(server, name, int(count), int(opens)))
        print(json.dumps(result))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--entries", default="1000000,10000000")
    parser.add_argument("--open", type=int, default=1000)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout whose stream_router reads each ledger too, first (PYTHONPATH)",
    )
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.entries.split(",")], args.open, args.baseline))
