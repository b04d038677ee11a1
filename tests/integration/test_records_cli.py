"""``stream-router produce`` and ``tail`` over the wire, as a user calls them."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stream_router.records import publish, tail
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader

pytestmark = [pytest.mark.integration, pytest.mark.tansu]


def cli(*args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stream_router.cli", *args],
        input=stdin, capture_output=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip


async def test_produce_sends_each_line_as_it_is(
    sandbox: Sandbox, sandbox_info: SandboxInfo, tmp_path: Path
) -> None:
    topic = f"produce-{uuid.uuid4().hex[:8]}"
    await sandbox.broker.create_topics([topic], partitions=2)
    lines = [
        b'{"event_id": "e1", "label": "cat", "confidence": 0.9}',
        b'{"event_id": 7,   "label": "dog"}',  # spacing kept; a number id becomes the key "7"
        b"",  # blank: skipped
        b"{not json",  # sent as it is, without a key
        b'{"label": "no id"}',
    ]
    done = await asyncio.to_thread(
        cli,
        *("produce", topic, "--key-field", "event_id"),
        stdin=b"\n".join(lines) + b"\r\n",
        STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS=sandbox_info.bootstrap_servers,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode() == (
        f"produced 4 records to {topic} (2 partitions) on {sandbox_info.bootstrap_servers}\n"
    )
    async with TopicReader(sandbox_info.bootstrap_servers, {topic: 2}) as reader:
        await reader.until(lambda r: len(r.records[topic]) >= 4, 30)
    got = {record.value: record.key for record in reader.records[topic]}
    assert got == {lines[0]: b"e1", lines[1]: b"7", lines[3]: None, lines[4]: None}


async def test_produce_and_tail_name_a_missing_topic(sandbox_info: SandboxInfo) -> None:
    for command in ("produce", "tail"):
        done = await asyncio.to_thread(
            cli, command, "no-such-topic", "--bootstrap-servers", sandbox_info.bootstrap_servers
        )
        assert done.returncode == 1
        err = done.stderr.decode()
        assert err.startswith(f"stream-router {command}: topic 'no-such-topic' does not exist")
        assert "stream-router topics create" in err
        assert "Traceback" not in err


async def test_tail_keeps_one_decision(sandbox: Sandbox, sandbox_info: SandboxInfo) -> None:
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    await sandbox.broker.create_topics([topic], partitions=1)
    envelopes = [
        {"event_id": "a", "decision": "accepted"},
        {"event_id": "r", "decision": "reviewed"},
        {"event_id": "x"},
    ]
    options = {"bootstrap_servers": sandbox_info.bootstrap_servers}
    published = await publish(options, topic, [json.dumps(e).encode() for e in envelopes])
    assert published.records == 3
    out = io.StringIO()
    assert await tail(options, topic, decision="reviewed", idle_s=1.0, out=out) == 1
    assert [json.loads(line)["event_id"] for line in out.getvalue().splitlines()] == ["r"]


async def test_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    from stream_router.sandbox.process import free_port  # noqa: PLC0415

    address = f"127.0.0.1:{free_port()}"
    done = await asyncio.to_thread(
        cli, "produce", "predictions", "--bootstrap-servers", address, stdin=b"{}\n"
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.startswith(f"stream-router produce: cannot reach Kafka at {address}"), err
    assert "Traceback" not in err
