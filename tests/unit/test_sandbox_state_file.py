"""One sandbox per state file: a second ``sandbox up`` refuses and names the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_router.cli import _claim_info_file, _release_info_file, _sandbox_problem, main


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_sandbox_keeps_its_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    holder = os.getppid()  # alive for as long as this test runs
    path.write_text(json.dumps({"pid": holder, "bootstrap_servers": "127.0.0.1:40001"}))
    refusal = _claim_info_file(path)
    assert refusal is not None
    assert f"a sandbox is already running (pid {holder}, Kafka at 127.0.0.1:40001" in refusal
    assert "STREAM_ROUTER_SANDBOX_FILE=" in refusal
    assert json.loads(path.read_text())["pid"] == holder  # untouched
    _release_info_file(path)  # not ours: stays
    assert path.exists()


@pytest.mark.parametrize("leftover", ["dead", "garbage"])
def test_a_leftover_file_is_taken_over(tmp_path: Path, leftover: str) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps({"pid": dead_pid()}) if leftover == "dead" else "{half")
    assert _claim_info_file(path) is None
    held = json.loads(path.read_text())
    assert held == {"pid": os.getpid(), "starting": True}
    assert path.stat().st_mode & 0o777 == 0o600
    assert "still starting" in (_sandbox_problem(path, held) or "")
    _release_info_file(path)
    assert not path.exists()


def test_sandbox_env_says_a_sandbox_is_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sandbox.json"
    monkeypatch.setenv("STREAM_ROUTER_SANDBOX_FILE", str(path))
    assert _claim_info_file(path) is None
    assert main(["sandbox", "env"]) == 1
    assert f"the sandbox (pid {os.getpid()}) is still starting" in capsys.readouterr().err
    _release_info_file(path)
    assert main(["sandbox", "env"]) == 1
    assert "no sandbox is running" in capsys.readouterr().err
