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
from stream_router.labelstudio.settings import LabelStudioSettings
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
        (
            "review: {backend: {name: label-studio, projects: {g: {projct: p}}}}",
            "review.backend.projects.g.projct: unknown setting; did you mean "
            "review.backend.projects.g.project?",
        ),
        (
            "review: {backend: {name: a2i, url: http://x}}",
            "review.backend.url: not a setting of review.backend a2i but of label-studio "
            "(review.backend.name chooses)",
        ),
        (
            "review: {backend: {name: a2i, event_queue_ur: http://x}}",
            "review.backend.event_queue_ur: unknown setting; did you mean "
            "review.backend.event_queue_url?",
        ),
        (
            "review: {backend: mturk}",
            "review.backend: Value error, 'mturk' is not a review backend",
        ),
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
        "review:\n  backend:\n    name: label-studio\n"
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


# review.backend is the chosen backend's own section; configurations written before it keep
# loading (settings.MOVED_KEYS), or fail naming the new key.

OLD_LABEL_STUDIO = (
    "review:\n  backend: label-studio\n  label_studio:\n    api_token: t0ken\n"
    "    projects: {general: {project: General}}\n    webhook: {port: 0}\n"
)
OLD_A2I = (
    "review:\n  content_classifiers: [FreeOfAdultContent]\n"
    "watchers:\n  event_queue_url: http://q/events\n  output_queue_url: http://q/output\n"
    "  wait_time_s: 3\n  reconcile_interval_s: 7\n"
)


def test_an_old_label_studio_configuration_loads_into_the_backend_section(
    tmp_path: Path,
) -> None:
    settings = load_settings(write(tmp_path, OLD_LABEL_STUDIO))
    new = load_settings(
        write(
            tmp_path,
            "review:\n  backend:\n    name: label-studio\n    api_token: t0ken\n"
            "    projects: {general: {project: General}}\n    webhook: {port: 0}\n",
        )
    )
    assert settings.review == new.review
    assert settings.moved_keys() == [
        "review.label_studio is now review.backend (environment: "
        "STREAM_ROUTER_REVIEW__BACKEND__<KEY>); the old key still loads"
    ]
    assert new.moved_keys() == []


def test_old_a2i_keys_load_into_the_backend_section(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, OLD_A2I))
    assert settings.review.backend.model_dump() == {
        "name": "a2i",
        "content_classifiers": ["FreeOfAdultContent"],
        "event_queue_url": "http://q/events",
        "output_queue_url": "http://q/output",
        "wait_time_s": 3,
    }
    assert settings.watchers.reconcile_interval_s == 7
    assert [note.split(" is now ")[0] for note in settings.moved_keys()] == [
        "review.content_classifiers",
        "watchers.event_queue_url",
        "watchers.output_queue_url",
        "watchers.wait_time_s",
    ]


def test_old_environment_variables_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__BACKEND", "label-studio")
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__LABEL_STUDIO__API_TOKEN", "from-env")
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__LABEL_STUDIO__WEBHOOK__PORT", "0")
    section = Settings().review.backend
    assert isinstance(section, LabelStudioSettings)
    assert section.api_token is not None
    assert section.api_token.get_secret_value() == "from-env"
    assert section.webhook.port == 0


def test_an_environment_variable_adds_to_the_backend_the_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``review.backend: label-studio`` in the file, its token in the environment: the short
    form is the section's name, which the environment's keys join (not replace)."""
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__BACKEND__API_TOKEN", "from-env")
    section = load_settings(write(tmp_path, "review: {backend: label-studio}\n")).review.backend
    assert isinstance(section, LabelStudioSettings)
    assert section.api_token is not None
    assert section.api_token.get_secret_value() == "from-env"


def test_a_key_in_its_old_and_new_place_fails_naming_the_new_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "review:\n  backend: {name: a2i, event_queue_url: http://new}\n"
        "watchers: {event_queue_url: http://old}\n",
    )
    with pytest.raises(ConfigError, match=r"keep review\.backend\.event_queue_url only"):
        load_settings(path)
    both = OLD_LABEL_STUDIO.replace(
        "  backend: label-studio\n", "  backend: {name: label-studio, api_token: x}\n"
    )
    with pytest.raises(ConfigError, match=r"review\.label_studio\.api_token and review\.backend"):
        load_settings(write(tmp_path, both))


def test_an_old_key_of_a_backend_not_chosen_is_dropped_and_said(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, OLD_A2I.replace("review:\n", "review:\n  backend: fake\n"))
    )
    assert settings.review.backend.model_dump() == {"name": "fake"}
    assert settings.moved_keys()[0] == (
        "review.content_classifiers is ignored: it is a setting of review.backend a2i, and "
        "review.backend is fake"
    )
