"""Ingest on the real broker: every event ends in exactly the expected place, counted by id."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from stream_router.app import build_ingest
from stream_router.naming import loop_name
from stream_router.sandbox.stack import Sandbox
from stream_router.settings import Settings
from tests.envelope_schema import dead_letter_validator, envelope_validator
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.router_process import router

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3


def on_sandbox(sandbox: Sandbox, tag: str) -> dict[str, Any]:
    """:func:`settings_data` for the sandbox's broker (idempotence off on Tansu)."""
    broker = sandbox.broker
    return settings_data(broker.bootstrap_servers, tag, idempotence=broker.idempotence)


def settings_data(bootstrap: str, tag: str, *, idempotence: bool = True) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "session_timeout_s": 6,
            "heartbeat_interval_s": 1,
            "idempotence": idempotence,
        },
        "ingest": {
            "input_topics": [f"in-{tag}"],
            "output_topic": f"out-{tag}",
            "review_requests_topic": f"rr-{tag}",
            "dead_letter_topic": f"dlq-{tag}",
            "group_id": f"ingest-{tag}",
            "fetch_wait_s": 0.05,
            "batch_max_records": 200,
        },
        "policies": {
            "version": "v1",
            "routes": [
                {
                    "name": "experts",
                    "review_flow": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/x",
                    "policy": {
                        "type": "all",
                        "policies": [
                            {
                                "type": "field",
                                "field": "model_name",
                                "op": "eq",
                                "value": "fraud-v2",
                            },
                            {"type": "confidence", "below": 0.9},
                        ],
                    },
                },
                {
                    "name": "general",
                    "review_flow": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/g",
                    "policy": {"type": "confidence", "below": 0.7},
                },
                {
                    "name": "audit",
                    "review_flow": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/g",
                    "shadow": True,
                    "policy": {"type": "sample", "percent": 50},
                },
            ],
        },
        # review-requests has PARTITIONS partitions: start-up checks the review role's count.
        "review": {"topic_partitions": PARTITIONS},
        "metrics": {"enabled": False},
    }


async def create_topics(sandbox: Sandbox, data: dict[str, Any]) -> dict[str, int]:
    ingest = data["ingest"]
    await sandbox.broker.create_topics(ingest["input_topics"], partitions=PARTITIONS)
    outputs = [ingest["output_topic"], ingest["review_requests_topic"], ingest["dead_letter_topic"]]
    await sandbox.broker.create_topics(outputs, partitions=PARTITIONS)
    return dict.fromkeys(outputs, PARTITIONS)


MALFORMED = [
    (b"{not json", "not_json"),
    (b'{"event_id": "x", "label": "cat", "confidence": NaN}', "not_json"),
    (b'{"event_id": "x", "confidence": 0.4}', "missing_field"),
    (b'{"event_id": "x", "label": "cat", "confidence": 1.5}', "bad_value"),
    (b'["a list"]', "not_object"),
]


def mixed_events(count: int) -> tuple[list[tuple[bytes | None, bytes | None]], dict[str, Any]]:
    """Events whose fate is known by construction, and that expected fate."""
    records: list[tuple[bytes | None, bytes | None]] = []
    expected: dict[str, Any] = {
        "accepted": set(),
        "accepted_no_id_keys": set(),
        "general": set(),
        "experts": set(),
        "dead": {},
    }
    for i in range(count):
        key = f"k{i}"
        kind = i % 10
        event: dict[str, Any] = {"event_id": f"e{i}", "label": "cat", "model": "clf"}
        if kind in (0, 1, 2, 3):
            event["confidence"] = 0.95
            expected["accepted"].add(event["event_id"])
        elif kind in (4, 5):
            event["confidence"] = 0.5
            expected["general"].add(event["event_id"])
        elif kind == 6:
            event.update(model="fraud-v2", confidence=0.85)
            expected["experts"].add(event["event_id"])
        elif kind == 7:
            event.update(model="fraud-v2", confidence=0.95)
            expected["accepted"].add(event["event_id"])
        elif kind == 8:
            raw, reason = MALFORMED[(i // 10) % len(MALFORMED)]
            records.append((key.encode(), raw))
            expected["dead"][key] = (raw, reason)
            continue
        else:
            del event["event_id"]
            event["confidence"] = 0.99
            expected["accepted_no_id_keys"].add(key)
        records.append(json_record(event, key))
    return records, expected


async def ingest_until(
    settings: Settings, registry: CollectorRegistry, outputs: dict[str, int], count: int
) -> TopicReader:
    """Run ingest in this process until ``outputs`` hold ``count`` records, stop it (SIGTERM's
    path), and return what was read, including anything written after (nothing may be)."""
    ingest = build_ingest(settings, registry)
    await ingest.start()
    stop = asyncio.Event()
    running = asyncio.create_task(ingest.run(stop))
    try:
        async with TopicReader(settings.kafka.bootstrap_servers, outputs) as reader:
            await reader.until(lambda r: sum(map(len, r.records.values())) >= count, 60)
            stop.set()
            await running
            await reader.poll()  # nothing more may arrive
    finally:
        stop.set()
        await ingest.stop()
    return reader


async def test_mixed_events_end_exactly_where_expected(sandbox: Sandbox) -> None:
    tag = uuid.uuid4().hex[:8]
    data = on_sandbox(sandbox, tag)
    outputs = await create_topics(sandbox, data)
    settings = Settings(**data)
    records, expected = mixed_events(500)
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)

    registry = CollectorRegistry()
    reader = await ingest_until(settings, registry, outputs, len(records))
    assert gc.isenabled()  # ingest pauses the collector only within a batch

    accepted = reader.values(f"out-{tag}")
    requests = reader.values(f"rr-{tag}")
    dead = reader.values(f"dlq-{tag}")
    assert len(accepted) + len(requests) + len(dead) == len(records)

    assert {e["event_id"] for e in accepted if not e["event_id_derived"]} == expected["accepted"]
    derived = [e for e in accepted if e["event_id_derived"]]
    assert {e["key"] for e in derived} == expected["accepted_no_id_keys"]
    for envelope in derived:
        source = envelope["source"]
        assert envelope["event_id"] == f"{source['topic']}-{source['partition']}-{source['offset']}"
    for record, envelope in zip(reader.records[f"out-{tag}"], accepted, strict=True):
        envelope_validator().validate(envelope)
        assert envelope["decision"] == "accepted"
        assert envelope["policy_version"] == "v1"
        assert record.key == envelope["key"].encode()  # keyed like the input
        assert envelope["event"]["confidence"] == envelope["prediction"]["confidence"]

    by_route: dict[str, set[str]] = {"general": set(), "experts": set()}
    for record, request in zip(reader.records[f"rr-{tag}"], requests, strict=True):
        by_route[request["route"]].add(request["event_id"])
        assert request["loop_name"] == loop_name(request["event_id"], "v1")
        assert record.key == request["loop_name"].encode()
        assert request["reason"]
    assert by_route == {"general": expected["general"], "experts": expected["experts"]}

    assert {e["key"]: (e["value"].encode(), e["reason_class"]) for e in dead} == {
        key: (raw, reason) for key, (raw, reason) in expected["dead"].items()
    }

    def sample(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, labels)
        return value or 0.0

    assert sample("stream_router_ingest_consumed_total", topic=f"in-{tag}") == len(records)
    assert sample("stream_router_ingest_review_requested_total", route="general",
                  policy="policies.routes.1.policy") == len(expected["general"])  # fmt: skip
    assert sample("stream_router_ingest_dead_lettered_total", reason_class="not_json") > 0
    shadow = sample(
        "stream_router_ingest_shadow_hits_total", route="audit", policy="policies.routes.2.policy"
    )
    assert 0 < shadow < len(accepted)

    # Every input record is committed (offsets start at 0, so the sum is the record count).
    committed = await committed_offsets(sandbox.broker.bootstrap_servers, data)
    assert sum(committed.values()) == len(records), committed


async def committed_offsets(bootstrap: str, data: dict[str, Any]) -> dict[int, int]:
    topic = data["ingest"]["input_topics"][0]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=data["ingest"]["group_id"])
    await consumer.start()
    try:
        return {
            p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(PARTITIONS)
        }
    finally:
        await consumer.stop()


async def test_killed_ingest_loses_nothing_after_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    data = on_sandbox(sandbox, tag)
    # Small batches, each committed before the next: slow enough to be killed mid-stream.
    data["ingest"]["batch_max_records"] = 10
    data["ingest"]["max_in_flight_batches"] = 0
    data["logging"] = {"level": "INFO"}
    outputs = await create_topics(sandbox, data)
    config = tmp_path / "ingest.yaml"
    config.write_text(yaml.safe_dump(data))
    count = 8000
    events = [
        json_record({"event_id": f"e{i}", "label": "cat", "confidence": (i % 100) / 100}, f"k{i}")
        for i in range(count)
    ]
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", events)
    expected = {f"e{i}" for i in range(count)}

    def seen(reader: TopicReader) -> set[str]:
        return {
            e["event_id"] for topic in (f"out-{tag}", f"rr-{tag}") for e in reader.values(topic)
        }

    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
        first = router(config, "ingest")
        first.start()
        try:
            await reader.until(lambda r: len(seen(r)) >= 400, 60)
        finally:
            first.kill()
        at_kill = len(seen(reader))
        assert at_kill < count, "the first process finished everything before the kill"

        second = router(config, "ingest")
        second.start()
        try:
            await second.wait_ready_async(60)  # it owns the partitions: SIGTERM is handled now
            await reader.until(lambda r: seen(r) == expected, 90)
        finally:
            code = await second.stop_async()
        assert code == 0, second.output_tail()
    assert reader.values(f"dlq-{tag}") == []
    total = len(reader.records[f"out-{tag}"]) + len(reader.records[f"rr-{tag}"])
    # At-least-once: records of batches in hand at the kill may appear twice, never zero times.
    assert total >= count


async def test_two_instances_share_the_partitions(sandbox: Sandbox) -> None:
    tag = uuid.uuid4().hex[:8]
    data = on_sandbox(sandbox, tag)
    data["ingest"]["batch_max_records"] = 50
    outputs = await create_topics(sandbox, data)
    settings = Settings(**data)
    count = 1200
    events = [
        json_record({"event_id": f"e{i}", "label": "cat", "confidence": (i % 10) / 10}, f"k{i}")
        for i in range(count)
    ]
    instances = [build_ingest(settings, CollectorRegistry()) for _ in range(2)]
    await asyncio.gather(*(instance.start() for instance in instances))
    stop = asyncio.Event()
    runs = [asyncio.create_task(instance.run(stop)) for instance in instances]
    try:
        # Both members in the group, each owning partitions, before any event is produced.
        await asyncio.wait_for(
            asyncio.gather(*(instance.assigned.wait() for instance in instances)), 60
        )
        owned = [instance.consumer.assignment() for instance in instances]
        assert owned[0]
        assert owned[1]
        assert not owned[0] & owned[1]
        assert len(owned[0] | owned[1]) == PARTITIONS
        await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", events)
        async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
            await reader.until(
                lambda r: len(r.records[f"out-{tag}"]) + len(r.records[f"rr-{tag}"]) >= count, 60
            )
        stop.set()
        await asyncio.gather(*runs)
    finally:
        stop.set()
        for instance in instances:
            await instance.stop()
    ids = [e["event_id"] for t in (f"out-{tag}", f"rr-{tag}") for e in reader.values(t)]
    assert sorted(ids) == sorted(f"e{i}" for i in range(count))  # each once: no rebalance mid-run
    handled = [
        instance.metrics.registry.get_sample_value(
            "stream_router_ingest_consumed_total", {"topic": f"in-{tag}"}
        )
        or 0
        for instance in instances
    ]
    assert all(part > 0 for part in handled), handled
    assert sum(handled) == count


async def test_records_a_broker_would_refuse_or_that_crashed_encoding_end_once(
    sandbox: Sandbox,
) -> None:
    """Over the wire: each of these crashed ingest or was refused by a real broker before."""
    tag = uuid.uuid4().hex[:8]
    data = on_sandbox(sandbox, tag)
    data["ingest"]["mapping"] = {"classes": ["cat", "dog"]}
    data["policies"]["routes"] = []  # every prediction is accepted
    outputs = await create_topics(sandbox, data)
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    huge_label = "x" * 600_000  # in the event and the prediction: a 1.2 MB envelope
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"tombstone", None),
        (b"binary", bytes(range(256)) * 3516),  # 900,096 bytes: 1.2 MB as base64
        (b"deep", b'{"label": "cat", "confidence": 0.9, "deep": %s}' % deep),
        (b"cow", b'{"label": "cat", "confidence": 0.9, "scores": {"cat": 0.9, "cow": 0.1}}'),
        json_record({"event_id": "big", "label": huge_label, "confidence": 0.9}, "huge-label"),
        json_record({"event_id": "ok", "label": "cat", "confidence": 0.9}, "ok"),
    ]
    for key, value in records:  # one at a time: several would exceed a produce request
        await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", [(key, value)])

    registry = CollectorRegistry()
    reader = await ingest_until(Settings(**data), registry, outputs, 5)

    assert [e["event_id"] for e in reader.values(f"out-{tag}")] == ["ok"]
    assert reader.values(f"rr-{tag}") == []
    dead = {letter["key"]: letter for letter in reader.values(f"dlq-{tag}")}
    assert {key: letter["reason_class"] for key, letter in dead.items()} == {
        "binary": "not_json",
        "deep": "unencodable",
        "cow": "bad_value",
        "huge-label": "too_large",
    }
    for record in reader.records[f"dlq-{tag}"]:
        assert len(record.key or b"") + len(record.value) <= 1_000_000
        dead_letter_validator().validate(json.loads(record.value))
    assert (dead["binary"]["value"], dead["binary"]["value_bytes"]) == (None, 900_096)
    assert dead["binary"]["value_omitted"]
    assert dead["huge-label"]["value"] == records[4][1].decode()  # 600 KB: it fits
    sample = registry.get_sample_value
    assert sample("stream_router_ingest_tombstones_skipped_total", {"topic": f"in-{tag}"}) == 1
    committed = await committed_offsets(sandbox.broker.bootstrap_servers, data)
    assert sum(committed.values()) == len(records), committed
