"""The paced producer of ``bench_ingest.py``'s latency runs, in a process of its own.

    python tests/bench/ingest_pacer.py BOOTSTRAP TOPIC WARM_TOPIC RATE SECONDS [--seed N]
        [--first N]

Builds every event first (``ingest_events.event_template``: the JSON split around its
timestamp), connects, produces one record to ``WARM_TOPIC`` (metadata and the connection to
the partition leaders are then in place), prints ``ready`` and waits for a line on stdin; then
sends ``RATE * SECONDS`` events on a fixed schedule (event ``i`` is due ``i / RATE`` seconds
after the start), stamping each with ``time.time()`` as it is handed to the client: the event's
timestamp is when it was produced, whatever the schedule. When a millisecond or more ahead of
schedule it sleeps until the next event is due (that is the pacing, not a wait for anything);
otherwise it sends at once, so the rate over the run is the one asked for and short bursts make
up for sleeps that overran. At the end it flushes and prints one JSON line: events sent, the
rate achieved, how far behind schedule it fell at most, and its CPU seconds (every thread's)
while sending.

The client is librdkafka's (confluent-kafka, a runtime dependency): about 7 µs of CPU a record
at 19,600 a second, every thread of this process counted (0.13 of a core), so the pacing takes
little of a 2-core machine's CPU from the router under test. ``linger.ms`` 1: librdkafka sends
what arrived within a millisecond in one request (with 0 it sends every record in a request of
its own, and at 4,700 records a second the broker queued them: acknowledgements took p50
222 ms, against 1.3 ms with 1, measured on this sandbox). The cyclic garbage collector is off
(this loop makes no reference cycles), so no collection runs between stamping an event and
handing it over.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout, from anywhere

from tests.bench.ingest_events import event_template

#: It sleeps only when a millisecond or more ahead: one sleep per millisecond's events, not one
#: per event (the schedule is kept within that millisecond, and every event is stamped when sent).
STEP_S = 0.001


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("warm_topic")
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--first", type=int, default=0, help="the first event's number")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    count = int(args.rate * args.seconds)
    numbers = range(args.first, args.first + count)
    events = [event_template(i, rng) for i in numbers]
    keys = [f"k{i}".encode() for i in numbers]
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "linger.ms": 1,
            "socket.nagle.disable": True,
            "client.id": "pacer",
        }
    )
    producer.produce(args.warm_topic, b"warm")
    if producer.flush(30) != 0:
        raise SystemExit("the warm-up record was not acknowledged within 30 s")
    producer.list_topics(args.topic, timeout=30)  # the topic's partitions, before the first event
    gc.collect()
    gc.disable()
    print("ready", flush=True)
    sys.stdin.readline()
    rate, topic = args.rate, args.topic
    produce, poll, now, clock = producer.produce, producer.poll, time.perf_counter, time.time
    behind = 0.0
    began_cpu = time.process_time()
    began = now()
    began_wall = clock()
    for i in range(count):
        due = began + i / rate
        late = now() - due
        if late < -STEP_S:
            time.sleep(-late)
        elif late > behind:
            behind = late
        head, tail = events[i]
        while True:
            try:
                produce(topic, head + repr(clock()).encode() + tail, keys[i])
                break
            except BufferError:  # librdkafka's queue is full: serve it until there is room
                poll(0.01)
        if i & 255 == 0:
            poll(0)  # serve librdkafka's delivery reports now and then
    sent_s = now() - began
    producer.flush(60)
    cpu_s = time.process_time() - began_cpu
    print(
        json.dumps(
            {
                "sent": count,
                "rate": count / sent_s,
                "behind_max_ms": behind * 1000,
                "began": began_wall,
                "ended": began_wall + sent_s,
                "cpu_s": cpu_s,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
