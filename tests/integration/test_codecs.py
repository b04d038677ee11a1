"""Compressed record batches both ways, with clients the project did not write.

confluent-kafka (librdkafka) produces events with each codec, keyed and unkeyed, with headers;
ingest routes every one to exactly one outcome. The router's own output, compressed as
``kafka.compression_type`` says, is read back by Debian's kcat.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from stream_router.sandbox.kafka import KafkaBroker
from stream_router.sandbox.stack import Sandbox
from stream_router.settings import Settings
from tests.integration.test_ingest import create_topics, ingest_until, on_sandbox

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 60


def produce_with_librdkafka(bootstrap: str, topic: str, codec: str, tag: str) -> list[str]:
    """Events compressed with ``codec``; every third unkeyed; all with headers. Returns ids."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "linger.ms": 20,  # several records per batch, so the batch really is compressed
            "enable.idempotence": True,
        }
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    ids = []
    for i in range(PER_CODEC):
        event_id = f"{tag}-{codec}-{i}"
        ids.append(event_id)
        confidence = 0.95 if i % 2 else 0.5  # half accepted, half sent to review
        value = json.dumps({"event_id": event_id, "label": "cat", "confidence": confidence})
        producer.produce(
            topic,
            value=value.encode(),
            key=None if i % 3 == 0 else event_id.encode(),
            headers=[("trace-id", f"t-{i}".encode()), ("codec", codec.encode())],
            on_delivery=delivered,
        )
    assert producer.flush(30) == 0
    assert failures == []
    return ids


@pytest.mark.parametrize("output_codec", ["none", "zstd", "lz4"])
async def test_every_codec_in_every_event_out_once_and_kcat_reads_the_output(
    sandbox: Sandbox, broker_kind: str, output_codec: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    bootstrap = sandbox.broker.bootstrap_servers
    data = on_sandbox(sandbox, tag)
    data["kafka"]["compression_type"] = output_codec
    outputs = await create_topics(sandbox, data)
    ids: list[str] = []
    for codec in CODECS:
        ids += await asyncio.to_thread(produce_with_librdkafka, bootstrap, f"in-{tag}", codec, tag)

    reader = await ingest_until(Settings(**data), CollectorRegistry(), outputs, len(ids))

    accepted = reader.values(f"out-{tag}")
    requests = reader.values(f"rr-{tag}")
    assert reader.values(f"dlq-{tag}") == []
    outcomes = [e["event_id"] for e in accepted] + [r["event_id"] for r in requests]
    assert sorted(outcomes) == sorted(ids)  # each event exactly once
    assert len(accepted) == len(ids) // 2

    if broker_kind == "tansu":
        return  # Debian's kcat (librdkafka 2.0.2) cannot handshake with Tansu
    assert isinstance(sandbox.broker, KafkaBroker)
    # What the broker stored: every input codec, and the router's output in its own codec.
    stored_in = await asyncio.to_thread(sandbox.broker.batch_codecs, f"in-{tag}")
    assert {codec.lower() for codec in stored_in} == set(CODECS)
    stored_out = await asyncio.to_thread(sandbox.broker.batch_codecs, f"out-{tag}")
    assert stored_out
    assert {codec.lower() for codec in stored_out} == {output_codec}
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is missing: scripts/test installs the Debian package"
    read = await asyncio.to_thread(
        subprocess.run,
        [kcat, "-C", "-b", bootstrap, "-t", f"out-{tag}", "-o", "beginning", "-e", "-J", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    messages = [json.loads(line) for line in read.stdout.splitlines() if line.strip()]
    envelopes = [json.loads(m["payload"]) for m in messages]
    assert sorted(e["event_id"] for e in envelopes) == sorted(e["event_id"] for e in accepted)
