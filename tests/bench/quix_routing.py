"""ingest's routing written as a Quix Streams application, for ``bench_ingest.py``.

    <quix venv>/bin/python tests/bench/quix_routing.py --bootstrap HOST:PORT --topic IN
        --tag TAG --count N

Runs in the virtual environment ``quix_env.py`` makes (quixstreams pins confluent-kafka below
2.13 and pydantic below 2.14, ours need more), importing stream_router from this checkout.

What it does per message, on the same events and configuration as ingest
(``ingest_events.router_config``): stream_router's own code, called from one function the
dataframe applies, so the work per event is ingest's and the bytes written are the same
envelopes ingest writes (decision times aside):

- parse the value with ingest's ``EventParser`` (the event mapping), a bad one to the
  dead-letter topic with stream_router's ``dead_letter`` envelope;
- decide with ``Routes`` (``confidence`` and ``margin`` under ``any``, a 1 % ``sample``),
  one prediction at a time, as a Quix function sees one message at a time;
- encode the accepted envelope (keyed like the input) or the review request (keyed by the
  loop name) and produce it to the output or the review-requests topic (``to_topic`` with a
  topic callback).

Quix's own defaults otherwise, as a user would run it: at-least-once (the checkpoint flushes
the producer, then commits the consumed offsets, every ``commit_interval`` of 5 s and at the
stop), librdkafka with idempotence (``acks=all``), murmur2 partitioning (the Java client's, as
ingest's), ``linger.ms`` 5 (librdkafka's default). No Prometheus metrics: Quix has none.

``--work passthrough`` skips the routing (every value to the output topic as it came): what
Quix and librdkafka cost alone.

It stops after ``N`` outputs (``Application.run(count=N)``) and prints one JSON line: the
count, the seconds from its first message to the end of its final commit, and the process's
CPU seconds over the same interval (every thread's: librdkafka's as well as Python's), also
split by thread: Python's main thread, librdkafka's threads, any other; and the seconds the
cyclic garbage collector ran (``gc.callbacks``; part of the main thread's).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from quixstreams import Application, message_context
from quixstreams.models.serializers import SerializationContext, Serializer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout, from anywhere

from stream_router.envelope import accepted_envelope, dead_letter, review_request
from stream_router.errors import PoisonEvent
from stream_router.ingest.parser import EventParser
from stream_router.models import SourceRef
from stream_router.naming import loop_name
from stream_router.policies.composite import AnyPolicy
from stream_router.policies.confidence import ConfidencePolicy
from stream_router.policies.registry import PolicyRegistry
from stream_router.policies.routes import Routes
from stream_router.policies.sampling import SamplePolicy
from stream_router.policies.scores import MarginPolicy
from stream_router.settings import Settings
from tests.bench.ingest_events import router_config

#: The built-ins the configuration names (stream_router is not installed in this environment,
#: so its entry points are not either: the registry is given the classes).
POLICIES = {
    "any": AnyPolicy,
    "confidence": ConfidencePolicy,
    "margin": MarginPolicy,
    "sample": SamplePolicy,
}


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, Python's main thread apart from the rest
    (librdkafka's, named ``rdk:...``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {"python": 0.0, "librdkafka": 0.0, "other": 0.0}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text(encoding="ascii")
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        if int(task.name) == os.getpid():
            used["python"] += seconds
        elif name.startswith("rdk:"):
            used["librdkafka"] += seconds
        else:
            used["other"] += seconds
    return used


class CollectorTime:
    """A ``gc.callbacks`` hook: seconds spent in the cyclic garbage collector."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, _: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


class Routed(NamedTuple):
    """Where a message goes: ``kind`` 0 accepted, 1 review request, 2 dead letter."""

    kind: int
    key: bytes | None
    value: bytes


class RoutedValue(Serializer):
    """Writes a routed message's envelope, as built."""

    def __call__(self, value: Routed, ctx: SerializationContext) -> bytes:
        return value.value


class Router:
    """ingest's per-event work, one message at a time (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.parser = EventParser(settings.ingest.mapping)
        self.routes = Routes(settings.policies, PolicyRegistry(extra=POLICIES))
        self.routes.start()
        self.version = self.routes.version
        self.first: tuple[float, float] | None = None  # wall and CPU at the first message
        self.first_threads: dict[str, float] = {}
        self.collector_at_first = 0.0

    def __call__(self, value: bytes, key: bytes | None, timestamp: int, _: Any) -> Routed:
        if self.first is None:
            self.first = (time.perf_counter(), time.process_time())
            self.first_threads = thread_cpu()
            self.collector_at_first = COLLECTOR.seconds
        ctx = message_context()
        source = SourceRef(ctx.topic, ctx.partition, ctx.offset, key, timestamp)
        now = time.time()
        try:
            prediction = self.parser.parse(value, source)
        except PoisonEvent as poison:
            return Routed(2, key, dead_letter(value, source, poison.reason_class, str(poison), now))
        (decision,) = self.routes.decide([prediction])
        if decision.review:
            name = loop_name(prediction.event_id, self.version)
            encoded = review_request(prediction, decision, self.version, name, now)
            return Routed(1, name.encode(), encoded)
        return Routed(0, key, accepted_envelope(prediction, decision, self.version, now))

    def passthrough(self, value: bytes, key: bytes | None, timestamp: int, _: Any) -> Routed:
        """No work: the value as it came, to the output topic (``--work passthrough``)."""
        if self.first is None:
            self.first = (time.perf_counter(), time.process_time())
            self.first_threads = thread_cpu()
            self.collector_at_first = COLLECTOR.seconds
        return Routed(0, key, value)


COLLECTOR = CollectorTime()


def main() -> None:
    gc.callbacks.append(COLLECTOR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument(
        "--work",
        choices=("routing", "passthrough"),
        default="routing",
        help="passthrough: every value to the output topic as it came (Quix's own cost alone)",
    )
    args = parser.parse_args()
    settings = Settings(**router_config(args.bootstrap, args.topic, args.tag))
    ingest = settings.ingest
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"bench-quix-{args.tag}",
        auto_offset_reset="earliest",
        loglevel="WARNING",
        use_changelog_topics=False,
    )
    source = app.topic(args.topic, value_deserializer="bytes", key_deserializer="bytes")
    targets = [
        app.topic(name, value_serializer=RoutedValue(), key_serializer="bytes")
        for name in (ingest.output_topic, ingest.review_requests_topic, ingest.dead_letter_topic)
    ]
    router = Router(settings)
    sdf = app.dataframe(source)
    sdf = sdf.apply(router if args.work == "routing" else router.passthrough, metadata=True)
    sdf.to_topic(lambda routed, *_: targets[routed.kind], key=lambda routed: routed.key)

    # The end of the final commit: Application.run commits once more as it stops, then closes
    # the clients (leaving the group), which the timed interval leaves out, as it does ingest's.
    context = app._processing_context
    commit = context.commit_checkpoint
    ended: list[tuple[float, float]] = []
    threads: dict[str, float] = {}

    def commit_checkpoint(force: bool = False, revoking: bool = False) -> None:
        commit(force=force, revoking=revoking)
        if force and not revoking:
            ended.append((time.perf_counter(), time.process_time()))
            threads.update(thread_cpu())
            threads["gc"] = COLLECTOR.seconds

    context.commit_checkpoint = commit_checkpoint  # type: ignore[method-assign]
    app.run(count=args.count)
    if router.first is None or not ended:
        raise SystemExit("the Quix application stopped before its first message")
    (began, began_cpu), (end, end_cpu) = router.first, ended[-1]
    collected = threads.pop("gc") - router.collector_at_first
    by_thread = {f"cpu_{k}_s": threads[k] - router.first_threads[k] for k in threads}
    by_thread["gc_s"] = collected
    figures = {"count": args.count, "seconds": end - began, "cpu_s": end_cpu - began_cpu}
    print(json.dumps({**figures, **by_thread}))


if __name__ == "__main__":
    main()
