"""Health endpoints, dead tasks, SIGTERM drain and JSON logs of real router processes.

Each test runs ``stream-router run`` as a child process against the sandbox and talks to it
over HTTP and Kafka. The broker is paused with SIGSTOP (and always resumed) to make
"no partitions yet" and "progress stalled" real; a buggy policy plugin kills the ingest task.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_router.sandbox.process import ManagedProcess, free_port
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration import test_ingest, test_review_e2e
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router

pytestmark = pytest.mark.integration

CRASH_PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "crash_plugin"
Reply = tuple[int, Any]


@contextmanager
def paused(process: ManagedProcess) -> Iterator[None]:
    """SIGSTOP a sandbox server; SIGCONT it on the way out, whatever happens."""
    assert process.pid is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def get(http: aiohttp.ClientSession, url: str) -> Reply | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as reply:
            body = await reply.text()
            return reply.status, json.loads(body) if url.endswith("z") else body
    except (aiohttp.ClientError, TimeoutError):
        return None


async def poll(
    url: str, want: Callable[[Reply], bool], timeout_s: float, process: ManagedProcess
) -> Reply:
    """GET ``url`` until ``want(reply)``; fail with the last reply and the process's output."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Reply | None = None
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            assert process.running(), f"router exited; output:\n{process.output_tail()}"
            reply = await get(http, url)
            if reply is not None:
                last = reply
                if want(reply):
                    return reply
            await asyncio.sleep(0.1)  # polling interval, not synchronisation: the deadline is
    raise AssertionError(f"{url}: no wanted reply in {timeout_s} s; last {last}\n"
                         f"{process.output_tail()}")  # fmt: skip


def ingest_config(sandbox: Sandbox, tag: str, port: int, **ingest: Any) -> dict[str, Any]:
    data = test_ingest.on_sandbox(sandbox, tag)
    data["ingest"].update(stall_after_s=2, **ingest)
    data["metrics"] = {"enabled": True, "port": port}
    data["logging"] = {"level": "INFO"}
    return data


async def test_ingest_readiness_follows_partitions_and_progress(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    # Each batch committed before the next: the loop is waiting on the broker most of the time.
    data = ingest_config(sandbox, tag, port, batch_max_records=10, max_in_flight_batches=0)
    data["kafka"]["request_timeout_s"] = 60
    outputs = await test_ingest.create_topics(sandbox, data)
    config = tmp_path / "ingest.yaml"
    config.write_text(yaml.safe_dump(data))
    base = f"http://127.0.0.1:{port}"
    process = router(config, "ingest")
    try:
        with paused(sandbox.broker.process):  # no group can form: nothing is assigned
            process.start()
            assert (await poll(f"{base}/healthz", lambda r: True, 30, process)) == (
                200,
                {"status": "alive"},
            )
            status, body = await poll(f"{base}/readyz", lambda r: True, 5, process)
            assert status == 503
            assert body["problems"] == ["ingest: no input partitions assigned"]
        await poll(f"{base}/readyz", lambda r: r[0] == 200, 60, process)

        count = 20000
        records = [json_record({"event_id": f"e{i}", "label": "cat", "confidence": 0.95})
                   for i in range(count)]  # fmt: skip
        await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)
        async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
            await reader.until(lambda r: len(r.records[f"out-{tag}"]) >= 200, 60)
        with paused(sandbox.broker.process):  # a batch in hand waits for acknowledgements
            # The broker's silence may be reported a moment before the loop's stall; once both
            # hold, the loop's stall is said first.
            status, body = await poll(
                f"{base}/readyz",
                lambda r: r[0] == 503 and r[1]["problems"][0].startswith("ingest: no fetch "),
                30,
                process,
            )
            assert body["problems"][0].startswith("ingest: no fetch completed for"), body
            healthz = await poll(f"{base}/healthz", lambda r: True, 5, process)
            assert healthz[0] == 200  # the loop itself is alive
        await poll(f"{base}/readyz", lambda r: r[0] == 200, 60, process)

        _, metrics = await poll(f"{base}/metrics", lambda r: r[0] == 200, 5, process)
        for family in ("stream_router_ingest_consumed_total", "stream_router_ingest_batch_size",
                       "stream_router_ingest_consumer_lag"):  # fmt: skip
            assert f"\n{family}" in metrics, family
    finally:
        code = await process.stop_async()
    assert code == 0, process.output_tail()


def crash_config(sandbox: Sandbox, tag: str, tmp: Path, role: str) -> dict[str, Any]:
    info = sandbox.info()
    if role == "ingest":
        data = ingest_config(sandbox, tag, free_port())
    else:
        data = test_review_e2e.config(Backend("a2i", info), tag, tmp)
        data["metrics"] = {"enabled": True, "port": free_port()}
    data["policies"] = {
        "version": "crash",
        "routes": [
            {
                "name": "buggy",
                "review_flow": info.flow_definition_arns["fast"],
                "policy": {"type": "crash_on_label", "label": "boom"},
            }
        ],
    }
    return data


@pytest.mark.parametrize("role", ["ingest", "all"])
async def test_a_dead_ingest_task_takes_the_process_down(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, role: str
) -> None:
    """A plugin that raises on an event dead-letters that event and the process lives on (no
    record's content stops it); losing the output topic kills the ingest task, and the process
    exits 1 so the orchestrator restarts it."""
    tag = uuid.uuid4().hex[:8]
    data = crash_config(sandbox, tag, tmp_path, role)
    # Its batch waits for the deleted topic: ingest looks for its outputs after this long.
    data["kafka"]["request_timeout_s"] = 6
    if role == "ingest":
        outputs = await test_ingest.create_topics(sandbox, data)
    else:
        outputs = await test_review_e2e.create_topics(sandbox, tag)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {
        **sandbox_env,
        "PYTHONPATH": os.pathsep.join([str(CRASH_PLUGIN), *(p for p in sys.path if p)]),
    }
    bootstrap = sandbox.broker.bootstrap_servers
    process = router(config, role, env)
    process.start()
    try:
        await process.wait_ready_async(60)
        events = [json_record({"event_id": "fine", "label": "cat", "confidence": 0.9}),
                  json_record({"event_id": "bad", "label": "boom", "confidence": 0.9})]  # fmt: skip
        await produce(bootstrap, f"in-{tag}", events)
        async with TopicReader(bootstrap, outputs) as reader:
            await reader.until(
                lambda r: len(r.records[f"out-{tag}"]) + len(r.records[f"dlq-{tag}"]) >= 2, 60
            )
        (letter,) = reader.values(f"dlq-{tag}")
        assert letter["reason_class"] == "policy_error"
        assert "bug in policy" in letter["reason"]
        assert [e["event_id"] for e in reader.values(f"out-{tag}")] == ["fine"]
        assert process.running()

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([f"out-{tag}"])
        finally:
            await admin.close()
        await produce(bootstrap, f"in-{tag}", [json_record({"event_id": "late", "label": "cat",
                                                            "confidence": 0.9})])  # fmt: skip
        code = await wait_exit(process, 90)
    finally:
        await process.stop_async()
    assert code == 1, process.output_tail()
    log = config.with_suffix(f".{role}.log").read_text(encoding="utf-8")
    died = {"ingest": "background task ingest died", "all": "ingest died ("}
    assert died[role] in log, process.output_tail()


async def wait_exit(process: ManagedProcess, timeout_s: float) -> int | None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while process.running():
        assert asyncio.get_running_loop().time() < deadline, (
            f"{process.name} still running after {timeout_s} s:\n{process.output_tail()}"
        )
        await asyncio.sleep(0.1)  # polling a child's exit, bounded by the deadline
    return await process.stop_async()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {
            p: (await consumer.committed(TopicPartition(topic, p))) or 0
            for p in range(test_review_e2e.PARTITIONS)
        }
    finally:
        await consumer.stop()


async def test_sigterm_drains_the_embedded_ingest(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Under ``all``, SIGTERM mid-stream: what was produced is exactly what was committed."""
    tag = uuid.uuid4().hex[:8]
    info: SandboxInfo = sandbox.info()
    data = test_review_e2e.config(Backend("a2i", info), tag, tmp_path)
    data["ingest"].update(batch_max_records=10, max_in_flight_batches=0)
    outputs = await test_review_e2e.create_topics(sandbox, tag)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(data))
    count = 20000
    records = [json_record({"event_id": f"{tag}-{i}", "label": "cat", "confidence": 0.95})
               for i in range(count)]  # fmt: skip
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)
    process = router(config, "all", sandbox_env)
    process.start()
    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
        try:
            await process.wait_ready_async(60)
            await reader.until(lambda r: len(r.records[f"out-{tag}"]) >= 300, 60)
        finally:
            code = await process.stop_async()  # SIGTERM while events flow
        assert code == 0, process.output_tail()
        committed = await committed_offsets(
            sandbox.broker.bootstrap_servers, f"ingest-{tag}", f"in-{tag}"
        )
        total = sum(committed.values())
        assert 0 < total < count, (total, "the stream should be cut mid-way")
        await reader.until(lambda r: len(r.records[f"out-{tag}"]) >= total, 30)
        await reader.poll()  # nothing beyond the commit may have been produced
    produced: dict[int, list[int]] = {}
    for envelope in reader.values(f"out-{tag}"):
        source = envelope["source"]
        produced.setdefault(source["partition"], []).append(source["offset"])
    for partition in range(test_review_e2e.PARTITIONS):
        offsets = sorted(produced.get(partition, []))
        assert offsets == list(range(committed.get(partition, 0))), (
            f"partition {partition}: produced {len(offsets)} records, committed "
            f"{committed.get(partition, 0)}; a batch in hand was lost or left to replay"
        )
    log = config.with_suffix(".all.log").read_text(encoding="utf-8")  # the router's whole output
    assert "stopping: the batch in hand is finished and committed" in log  # not cancelled


@pytest.mark.parametrize("role", ["all", "review"])
async def test_faust_roles_serve_the_endpoints_from_start_up(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, role: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    data = test_review_e2e.config(Backend("a2i", sandbox.info()), tag, tmp_path)
    port = free_port()
    data["metrics"] = {"enabled": True, "port": port}
    await test_review_e2e.create_topics(sandbox, tag)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(data))
    base = f"http://127.0.0.1:{port}"
    process = router(config, role, sandbox_env)
    try:
        with paused(sandbox.broker.process):  # the worker cannot start: nothing is consumed
            process.start()
            assert (await poll(f"{base}/healthz", lambda r: True, 30, process))[0] == 200
            status, body = await poll(f"{base}/readyz", lambda r: True, 5, process)
            assert status == 503
            assert any(p.startswith("review: starting") for p in body["problems"]), body
            assert ("ingest: not started" in body["problems"]) == (role == "all"), body
        status, body = await poll(f"{base}/readyz", lambda r: r[0] == 200, 60, process)
        assert body == {"status": "ready"}
        _, metrics = await poll(f"{base}/metrics", lambda r: r[0] == 200, 5, process)
        families = ["stream_router_review_loops_in_flight", "stream_router_ingest_consumed"]
        for family in families if role == "all" else families[:1]:
            assert f"\n# TYPE {family}" in metrics, family
    finally:
        code = await process.stop_async()
    assert code == 0, process.output_tail()


async def test_json_logs_are_json_and_hold_no_secret_or_payload(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Role ``all`` with JSON logs, secrets in its settings, and reviews flowing through A2I."""
    tag = uuid.uuid4().hex[:8]
    info = sandbox.info()
    secrets = {
        "sasl": f"sasl-pw-{uuid.uuid4().hex}",
        "key": f"key-pw-{uuid.uuid4().hex}",
        "aws": f"aws-secret-{uuid.uuid4().hex}",
    }
    marker = f"PAYLOAD-{uuid.uuid4().hex}"
    data = test_review_e2e.config(Backend("a2i", info), tag, tmp_path)
    data["logging"] = {"level": "INFO", "format": "json"}
    data["kafka"]["sasl_password"] = secrets["sasl"]  # present in settings, unused on PLAINTEXT
    data["kafka"]["ssl_key_password"] = secrets["key"]
    data["aws"].update(access_key_id="sandbox", secret_access_key=secrets["aws"])  # used
    outputs = await test_review_e2e.create_topics(sandbox, tag)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(data))
    records = [
        json_record(
            {
                "event_id": f"{tag}-{i}",
                "label": "cat",
                "note": marker,
                "confidence": 0.5 if i % 2 else 0.95,
            },
            f"k{i}",
        )
        for i in range(10)
    ]
    records.append((b"k-bad", f"{{broken {marker}".encode()))  # a dead letter
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    argv = [sys.executable, "-m", "stream_router.cli", "run", "--role", "all",
            "--config", str(config)]  # fmt: skip
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        child = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=err, env={**os.environ, **sandbox_env}
        )
        try:
            async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
                await reader.until(
                    lambda r: sum(e["decision"] == "reviewed" for e in r.values(f"out-{tag}")) >= 5,
                    120,
                )
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(child.wait(), 60)
    assert code == 0, stderr_path.read_text(encoding="utf-8")[-3000:]
    lines = stderr_path.read_text(encoding="utf-8").splitlines()
    entries = []
    for number, text in enumerate(lines, 1):
        try:
            entries.append(json.loads(text))
        except json.JSONDecodeError:
            pytest.fail(f"stderr line {number} is not JSON: {text[:300]!r}")
    loggers = {entry["logger"].split(".")[0] for entry in entries}
    assert {"stream_router", "faust"} <= loggers, loggers  # the libraries' lines are JSON too
    assert any(e.get("message", "").startswith("assigned") for e in entries)
    everything = stderr_path.read_text(encoding="utf-8") + stdout_path.read_text(
        encoding="utf-8", errors="replace"
    )
    for name, secret in secrets.items():
        assert secret not in everything, f"the {name} secret is in the output"
    assert marker not in everything, "an event payload is in the output"
