"""Demo settings: config/demo.yaml, command-line overrides, the router config it generates."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_router.cli import main
from stream_router.demo.router import router_config, write_router_config
from stream_router.demo.settings import (
    DemoSettings,
    HistorySettings,
    LabelModel,
    load_demo_settings,
)
from stream_router.errors import ConfigError
from stream_router.sandbox.stack import SandboxInfo
from stream_router.topics import router_topics

REPO = Path(__file__).resolve().parents[2]


def test_config_demo_yaml_spells_out_the_defaults() -> None:
    assert load_demo_settings(REPO / "config" / "demo.yaml") == DemoSettings()


def test_overrides_apply_and_are_validated() -> None:
    settings = DemoSettings().with_overrides(duration_s=5, rate_per_s=None, drain_timeout_s=9)
    assert (settings.producer.duration_s, settings.producer.rate_per_s) == (5, 10)
    assert settings.drain_timeout_s == 9
    with pytest.raises(ConfigError, match="rate_per_s"):
        DemoSettings().with_overrides(rate_per_s=0)


def test_cli_refuses_a_bad_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rate", "-1"]) == 2
    assert "producer.rate_per_s" in capsys.readouterr().err


def test_bad_demo_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("producer: {model_accuracy: 2}\n")
    with pytest.raises(ConfigError, match=r"producer\.model_accuracy"):
        load_demo_settings(path)


def info() -> SandboxInfo:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/"
    return SandboxInfo(
        bootstrap_servers="127.0.0.1:1234",
        aws_endpoint_url="http://127.0.0.1:5",
        a2i_endpoint_url="http://127.0.0.1:6",
        region="us-east-1",
        output_bucket="b",
        output_prefix="a2i",
        event_queue_url="http://127.0.0.1:5/q/events",
        output_queue_url="http://127.0.0.1:5/q/output",
        flow_definition_arns={n: arn + n for n in ("demo-general", "demo-experts")},
        state_dir="unused",
    )


def test_router_config_joins_sandbox_and_demo_and_validates(tmp_path: Path) -> None:
    config = router_config(DemoSettings(), info(), metrics_port=4321, data_dir=tmp_path / "rd")
    settings = write_router_config(config, tmp_path / "router.yaml")
    assert settings.kafka.bootstrap_servers == "127.0.0.1:1234"
    assert settings.review.backend.model_dump() == {
        "name": "a2i",
        "content_classifiers": [],
        "event_queue_url": "http://127.0.0.1:5/q/events",
        "output_queue_url": "http://127.0.0.1:5/q/output",
        "wait_time_s": 1,  # the demo's own
    }
    assert settings.moved_keys() == []
    assert (settings.metrics.port, settings.metrics.host) == (4321, "127.0.0.1")
    assert settings.review.data_dir == tmp_path / "rd"
    assert settings.review.topic_partitions == DemoSettings().producer.topic_partitions
    flows = {route.name: route.review_flow for route in settings.policies.routes}
    assert flows["experts"].endswith("flow-definition/demo-experts")
    assert settings.review.escalation_flows["general"].endswith("flow-definition/demo-experts")
    assert "ground_truth" in settings.review.projection  # the simulated reviewers need it
    partitions = DemoSettings().producer.topic_partitions
    assert settings.topics.partitions == partitions  # every demo topic alike
    assert {spec.name: spec.partitions for spec in router_topics(settings) if spec.roles} == {
        "predictions": partitions,
        "predictions-routed": partitions,
        "predictions-dead-letter": partitions,
        "review-requests": partitions,
        "loop-events": partitions,
    }


def test_history_model_is_checked_and_the_audit_goes_to_the_panel() -> None:
    with pytest.raises(ValidationError, match="two or more labels"):
        HistorySettings.model_validate({"labels": {"cat": DemoSettings().history.labels["cat"]}})
    with pytest.raises(ValidationError, match="accuracy"):
        LabelModel.model_validate(
            {
                "share": 1,
                "accuracy": 1.5,
                "confidence_right": {"alpha": 2, "beta": 1},
                "confidence_wrong": {"alpha": 1, "beta": 1},
            }
        )
    # An audit must err less than the error it measures: three experts, the majority counts.
    routes = {r["name"]: r for r in DemoSettings().router["policies"]["routes"]}
    assert routes["audit"]["review_flow"] == "demo-experts"
    assert routes["audit"]["policy"] == {"type": "sample", "percent": 2, "salt": "demo"}
