"""Start-up failures of ``stream-router run``: one line naming the setting and the fix, exit 2,
no traceback, and nothing left unclosed (aiokafka reports an unclosed client on stderr).

Each test runs the command as the README shows it, in a child process, against a port this test
holds or a cluster that cannot serve the role.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_router.sandbox.process import free_port
from stream_router.sandbox.stack import Sandbox
from tests.integration import test_ingest, test_review_e2e

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 120  #: a failing start-up returns long before; this only bounds a hang


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (this test) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def run(role: str, data: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    """``stream-router run --role ROLE --config FILE``; its exit code and its stderr."""
    config = tmp_path / f"{role}-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(yaml.safe_dump(data))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream_router.cli", "run", "--role", role, "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(child.communicate(), RUN_TIMEOUT_S)
    assert child.returncode is not None
    return child.returncode, stderr.decode(errors="replace")


def unreachable_kafka() -> dict[str, Any]:
    """Nothing listens there; start-up gives up at once."""
    return {"bootstrap_servers": f"127.0.0.1:{free_port()}", "startup_wait_s": 0}


@pytest.mark.parametrize("role", ["ingest", "review", "all"])
async def test_a_taken_metrics_port_is_one_line_naming_the_setting(
    role: str, taken_port: int, tmp_path: Path
) -> None:
    data = {
        "kafka": unreachable_kafka(),  # never reached: the port is checked first
        "metrics": {"port": taken_port},
        "watchers": {"enabled": ["reconciler"]},
    }
    code, stderr = await run(role, data, tmp_path)
    assert code == 2, stderr
    assert stderr.splitlines() == [
        f"stream-router: metrics.port: another process listens on 127.0.0.1:{taken_port}; set "
        "STREAM_ROUTER_METRICS__PORT to a free port (0 picks any)"
    ]


async def test_a_taken_label_studio_webhook_port_is_one_line_naming_the_setting(
    sandbox: Sandbox, taken_port: int, tmp_path: Path
) -> None:
    """The review role binds the webhook endpoint before it talks to Label Studio."""
    tag = uuid.uuid4().hex[:8]
    await test_review_e2e.create_topics(sandbox, tag)
    data = test_review_e2e.config(test_review_e2e.Backend("a2i", sandbox.info()), tag, tmp_path)
    data["policies"]["routes"][0]["review_flow"] = "fast"
    data["review"].update(
        backend="label-studio",
        label_studio={
            "url": f"http://127.0.0.1:{free_port()}",  # never asked
            "api_token": "unused",
            "projects": {"fast": {"project": 1}},
            "webhook": {"port": taken_port},
        },
    )
    data["watchers"] = {"enabled": ["webhook", "reconciler"]}
    code, stderr = await run("review", data, tmp_path)
    assert code == 2, stderr
    assert stderr.splitlines()[-1] == (
        "stream-router: review.backend.webhook.port: another process listens on "
        f"127.0.0.1:{taken_port}; set STREAM_ROUTER_REVIEW__BACKEND__WEBHOOK__PORT to a "
        "free port (0 picks any)"
    )
    assert "Traceback" not in stderr, stderr
    assert "Unclosed" not in stderr, stderr


async def test_an_ingest_that_cannot_reach_kafka_closes_its_clients(tmp_path: Path) -> None:
    data = test_ingest.settings_data("unused", uuid.uuid4().hex[:8])
    data["kafka"].update(unreachable_kafka())
    data["metrics"] = {"port": 0}
    code, stderr = await run("ingest", data, tmp_path)
    assert code == 2, stderr
    assert stderr.splitlines()[-1].startswith("stream-router: cannot connect to Kafka at"), stderr
    assert "Unclosed" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


async def test_an_ingest_whose_input_topic_is_missing_closes_its_clients(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    data = test_ingest.on_sandbox(sandbox, tag)
    data["metrics"] = {"port": 0}
    await test_ingest.create_topics(sandbox, data)
    data["ingest"]["input_topics"] = [f"missing-{tag}"]
    code, stderr = await run("ingest", data, tmp_path)
    assert code == 2, stderr
    assert f"missing-{tag}" in stderr.splitlines()[-1], stderr
    assert "Unclosed" not in stderr, stderr
    assert "Traceback" not in stderr, stderr
