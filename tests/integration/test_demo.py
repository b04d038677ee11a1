"""``stream-router demo`` end to end, as a user runs it: its own sandbox, router and producer.

Short and slow-paced runs; the summary JSON must add up, the "where to look" commands must work
while ``--keep-running`` holds everything up, and a run that cannot drain must fail loudly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_router.demo.settings import DemoSettings
from stream_router.sandbox.process import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

DEMO = [sys.executable, "-m", "stream_router.cli", "demo", "--plain"]
OUTCOMES = ("accepted", "reviewed", "unreviewed", "dead-lettered")


def check_adds_up(summary: dict[str, Any], produced: int) -> None:
    counts = summary["counts"]
    assert summary["produced"] == produced
    assert sum(counts[o] for o in OUTCOMES) == produced
    assert summary["missing"] == []
    assert summary["conflicting"] == []
    assert summary["ok"] is True
    assert counts["dead-lettered"] == 3  # the malformed ones
    assert counts["accepted"] > 0
    assert counts["reviewed"] > 0
    corrections = summary["corrections"]
    assert corrections["reviewed"] == counts["reviewed"]
    assert corrections["corrected_right"] <= corrections["corrected"] <= corrections["reviewed"]
    latency = summary["latency_s"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def test_demo_keeps_running_and_the_commands_it_prints_work(
    tmp_path: Path, broker_kind: str
) -> None:
    summary_path = tmp_path / "summary.json"
    demo = ManagedProcess(
        "demo",
        [
            *DEMO,
            *("--duration", "10", "--rate", "5", "--keep-running"),
            *("--summary-json", str(summary_path), "--state-dir", str(tmp_path / "work")),
        ],
        ready_pattern="Ctrl-C stops everything",
        env={"STREAM_ROUTER_SANDBOX_BROKER": broker_kind},
        log_path=tmp_path / "demo.log",
        stop_timeout_s=90,
    )
    demo.start()
    try:
        demo.wait_ready(240)
        output = (tmp_path / "demo.log").read_text()
        summary = json.loads(summary_path.read_text())
        check_adds_up(summary, produced=50)
        assert "OK: all 50 events reached exactly one outcome" in output
        assert "in_review=" in output  # progress lines were printed
        where = summary["where"]

        with urllib.request.urlopen(where["metrics_url"], timeout=5) as response:  # noqa: S310
            metrics = response.read().decode()
        assert "stream_router_ingest_consumed_total" in metrics
        assert "stream_router_review_loops_in_flight" in metrics
        assert f"readiness          {where['readiness_url']}" in output
        with urllib.request.urlopen(where["readiness_url"], timeout=5) as response:  # noqa: S310
            assert json.loads(response.read()) == {"status": "ready"}

        argv = shlex.split(where["consume_reviewed"])
        assert argv[0].endswith("stream-router")
        tail = subprocess.run(
            [sys.executable, "-m", "stream_router.cli", *argv[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        records = [json.loads(line) for line in tail.stdout.splitlines()]
        assert len(records) == summary["counts"]["reviewed"]
        assert {r["decision"] for r in records} == {"reviewed"}
    finally:
        code = demo.stop()
    assert code == 0, demo.output_tail()


def test_a_demo_that_cannot_drain_exits_non_zero_and_says_why(
    tmp_path: Path, broker_kind: str
) -> None:
    settings = DemoSettings()
    data = settings.model_dump(mode="json")
    for flow in data["sandbox"]["flow_definitions"]:  # nobody picks a task up in time
        flow["reviewers"]["pickup"] = {"distribution": "fixed", "median_s": 300}
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(data))
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            *DEMO,
            *("--config", str(config), "--duration", "3", "--rate", "5"),
            *("--drain-timeout", "3", "--summary-json", str(summary_path)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={
            **os.environ,
            "TMPDIR": str(tmp_path),  # where the kept work directory goes
            "STREAM_ROUTER_SANDBOX_BROKER": broker_kind,
        },
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "drain timeout" in result.stdout
    assert "FAILED:" in result.stdout
    assert "events have no outcome" in result.stdout
    kept = re.search(r"kept the work directory \(router log, configs\): (\S+)", result.stdout)
    assert kept, result.stdout
    assert Path(kept.group(1)).parent == tmp_path
    assert "assigned" in (Path(kept.group(1)) / "router.log").read_text()
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is False
    assert summary["missing"]
    assert summary["produced"] == 15
    assert sum(summary["counts"].values()) + len(summary["missing"]) == 15


@pytest.mark.label_studio
def test_the_demo_runs_on_label_studio(tmp_path: Path, broker_kind: str) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            *DEMO,
            *("--backend", "label-studio", "--duration", "10", "--rate", "5"),
            *("--summary-json", str(summary_path), "--state-dir", str(tmp_path / "work")),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={**os.environ, "STREAM_ROUTER_SANDBOX_BROKER": broker_kind},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Label Studio with simulated annotators" in result.stdout
    assert "OK: all 50 events reached exactly one outcome" in result.stdout
    check_adds_up(json.loads(summary_path.read_text()), produced=50)
    config = yaml.safe_load((tmp_path / "work" / "router.yaml").read_text())
    assert config["review"]["backend"]["name"] == "label-studio"
