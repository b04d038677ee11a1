"""The stream-router command's offline subcommands."""

from __future__ import annotations

import json
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


def test_policies_test_names_a_missing_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(REPO / "config" / "router.yaml")
    missing = tmp_path / "events.jsonl"
    assert main(["policies", "test", "--config", config, "--input", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"stream-router: policies test --input: cannot read {missing}: No such file or directory\n"
    )


def test_policies_test_lists_shadow_routes_without_python_reprs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, events = REPO / "config" / "router.yaml", REPO / "config" / "sample-events.jsonl"
    assert main(["policies", "test", "--config", str(config), "--input", str(events)]) == 0
    out = capsys.readouterr().out
    assert "dead-lettered: 2 (missing_field 1, not_json 1)" in out
    assert "{" not in out
    # config/router.yaml's entropy-trial route is shadow: listed even when it would review none
    assert "  entropy-trial/policies.routes.3.policy would review " in out


def test_tail_refuses_an_unknown_decision(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["tail", "predictions-routed", "--decision", "bogus"])
    assert exited.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["tail", "produce"])
def test_kafka_commands_say_where_the_broker_comes_from(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    assert main([command, "predictions"]) == 2
    err = capsys.readouterr().err
    assert "--bootstrap-servers HOST:PORT or --config FILE" in err
    assert 'eval "$(stream-router sandbox env)"' in err


def test_topics_create_counts_partitions_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    from stream_router.cli import _partitions  # noqa: PLC0415

    assert [_partitions(n) for n in (1, 4)] == ["1 partition", "4 partitions"]


@pytest.mark.parametrize("config", ["router.yaml", "router-label-studio.yaml"])
def test_the_example_configs_judge_a_scores_less_event_by_its_confidence(
    config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As their comments say: without class scores, confidence decides (margin's
    ``when_missing`` would otherwise send every such event to a paid review)."""
    from stream_router.backtest import backtest  # noqa: PLC0415
    from stream_router.settings import load_settings  # noqa: PLC0415

    if "label-studio" in config:
        monkeypatch.setenv("STREAM_ROUTER_REVIEW__BACKEND__API_TOKEN", "unused")
    settings = load_settings(REPO / "config" / config)
    event = {"event_id": "e1", "label": "cat", "confidence": 0.97, "model": "pets-v1",
             "model_version": "3"}  # fmt: skip
    report = backtest(settings, [json.dumps(event).encode()])
    assert (report.accepted, report.reviews) == (1, 0)
    unsure = backtest(settings, [json.dumps({**event, "confidence": 0.5}).encode()])
    assert unsure.by_route == {"general": 1}


def test_config_check_warns_when_reviewers_would_see_the_whole_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "whole.yaml"
    path.write_text(
        "policies: {routes: [{name: general, review_flow: f, policy: {type: sample, percent: 1}}]}"
        "\nreview: {projection: []}\n"
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# warning: review.projection is empty: every field of an event goes to its " in out
    assert "(routes general)" in out
    assert main(["config", "check", str(REPO / "config" / "router.yaml")]) == 0
    assert "# warning" not in capsys.readouterr().out
