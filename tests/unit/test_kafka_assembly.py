"""Assembling the sandbox's Apache Kafka: the pinned version, and clear errors without tools."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest

from stream_router.sandbox import kafka
from stream_router.sandbox.stack import default_broker_kind


def test_the_pom_pins_the_version_the_code_names() -> None:
    pom = resources.files("stream_router.sandbox.kafka").joinpath("pom.xml").read_text()
    (pinned,) = re.findall(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert pinned == kafka.KAFKA_VERSION


def test_without_maven_and_without_cached_jars_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_ROUTER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn here
    with pytest.raises(kafka.KafkaUnavailable, match=r"needs Maven .*--broker tansu"):
        kafka.kafka_lib()


def test_cached_jars_need_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_ROUTER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    pom = resources.files("stream_router.sandbox.kafka").joinpath("pom.xml").read_bytes()
    root = tmp_path / f"kafka-{kafka.KAFKA_VERSION}-{hashlib.sha256(pom).hexdigest()[:12]}"
    (root / "lib").mkdir(parents=True)
    (root / "complete").write_text("1\n")
    assert kafka.kafka_lib() == root / "lib"


def test_without_java_the_error_names_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kafka.KafkaUnavailable, match=r"Java 17.*--broker tansu"):
        kafka.java_binary()
    monkeypatch.delenv("STREAM_ROUTER_SANDBOX_BROKER", raising=False)
    assert default_broker_kind() == "tansu"  # the sandbox's default on such a machine


def test_the_broker_choice_can_be_forced_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_ROUTER_SANDBOX_BROKER", "Tansu")
    assert default_broker_kind() == "tansu"
    monkeypatch.setenv("STREAM_ROUTER_SANDBOX_BROKER", "redpanda")
    with pytest.raises(ValueError, match="kafka or tansu"):
        default_broker_kind()


def test_the_broker_listens_on_loopback_only(tmp_path: Path) -> None:
    properties = kafka.KafkaBroker(state_dir=tmp_path).server_properties()
    for key in ("listeners", "advertised.listeners", "controller.quorum.voters"):
        hosts = re.findall(r"(?:://|@)([^:,]+):", properties[key])
        assert hosts, key
        assert set(hosts) == {"127.0.0.1"}, key
