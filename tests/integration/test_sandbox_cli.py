"""``stream-router sandbox up`` / ``sandbox env`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

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
            "STREAM_ROUTER_REVIEW__BACKEND__EVENT_QUEUE_URL",
            "STREAM_ROUTER_REVIEW__BACKEND__OUTPUT_QUEUE_URL",
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

        # One sandbox per state file: a second one refuses and names the first.
        second = subprocess.run(
            cli("sandbox", "up"), env=env, capture_output=True, text=True, check=False, timeout=60
        )
        assert second.returncode == 1, second.stderr
        assert f"a sandbox is already running (pid {up.pid}" in second.stderr
        assert json.loads(info_file.read_text())["pid"] == up.pid

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
