"""CPU micro-benchmark of ingest's hot path, without a broker: µs of CPU per event, by stage.

    .venv/bin/python tests/bench/bench_ingest_cpu.py [--events 20000] [--rounds 7] [--json]

The events and the configuration are ``bench_ingest.py``'s (``make_event``, ``settings_for``:
``confidence`` and ``margin`` under ``any``, then a 1 % ``sample`` audit route), in batches of
1,000 records over 4 partitions as its ``getmany`` returns them. The Kafka clients are stand-ins
that do no I/O: the producer hands the writer aiokafka's own batch builders (what
``AIOKafkaProducer.create_batch`` gives) and acknowledges each batch at once, after building it
(the CRC and framing its sender would compute); the consumer commits nowhere. So the figures are
ingest's own work per event, with nothing of the network, and run anywhere.

Stages, each timed separately over the same batches with the real code and the cyclic garbage
collector paused, as ``Ingest.submit`` pauses it while it decides a batch:

- ``parse``: ``EventParser.parse`` of each record (its ``SourceRef`` included);
- ``policies``: ``Routes.decide`` over each batch;
- ``envelope``: the accepted envelope or the review request (with its loop name) of each event;
- ``add``: ``BatchWriter.add`` of each encoded record (partitioning included);
- ``flush``: ``BatchWriter.flush`` and building the batches (what the producer's sender does);
- ``submit``: ``Ingest.submit`` of each batch, start to finish (prepare, dispatch, flush,
  metrics, commit; the collector as ``submit`` leaves it): the total. ``submit`` minus the
  stages above (``other``) is the dispatcher's and the loop's own bookkeeping, and the
  collector's runs between batches.

Each round runs every stage once over all events; the figures are medians over the rounds. The
machine's other work blurs absolute figures: compare two trees in the same sitting, alternating
(``--json`` prints one line to collect), rather than with figures from another day.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout, from anywhere

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import CollectorRegistry

import stream_router
from stream_router.envelope import accepted_envelope, review_request
from stream_router.ingest.dispatch import Batch
from stream_router.ingest.loop import Ingest
from stream_router.metrics import IngestMetrics
from stream_router.models import Prediction, SourceRef
from stream_router.naming import loop_name
from stream_router.policies.routes import Decision, Routes
from tests.bench.bench_ingest import PARTITIONS, make_event, settings_for

TOPIC = "bench-in"
BATCH_RECORDS = 1000
STAGES = ("parse", "policies", "envelope", "add", "flush", "submit")


class NullProducer:
    """What ingest uses of ``AIOKafkaProducer``, without a network."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        builder.close()
        builder._build()  # the sender's work: framing and CRC
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class NullConsumer:
    """What ingest uses of ``AIOKafkaConsumer`` once a batch is in hand: commits go nowhere."""

    def __init__(self) -> None:
        self.owned = {TopicPartition(TOPIC, p) for p in range(PARTITIONS)}

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


def batches(events: int) -> list[Batch]:
    """The events as ``getmany`` hands them over: 1,000 records a batch, over 4 partitions."""
    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    out: list[Batch] = []
    offsets = [0] * PARTITIONS
    for start in range(0, events, BATCH_RECORDS):
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        for i in range(start, min(events, start + BATCH_RECORDS)):
            partition = i % PARTITIONS
            key, value = f"k{i}".encode(), make_event(i, rng)
            record = ConsumerRecord(
                TOPIC, partition, offsets[partition], now_ms, 0, key, value, None,
                len(key), len(value), (),
            )  # fmt: skip
            offsets[partition] += 1
            batch.setdefault(TopicPartition(TOPIC, partition), []).append(record)
        out.append(batch)
    return out


def timed(work: Callable[[], object], *, pause_collector: bool = True) -> float:
    """CPU seconds of ``work``; the collector paused (as ``Ingest.submit`` pauses it while it
    decides a batch) unless ``pause_collector`` is false."""
    gc.collect()
    if pause_collector:
        gc.disable()
    try:
        began = time.process_time()
        work()
        return time.process_time() - began
    finally:
        gc.enable()


class Bench:
    def __init__(self, events: int) -> None:
        settings = settings_for("127.0.0.1:9092", TOPIC, "cpu")
        self.ingest = Ingest(
            settings.kafka,
            settings.ingest,
            Routes(settings.policies),
            IngestMetrics(CollectorRegistry()),
            consumer=NullConsumer(),  # type: ignore[arg-type]
            producer=NullProducer(settings.kafka.producer_batch_max_bytes),  # type: ignore[arg-type]
        )
        self.topics = [
            settings.ingest.output_topic,
            settings.ingest.review_requests_topic,
            settings.ingest.dead_letter_topic,
        ]
        self.batches = batches(events)
        self.events = events
        dispatcher = self.ingest.dispatcher
        self.parse = dispatcher.parser.parse
        self.routes = self.ingest.routes
        self.version = self.routes.version
        # Inputs of the later stages, made once by the earlier ones.
        self.predictions = [self._parse(batch) for batch in self.batches]
        self.decisions = [self.routes.decide(p) for p in self.predictions]
        self.routes.drain_shadow_hits()
        self.records = [
            self._encode(p, d) for p, d in zip(self.predictions, self.decisions, strict=True)
        ]

    def _parse(self, batch: Batch) -> list[Prediction]:
        parse = self.parse
        return [
            parse(r.value, SourceRef(r.topic, r.partition, r.offset, r.key, r.timestamp))
            for records in batch.values()
            for r in records
        ]

    def _encode(
        self, predictions: Sequence[Prediction], decisions: Sequence[Decision]
    ) -> list[tuple[str, bytes | None, bytes]]:
        output, requests = self.topics[0], self.topics[1]
        version, now = self.version, time.time()
        encoded: list[tuple[str, bytes | None, bytes]] = []
        for prediction, decision in zip(predictions, decisions, strict=True):
            if decision.review:
                name = loop_name(prediction.event_id, version)
                value = review_request(prediction, decision, version, name, now)
                encoded.append((requests, name.encode(), value))
            else:
                value = accepted_envelope(prediction, decision, version, now)
                encoded.append((output, prediction.source.key, value))
        return encoded

    def run_parse(self) -> None:
        for batch in self.batches:
            self._parse(batch)

    def run_policies(self) -> None:
        decide = self.routes.decide
        for predictions in self.predictions:
            decide(predictions)
        self.routes.drain_shadow_hits()

    def run_envelope(self) -> None:
        # Each record dropped once made, as dispatch drops it once added (a list of a batch's
        # records would cost the allocator more than making them).
        version, now = self.version, time.time()
        for predictions, decisions in zip(self.predictions, self.decisions, strict=True):
            for prediction, decision in zip(predictions, decisions, strict=True):
                if decision.review:
                    name = loop_name(prediction.event_id, version)
                    review_request(prediction, decision, version, name, now)
                    name.encode()
                else:
                    accepted_envelope(prediction, decision, version, now)

    def add_and_flush_seconds(self) -> tuple[float, float]:
        """CPU of adding each batch's records to the writer, and of flushing them."""
        writer = self.ingest.writer
        loop = asyncio.new_event_loop()
        adding = flushing = 0.0
        try:
            loop.run_until_complete(writer.prepare(self.topics))
            for records in self.records:

                def add(records: list[tuple[str, bytes | None, bytes]] = records) -> None:
                    for topic, key, value in records:
                        writer.add(topic, key, value)

                adding += timed(add)
                flushing += timed(lambda: loop.run_until_complete(writer.flush()))
        finally:
            loop.close()
        return adding, flushing

    def run_submit(self) -> None:
        ingest = self.ingest
        loop = asyncio.new_event_loop()
        try:
            for batch in self.batches:
                loop.run_until_complete(ingest.submit(batch))
            loop.run_until_complete(ingest.drain())
        finally:
            loop.close()

    def round(self) -> dict[str, float]:
        """µs of CPU per event of each stage, once over every event."""
        adding, flushing = self.add_and_flush_seconds()
        seconds = {
            "parse": timed(self.run_parse),
            "policies": timed(self.run_policies),
            "envelope": timed(self.run_envelope),
            "add": adding,
            "flush": flushing,
            "submit": timed(self.run_submit, pause_collector=False),  # it pauses it itself
        }
        return {stage: s / self.events * 1e6 for stage, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON line of the medians")
    args = parser.parse_args()
    bench = Bench(args.events)
    bench.round()  # warm-up: caches, first batch builders
    rounds = [bench.round() for _ in range(args.rounds)]
    medians = {stage: statistics.median(r[stage] for r in rounds) for stage in STAGES}
    medians["stages"] = sum(medians[s] for s in STAGES if s != "submit")
    medians["other"] = medians["submit"] - medians["stages"]
    if args.json:
        print(json.dumps({"tree": str(Path(stream_router.__file__).parents[1]), **medians}))
        return
    size = statistics.mean(len(r.value) for b in bench.batches for rs in b.values() for r in rs)
    out = statistics.mean(len(v) for rs in bench.records for _, _, v in rs)
    print(f"stream_router from {Path(stream_router.__file__).parent}")
    print(f"{args.events} events of {size:.0f} bytes, envelopes of {out:.0f} bytes; "
          f"medians of {args.rounds} rounds, us of CPU per event:")  # fmt: skip
    for stage in (*STAGES[:-1], "stages", "other", "submit"):
        print(f"  {stage:<9} {medians[stage]:6.2f}")


if __name__ == "__main__":
    main()
