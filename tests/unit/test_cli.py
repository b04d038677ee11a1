"""The stream-router command's offline subcommands."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_router.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_config_check_prints_the_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(REPO / "config" / "router.yaml")]) == 0
    out = capsys.readouterr().out
    assert "bootstrap_servers: 127.0.0.1:9092" in out
    assert "# valid: 4 routes, policy version 2026-11-1" in out


def test_config_check_refuses_a_bad_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "policies: {routes: [{name: r, review_flow: f, policy: {type: confidence, below: 7}}]}\n"
    )
    assert main(["config", "check", str(path)]) == 2
    assert "policies.routes.0.policy.below" in capsys.readouterr().err


def test_policies_test_reports_mix_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "policies",
            "test",
            "--config",
            str(REPO / "config" / "router.yaml"),
            "--input",
            str(REPO / "config" / "sample-events.jsonl"),
            "--price",
            "0.5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in out.splitlines() if ":" in line}
    assert lines["events"] == "events: 202"
    assert "dead-lettered: 2" in lines["dead-lettered"]
    reviews = int(lines["to review"].split()[2])
    assert f"{reviews} x $0.5000 = ${reviews * 0.5:,.2f}" in out
    assert "experts" in out
    assert "general" in out


def test_policies_list_shows_built_ins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("confidence", "margin", "entropy", "sample", "field", "required_fields"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
