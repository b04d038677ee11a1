"""``stream-router policies backtest --topic``: the history read over the wire from the output
topic gives the same report as the same records read from a file."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream_router.demo.history import write_history
from stream_router.records import publish
from stream_router.sandbox.stack import Sandbox, SandboxInfo

pytestmark = [pytest.mark.integration]


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stream_router.cli", *args],
        capture_output=True, timeout=300, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def _labels(path: Path) -> list[dict[str, Any]]:
    labels: list[dict[str, Any]] = json.loads(path.read_text())["labels"]
    return labels


def _same(a: Any, b: Any) -> bool:
    """Equal, numbers to 1e-9 relative (sums of floats in another order differ in last bits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and math.isclose(a, b, rel_tol=1e-9)
        )
    return bool(a == b)


@pytest.mark.tansu
async def test_topic_and_file_give_the_same_report(
    sandbox: Sandbox, sandbox_info: SandboxInfo, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    await asyncio.to_thread(write_history, history, events=30_000, seed=5)
    topic = f"history-{uuid.uuid4().hex[:8]}"
    await sandbox.broker.create_topics([topic], partitions=3)
    options = {"bootstrap_servers": sandbox_info.bootstrap_servers}
    with history.open("rb") as lines:
        published = await publish(options, topic, lines, key_field="event_id")
    assert published.records == 30_000

    from_file, from_topic = tmp_path / "file.json", tmp_path / "topic.json"
    done = await asyncio.to_thread(
        cli, "policies", "backtest", "--input", str(history), "--report", str(from_file)
    )
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(
        cli,
        *("policies", "backtest", "--topic", topic),
        *("--bootstrap-servers", sandbox_info.bootstrap_servers, "--report", str(from_topic)),
    )
    assert done.returncode == 0, done.stderr
    assert f"read from {topic}: 30,000 of 30,000 (100%)" in done.stderr.decode()
    # The same statistics; sums of floats may differ in the last bits (another order).
    assert _same(_labels(from_topic), _labels(from_file))

    # --from an offset: each partition from there.
    done = await asyncio.to_thread(
        cli,
        *("policies", "backtest", "--topic", topic, "--from", "9000"),
        *("--bootstrap-servers", sandbox_info.bootstrap_servers),
    )
    assert done.returncode == 0, done.stderr
    read = 30_000 - 3 * 9000
    assert f"read from {topic}: {read:,} of {read:,} (100%)" in done.stderr.decode()


async def test_from_a_time_reads_from_there(
    sandbox: Sandbox, sandbox_info: SandboxInfo, tmp_path: Path
) -> None:
    """Apache Kafka only: Tansu's offset lookup by time is not to be relied on (broker notes)."""
    history = tmp_path / "history.jsonl"
    await asyncio.to_thread(write_history, history, events=2_000, seed=5)
    topic = f"history-{uuid.uuid4().hex[:8]}"
    await sandbox.broker.create_topics([topic], partitions=2)
    with history.open("rb") as lines:
        await publish({"bootstrap_servers": sandbox_info.bootstrap_servers}, topic, lines)
    earlier = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))
    done = await asyncio.to_thread(
        cli,
        *("policies", "backtest", "--topic", topic, "--from", earlier),
        *("--bootstrap-servers", sandbox_info.bootstrap_servers),
    )
    assert done.returncode == 0, done.stderr
    assert f"read from {topic}: 2,000 of 2,000 (100%)" in done.stderr.decode()
    # A time after every record: nothing to learn from, said plainly.
    later = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
    done = await asyncio.to_thread(
        cli,
        *("policies", "backtest", "--topic", topic, "--from", later),
        *("--bootstrap-servers", sandbox_info.bootstrap_servers),
    )
    assert done.returncode == 1
    assert "holds no result envelope" in done.stderr.decode()
