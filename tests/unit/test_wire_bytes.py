"""What ingest writes, byte for byte, against a snapshot: work on the hot path (parsing, policies,
envelopes) must not change a byte that consumers read.

The inputs are edge cases written out below and 400 seeded random events of the benchmark's
shape with one field in three made odd (missing, null, of another type, out of range, non-ASCII,
huge), with keys of every kind (none, empty, not UTF-8), under four configurations: the
benchmark's routes; the dispatch tests' routes (a shadow route, a shadow policy inside a route,
``all``, ``any``, field rules, an audit sample, a plugin that raises on some events); dotted
paths with class lists, millisecond timestamps, confidence ranges, ``not`` and ``entropy``; and
no routes. They cover accepted envelopes, review requests, every dead letter the parser and
dispatch write (``not_json`` to ``too_large``, ``unencodable``, ``policy_error``, tombstones)
and derived event ids.

Every record dispatch writes (its topic, key, value and headers, as a digest) is compared with
``wire_snapshot.json`` beside this file, written by the code before the hot path was
reworked (commit 8d9d885). A change meant to alter what ingest writes regenerates it, and says so
in its commit (consumers read these bytes)::

    .venv/bin/python -m tests.unit.test_wire_bytes --write
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from stream_router.ingest.dispatch import Dispatcher
from stream_router.models import Prediction
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.registry import PolicyRegistry
from stream_router.policies.routes import Routes
from stream_router.settings import Settings

SNAPSHOT = Path(__file__).with_name("wire_snapshot.json")
LIMIT = 16_384
TOPIC = "predictions"
LABELS = ["cat", "dog", "bird", "fish", "other"]


class Explodes(EventPolicy[PolicyParams]):
    """A plugin breaking the contract: raises on the label ``boom``."""

    params_model = PolicyParams

    def check(self, prediction: Prediction) -> Verdict:
        if prediction.label == "boom":
            raise RuntimeError("boom")
        return Verdict(False, f"label {prediction.label} is fine")


BENCH_ROUTES: list[dict[str, Any]] = [
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
    {"name": "audit", "review_flow": "fd-audit", "policy": {"type": "sample", "percent": 1}},
]

DISPATCH_ROUTES: list[dict[str, Any]] = [
    {
        "name": "experts",
        "review_flow": "fd-experts",
        "policy": {
            "type": "all",
            "policies": [
                {"type": "field", "field": "model_name", "op": "eq", "value": "fraud-v2"},
                {"type": "confidence", "below": 0.9},
            ],
        },
    },
    {
        "name": "general",
        "review_flow": "fd-general",
        "policy": {
            "type": "any",
            "policies": [
                {"type": "confidence", "below": 0.3, "per_label": {"bird": {"below": 0.5}}},
                {"type": "margin", "min_margin": 0.01, "when_missing": "accept"},
                {"type": "required_fields", "fields": ["model_version"]},
                {"type": "field", "field": "meta.n", "op": "gt", "value": 7},
                {"type": "field", "field": "event_id", "op": "matches", "value": "x.*y"},
                {"type": "confidence", "below": 0.97, "shadow": True, "name": "strict"},
                {"type": "explodes"},
            ],
        },
    },
    {"name": "audit", "review_flow": "fd-general", "policy": {"type": "sample", "percent": 10}},
    {
        "name": "entropy-trial",
        "review_flow": "fd-general",
        "shadow": True,
        "policy": {"type": "entropy", "max_entropy": 0.8},
    },
]

NESTED_ROUTES: list[dict[str, Any]] = [
    {
        "name": "ranges",
        "review_flow": "fd-general",
        "policy": {
            "type": "confidence",
            "ranges": [{"min": 0.0, "max": 0.4}, {"min": 0.95, "max": 1.0}],
            "per_label": {"cat": {"ranges": [{"min": 0.5, "max": 0.7}]}},
        },
    },
    {
        "name": "torn",
        "review_flow": "fd-general",
        "policy": {
            "type": "not",
            "policy": {"type": "entropy", "max_entropy": 0.9, "when_missing": "accept"},
        },
    },
    {
        "name": "audit",
        "review_flow": "fd-audit",
        "policy": {
            "type": "any",
            "policies": [
                {"type": "sample", "percent": 5, "salt": "a"},
                {"type": "sample", "percent": 2, "salt": "b"},
            ],
        },
    },
]

NESTED_MAPPING = {
    "event_id": "meta.id",
    "label": "out.label",
    "confidence": "out.confidence",
    "scores": "out.scores",
    "classes": ["cat", "dog", "bird"],
    "model_name": "meta.model",
    "model_version": None,
    "timestamp": "meta.at",
    "timestamp_unit": "ms",
}


def configurations() -> dict[str, Settings]:
    def settings(routes: list[dict[str, Any]], **ingest: Any) -> Settings:
        return Settings(
            kafka={"max_record_bytes": LIMIT},
            ingest={
                "output_topic": "out",
                "review_requests_topic": "requests",
                "dead_letter_topic": "dead",
                **ingest,
            },
            policies={"version": "v1", "routes": routes},
        )

    return {
        "bench": settings(BENCH_ROUTES),
        "dispatch": settings(DISPATCH_ROUTES, tombstones="dead_letter"),
        "nested": settings(NESTED_ROUTES, mapping=NESTED_MAPPING),
        "none": settings([]),
    }


def bench_event(i: int, rng: random.Random) -> dict[str, Any]:
    """An event like ``tests/bench/bench_ingest.py``'s, deterministic."""
    scores = [rng.random() for _ in LABELS]
    total = sum(scores)
    probs = {label: round(s / total, 4) for label, s in zip(LABELS, scores, strict=True)}
    return {
        "event_id": f"evt-{i:09d}",
        "model": rng.choice(["image-classifier", "fraud-v2"]),
        "model_version": "2026.11.3",
        "label": max(probs, key=probs.__getitem__),
        "confidence": max(0.0, min(1.0, rng.gauss(0.8, 0.2))),
        "scores": probs,
        "timestamp": 1_765_000_000 + i / 7,
        "request": {"tenant": f"t{i % 17}", "region": "eu-west-1"},
        "meta": {"n": i % 10, "id": f"m-{i}", "model": "nested", "at": 1_765_000_000_000 + i},
        "out": {
            "label": rng.choice(["cat", "dog", 3]),
            "confidence": rng.random(),
            "scores": [round(rng.random() ** 3, 3) for _ in range(3)],
        },
    }


#: Odd values a field may take instead (``...`` removes the field).
ODD: list[Any] = [
    ..., None, 0, 1, -1, 7, 0.0, 1.0, 1.5, -0.25, 1e-7, 0.1 + 0.2, 12345678901234567890, True,
    "", "x", "katze-ß", "猫", "🐱 emoji", "\u0000nul", "a\"quote", [], [0.5, 0.5], {},
    {"cat": 1, "dog": 0}, {"cat": 0.5, "dog": 0.5}, {"cat": 2.0, "dog": -1.0}, {"only": 0.9},
    {"cat": 0.0, "dog": 0.0}, {"cat": "high"}, [[1]], "2026-12-01T10:00:00+01:00",
]  # fmt: skip
FIELDS = ["event_id", "model", "model_version", "label", "confidence", "scores", "timestamp",
          "meta", "out", "request"]  # fmt: skip

#: Values written as raw JSON text: numbers beyond float range, NaN, nesting at orjson's edges.
RAW_VALUES = [
    b"not json", b"[1, 2]", b'"text"', b"null", b"\xef\xbb\xbf{}", b'{"label": "cat"',
    b"\xff\xfe", b'{"label": "cat", "confidence": NaN}', b'{"label": "cat", "confidence": 1e309}',
    b'{"label": "cat", "confidence": 0.9, "x": "\\ud800"}', b"{}",
    b'{"event_id": "e", "label": "cat", "confidence": 0.99, "deep": '
    + b"[" * 252 + b"1" + b"]" * 252 + b"}",
    b'{"event_id": "e", "label": "cat", "confidence": 0.99, "deep": '
    + b"[" * 260 + b"1" + b"]" * 260 + b"}",
    b'{"event_id": "e", "label": "cat", "confidence": 0.3, "deep": '
    + b"[" * 252 + b"1" + b"]" * 252 + b"}",
    b'{"label": "cat", "confidence": 0.99, "pad": "' + b"x" * 12_000 + b'"}',
    b'{"label": "cat", "confidence": 0.99, "pad": "' + b"x" * 17_000 + b'"}',
    b'{"label": "boom", "confidence": 0.99, "scores": {"a": 0.9, "b": 0.1}}',
    b'{"label":"dog","confidence":0.75,"scores":{"dog":0.75,"cat":0.25},"timestamp":1.5}',
    b'{"event_id": 42, "label": 7, "confidence": 1, "model": 2, "model_version": 3.5}',
]  # fmt: skip


def inputs() -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every input record, in order."""
    rng = random.Random(23)
    records: list[tuple[bytes | None, bytes | None]] = []
    for i in range(400):
        event = bench_event(i, rng)
        if i % 3 == 0:
            name = rng.choice(FIELDS)
            odd = rng.choice(ODD)
            if odd is ...:
                event.pop(name, None)
            else:
                event[name] = odd
        roll = rng.random()
        key: bytes | None = f"k{i}".encode()
        if roll < 0.05:
            key = None
        elif roll < 0.08:
            key = b""
        elif roll < 0.12:
            key = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))) + b"\xff"
        text = json.dumps(event, ensure_ascii=rng.random() < 0.5)
        if i % 5 == 0:
            text = json.dumps(event, separators=(",", ":"))
        records.append((key, text.encode()))
    records += [(f"raw{i}".encode(), value) for i, value in enumerate(RAW_VALUES)]
    records += [(b"tombstone", None), (None, None)]
    return records


def batches(records: Sequence[tuple[bytes | None, bytes | None]]) -> Iterator[Any]:
    """The records in batches of 50 over 3 partitions, offsets counting on."""
    offsets = [0, 0, 0]
    for start in range(0, len(records), 50):
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        for index in range(start, min(len(records), start + 50)):
            key, value = records[index]
            partition = index % 3
            size = -1 if value is None else len(value)
            record = ConsumerRecord(
                TOPIC, partition, offsets[partition], 1_765_000_000_000 + index, 0, key, value,
                None, 0, size, (),
            )  # fmt: skip
            offsets[partition] += 1
            batch.setdefault(TopicPartition(TOPIC, partition), []).append(record)
        yield batch


Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.records.append((topic, key, value, list(headers or [])))


def digest(record: Record) -> str:
    """Of the topic, key, value and headers: 128 bits of SHA-256 (the snapshot stays small)."""
    return hashlib.sha256(repr(record).encode()).hexdigest()[:32]


def written(name: str) -> list[Record]:
    """Every record dispatch writes for the inputs under one configuration, in order."""
    settings = configurations()[name]
    sink = Sink()
    routes = Routes(settings.policies, PolicyRegistry(extra={"explodes": Explodes}))
    routes.start()
    dispatcher = Dispatcher(
        settings.ingest, settings.kafka.max_record_bytes, routes, sink, clock=lambda: 1.765e9
    )
    for batch in batches(inputs()):
        dispatcher.dispatch(batch)
    routes.close()
    return sink.records


@pytest.mark.parametrize("name", ["bench", "dispatch", "nested", "none"])
def test_ingest_writes_the_bytes_of_the_snapshot(name: str) -> None:
    expected = json.loads(SNAPSHOT.read_text("utf-8"))[name]
    actual = written(name)
    assert len(actual) == len(expected)
    for index, (record, want) in enumerate(zip(actual, expected, strict=True)):
        assert digest(record) == want, f"record {index} of {name!r} differs: {record!r}"


def test_the_inputs_meet_every_kind_of_record() -> None:
    records = [record for name in configurations() for record in written(name)]
    assert {topic for topic, _, _, _ in records} == {"out", "requests", "dead"}
    values = [orjson.loads(value) for _, _, value, _ in records]
    classes = {value["reason_class"] for value in values if "reason_class" in value}
    assert classes == {
        "not_json", "not_object", "missing_field", "bad_type", "bad_value", "tombstone",
        "policy_error", "unencodable", "too_large",
    }  # fmt: skip
    envelopes = [value for value in values if "decision" in value or "loop_name" in value]
    assert any(value["event_id_derived"] for value in envelopes)
    assert any(value["key_encoding"] == "base64" for value in envelopes)
    assert any(value["key"] is None for value in envelopes)
    assert any(value["prediction"]["scores"] is None for value in envelopes)
    assert any("shadow route" in value["reason"] for value in envelopes)
    assert any("shadow strict would review" in value["reason"] for value in envelopes)
    assert any(value["reason"] == "no review route configured" for value in envelopes)
    assert {value["route"] for value in envelopes if "loop_name" in value} >= {
        "uncertain", "audit", "experts", "general", "ranges", "torn",
    }  # fmt: skip


def write() -> None:
    snapshot = {name: [digest(record) for record in written(name)] for name in configurations()}
    SNAPSHOT.write_text(json.dumps(snapshot, indent=0) + "\n", "utf-8")
    print(f"wrote {SNAPSHOT} ({sum(map(len, snapshot.values()))} records)")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    write()
