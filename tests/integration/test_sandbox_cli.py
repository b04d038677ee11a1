"""``stream-router sandbox up`` / ``sandbox env`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from stream_router.sandbox.process import ManagedProcess, free_port
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.test_broker import wait_for_exit

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.tansu]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_router.cli", *args]


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(x) for x in text)
    return found


def test_sandbox_up_env_and_ctrl_c(tmp_path: Path, broker_kind: str) -> None:
    info_file = tmp_path / "sandbox.json"
    env = {
        **os.environ,
        "STREAM_ROUTER_SANDBOX_FILE": str(info_file),
        "STREAM_ROUTER_SANDBOX_BROKER": broker_kind,
    }
    up = subprocess.Popen(
        cli("sandbox", "up", "--topic", "predictions"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert up.stdout is not None
        printed: dict[str, str] = {}
        lines = []
        for line in up.stdout:
            lines.append(line)
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                printed[key] = value
            if "Ctrl-C stops" in line:
                break
        assert lines[0].startswith("# broker: "), lines
        assert {"kafka": "Apache Kafka", "tansu": "Tansu"}[broker_kind] in lines[0]
        assert lines[1].startswith("sandbox ready in"), lines
        for key in (
            "AWS_ENDPOINT_URL_SAGEMAKER_A2I_RUNTIME",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_SQS",
            "AWS_ENDPOINT_URL_EVENTBRIDGE",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS",
            "STREAM_ROUTER_WATCHERS__EVENT_QUEUE_URL",
            "STREAM_ROUTER_WATCHERS__OUTPUT_QUEUE_URL",
        ):
            assert printed.get(key), f"{key} not printed"
        assert any("flow-definition/sandbox-general" in line for line in lines)

        shown = subprocess.run(
            cli("sandbox", "env"), env=env, capture_output=True, text=True, check=True
        )
        exports = dict(
            line.removeprefix("export ").partition("=")[::2] for line in shown.stdout.splitlines()
        )
        assert exports == printed

        # A plain SDK client configured only by those variables reaches the emulator.
        sdk_env = {key: value for key, value in exports.items() if key.startswith("AWS_")}
        old = {key: os.environ.get(key) for key in sdk_env}
        os.environ.update(sdk_env)
        try:
            a2i = boto3.client("sagemaker-a2i-runtime")
            with pytest.raises(a2i.exceptions.ResourceNotFoundException):
                a2i.describe_human_loop(HumanLoopName="nobody")
            a2i.close()
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        children = children_of(up.pid)
        assert len(children) == 3  # moto, broker, emulator
        as_json = subprocess.run(
            cli("sandbox", "env", "--format", "json"),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        bootstrap = json.loads(as_json.stdout)["bootstrap_servers"]

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        for child in children:
            assert wait_for_exit(child, 10), f"child {child} still running"
        host, _, port = bootstrap.partition(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port))):
            pass
        assert not info_file.exists()
        gone = subprocess.run(
            cli("sandbox", "env"), env=env, capture_output=True, text=True, check=False
        )
        assert gone.returncode == 1
        assert "no sandbox is running" in gone.stderr
    finally:
        up.kill()
        up.wait()
        if up.stdout:
            up.stdout.close()


async def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, cli(*args), env=env, capture_output=True, text=True, check=True
    )


async def test_the_example_config_runs_both_roles_on_the_sandbox(
    tmp_path: Path, broker_kind: str
) -> None:
    """As the README shows: ``sandbox up``; ``eval "$(stream-router sandbox env)"``; ``topics
    create`` and both roles as separate processes on ``config/router.yaml``, each with its own
    metrics port. Every event reaches exactly one outcome."""
    info_file = tmp_path / "sandbox.json"
    base = {
        **os.environ,
        "STREAM_ROUTER_SANDBOX_FILE": str(info_file),
        "STREAM_ROUTER_SANDBOX_BROKER": broker_kind,
    }
    up = ManagedProcess(
        "sandbox-up", cli("sandbox", "up"), ready_pattern="Ctrl-C stops", env=base,
        log_path=tmp_path / "sandbox.log", stop_timeout_s=60,
    )  # fmt: skip
    up.start()
    roles: list[ManagedProcess] = []
    try:
        await up.wait_ready_async(180)
        shown = await run_cli(base, "sandbox", "env")
        exports = {
            key: shlex.split(value)[0]
            for key, _, value in (
                line.removeprefix("export ").partition("=") for line in shown.stdout.splitlines()
            )
        }
        env = {**base, **exports}
        config = str(REPO / "config" / "router.yaml")
        created = await run_cli(env, "topics", "create", "--config", config)
        assert "created  stream-router-review-requests" in created.stdout, created.stdout

        for role, port in (("ingest", free_port()), ("review", free_port())):
            process = ManagedProcess(
                f"router-{role}",
                cli("run", "--role", role, "--config", config),
                ready_pattern=r"assigned \d+ partitions" if role == "ingest" else "Worker ready",
                env={
                    **env,
                    "STREAM_ROUTER_METRICS__PORT": str(port),
                    "STREAM_ROUTER_REVIEW__DATA_DIR": str(tmp_path / "review-data"),
                },
                log_path=tmp_path / f"{role}.log",
                stop_timeout_s=60,
            )
            process.start()
            roles.append(process)
        for process in roles:
            await process.wait_ready_async(120)

        bootstrap = exports["STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS"]
        ids = [f"readme-{i}" for i in range(12)]
        records = [
            json_record(
                {"event_id": event_id, "label": "cat", "model": "clf", "model_version": "3",
                 "confidence": 0.99 if i % 2 else 0.4, "scores": {"cat": 0.99, "dog": 0.01}},
                event_id,
            )
            for i, event_id in enumerate(ids)
        ]  # fmt: skip
        await produce(bootstrap, "predictions", records)
        topics = {"predictions-routed": 4, "predictions-dead-letter": 4}
        async with TopicReader(bootstrap, topics) as reader:
            await reader.until(lambda r: len(r.records["predictions-routed"]) >= len(ids), 120)
            await reader.poll()
        results = reader.values("predictions-routed")
        assert sorted(e["event_id"] for e in results) == sorted(ids)
        assert {e["decision"] for e in results} == {"accepted", "reviewed"}
        for process in roles:
            assert process.stop() == 0, process.output_tail()
    finally:
        for process in roles:
            process.stop()
        up.stop()
