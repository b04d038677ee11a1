"""Router settings: YAML plus environment, unknown keys refused by path, secrets masked."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stream_router.errors import ConfigError
from stream_router.kafka_clients import client_options, consumer_options
from stream_router.settings import KafkaSettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    settings = load_settings(REPO / "config" / "router.yaml")
    assert [route.name for route in settings.policies.routes] == [
        "experts",
        "general",
        "audit",
        "entropy-trial",
    ]


def test_no_file_gives_defaults() -> None:
    settings = load_settings(None)
    assert settings.ingest.input_topics == ["predictions"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "kafka: {bootstrap_servers: 'file:9092'}\ningest: {group_id: g}\n")
    monkeypatch.setenv("STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.ingest.group_id == "g"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kafka: {bootstrap_serverz: x}",
            "kafka.bootstrap_serverz: unknown setting; did you mean kafka.bootstrap_servers?",
        ),
        (
            "ingest: {mapping: {lable: x}}",
            "ingest.mapping.lable: unknown setting; did you mean ingest.mapping.label?",
        ),
        (
            "policies: {routes: [{name: r, review_flow: f, policy: {type: sample}, shadw: true}]}",
            "policies.routes.0.shadw: unknown setting; did you mean policies.routes.0.shadow?",
        ),
        ("review: {label_studio: {projects: {g: {projct: p}}}}", "did you mean review.label"),
        ("nonsense: 1", "nonsense: unknown setting"),
        ("ingest: {batch_max_records: 0}", "ingest.batch_max_records"),
        ("policies: {routes: [{name: Bad Name, review_flow: x, policy: {}}]}", "routes.0.name"),
        ("kafka: {security_protocol: SASL_SSL}", "sasl_mechanism, sasl_username, sasl_password"),
        ("kafka: {session_timeout_s: 3, heartbeat_interval_s: 2}", "a third of"),
        ("- a list", "top level must be a mapping"),
        ("kafka: [unclosed", "not valid YAML"),
    ],
)
def test_bad_configuration_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert expected in str(caught.value)


def test_an_unknown_variable_is_named_with_a_suggestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_ROUTER_INGEST__BATCH_MAX_RECORD", "5")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value).splitlines()[1] == (
        "  ingest.batch_max_record: unknown setting; did you mean ingest.batch_max_records? "
        "(from the environment variable STREAM_ROUTER_INGEST__BATCH_MAX_RECORD)"
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "STREAM_ROUTER_INGEST__INPUT_TOPICS",
            "predictions",
            "STREAM_ROUTER_INGEST__INPUT_TOPICS: ingest.input_topics is a list, so the "
            "environment variable takes JSON, for example "
            """STREAM_ROUTER_INGEST__INPUT_TOPICS='["predictions"]'""",
        ),
        (
            "STREAM_ROUTER_INGEST__INPUT_TOPICS",
            "a, b",
            """STREAM_ROUTER_INGEST__INPUT_TOPICS='["a", "b"]'""",
        ),
        ("STREAM_ROUTER_REVIEW__BUDGETS", "general", "review.budgets is a mapping"),
        (
            "STREAM_ROUTER_WATCHERS__ENABLED",
            "reconciler",
            "it takes JSON, for example STREAM_ROUTER_WATCHERS__ENABLED='[\"reconciler\"]'",
        ),
    ],
)
def test_a_plain_string_for_a_list_names_the_variable_and_its_json(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert expected in str(caught.value)
    assert len(str(caught.value).splitlines()) <= 2  # the problem, on one line


def test_secrets_are_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, "
        "sasl_username: router, sasl_password: hunter2}\n"
        "aws: {secret_access_key: s3cr3t}\n",
    )
    settings = load_settings(path)
    shown = str(settings.masked()) + repr(settings)
    assert "hunter2" not in shown
    assert "s3cr3t" not in shown
    assert settings.masked()["kafka"]["sasl_password"] == "**********"


def test_sasl_options_reach_the_client() -> None:
    kafka = KafkaSettings.model_validate(
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "router",
            "sasl_password": "pw",
            "session_timeout_s": 6,
            "heartbeat_interval_s": 1,
        }
    )
    options = consumer_options(kafka)
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "router"
    assert options["sasl_plain_password"] == "pw"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["session_timeout_ms"] == 6000
    assert options["heartbeat_interval_ms"] == 1000


def test_plaintext_has_no_security_options() -> None:
    options = client_options(KafkaSettings())
    assert "ssl_context" not in options
    assert "sasl_mechanism" not in options


def test_kafka_compression_and_record_limit() -> None:
    assert KafkaSettings().compression() is None
    assert KafkaSettings(compression_type="zstd").compression() == "zstd"
    assert KafkaSettings().max_record_bytes == 1_000_000  # under Kafka's 1,048,588
    with pytest.raises(ValueError, match="compression_type"):
        KafkaSettings(compression_type="brotli")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_record_bytes"):
        KafkaSettings(max_record_bytes=1000)  # too small for a dead letter's own fields


def test_tombstones_are_skipped_unless_dead_lettered(tmp_path: Path) -> None:
    assert load_settings(None).ingest.tombstones == "skip"
    path = write(tmp_path, "ingest: {tombstones: dead_letter}\n")
    assert load_settings(path).ingest.tombstones == "dead_letter"
    with pytest.raises(ConfigError, match=r"ingest\.tombstones"):
        load_settings(write(tmp_path, "ingest: {tombstones: drop}\n"))


def test_a_password_inside_a_url_is_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "review:\n  backend: label-studio\n  label_studio:\n"
        "    url: http://admin:s3cret@127.0.0.1:8080/ls\n    api_token: t0ken\n"
        "    projects: {}\n",
    )
    shown = str(load_settings(path).masked())
    assert "s3cret" not in shown
    assert "http://admin:**********@127.0.0.1:8080/ls" in shown
    assert "t0ken" not in shown


def test_a_yaml_error_does_not_echo_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  sasl_password: [hunter2\nreview: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "hunter2" not in str(caught.value)
    assert "line 3, column 7" in str(caught.value)


def test_aws_endpoints_never_show_the_secret_key() -> None:
    from stream_router.aws.clients import AwsEndpoints  # noqa: PLC0415

    endpoints = AwsEndpoints("us-east-1", access_key_id="AKIDEXAMPLE", secret_access_key="wJalr")
    assert "wJalr" not in repr(endpoints)
    assert "AKIDEXAMPLE" not in repr(endpoints)


@pytest.mark.parametrize(
    ("review", "message"),
    [
        (
            {"escalate_below_agreement": {"nosuch": 0.6}},
            "review.escalate_below_agreement.nosuch: no route",
        ),
        (
            {"escalate_below_agreement": {"low": 1.5}},
            "review.escalate_below_agreement.low: 1.5 is not an agreement",
        ),
        (
            {"escalate_below_agreement": {"low": 0.6}},
            "the route has no review.escalation_flows.low",
        ),
    ],
)
def test_escalate_below_agreement_is_checked(review: dict[str, Any], message: str) -> None:
    data = {
        "policies": {
            "routes": [
                {"name": "low", "review_flow": "fd", "policy": {"type": "confidence", "below": 0.5}}
            ]
        },
        "review": review,
    }
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings.model_validate(data)
