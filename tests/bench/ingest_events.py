"""The events and the router configuration that ``bench_ingest.py`` and its helpers share.

Every side of the benchmark (the plain loop, ingest, the production router of the latency
runs, the Quix Streams application) reads the same events and, where it routes, the same
configuration: the ``confidence`` and ``margin`` policies under ``any`` on one route, a 1 %
``sample`` on an audit route.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

PARTITIONS = 4
LABELS = ["cat", "dog", "bird", "fish", "other"]
#: What ``make_event`` writes for the timestamp when given ``ts=0.0``; see :func:`event_template`.
_TS_PLACEHOLDER = b'"timestamp": 0.0'


def make_event(i: int, rng: random.Random, ts: float | None = None) -> bytes:
    scores = [rng.random() for _ in LABELS]
    total = sum(scores)
    probs = {label: round(s / total, 4) for label, s in zip(LABELS, scores, strict=True)}
    label = max(probs, key=probs.__getitem__)
    event = {
        "event_id": f"evt-{i:09d}",
        "model": "image-classifier",
        "model_version": "2026.11.3",
        "label": label,
        "confidence": max(0.5, min(0.999, rng.gauss(0.85, 0.12))),
        "scores": probs,
        "timestamp": ts if ts is not None else time.time(),
        "request": {"tenant": f"t{i % 17}", "region": "eu-west-1"},
    }
    return json.dumps(event).encode()


def event_template(i: int, rng: random.Random) -> tuple[bytes, bytes]:
    """``make_event``'s bytes split around the timestamp's value: ``head + repr(ts) + tail``
    is the event stamped ``ts``, built with two concatenations when it is sent."""
    head, tail = make_event(i, rng, ts=0.0).split(_TS_PLACEHOLDER)
    return head + b'"timestamp": ', tail


def router_config(
    bootstrap: str, topic: str, tag: str, *, idempotence: bool = True
) -> dict[str, Any]:
    """The router's configuration (``Settings`` keyword arguments, or a YAML file's mapping);
    ``idempotence`` as the broker allows (``Broker.idempotence``)."""
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "session_timeout_s": 6,
            "heartbeat_interval_s": 1,
            "idempotence": idempotence,
        },
        "ingest": {
            "input_topics": [topic],
            "output_topic": f"bench-out-{tag}",
            "review_requests_topic": f"bench-rr-{tag}",
            "dead_letter_topic": f"bench-dlq-{tag}",
            "group_id": f"bench-ingest-{tag}",
            "fetch_wait_s": 0.05,
            "batch_max_records": 1000,
        },
        "policies": {
            "version": "bench",
            "routes": [
                {
                    "name": "uncertain",
                    "review_flow": "fd-general",
                    "policy": {
                        "type": "any",
                        "policies": [
                            {"type": "confidence", "below": 0.6},
                            {"type": "margin", "min_margin": 0.02},
                        ],
                    },
                },
                {
                    "name": "audit",
                    "review_flow": "fd-audit",
                    "policy": {"type": "sample", "percent": 1},
                },
            ],
        },
        "metrics": {"enabled": False},
    }
