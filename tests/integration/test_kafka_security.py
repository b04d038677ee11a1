"""The router on secured Kafka listeners: mutual TLS, and SCRAM over TLS, both roles.

A private Apache Kafka with an ``SSL`` listener (client certificates required) and a
``SASL_SSL`` listener (SCRAM-SHA-512/256) beside its plaintext one. The router connects only
through its documented ``kafka.*`` settings; ingest and the review role (faust) both run, in
one process (role ``all``). A wrong password or a CA the broker's certificate does not come from
fails start-up with exit code 2 and a message that says which, and no secret in the output.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaProducer

from stream_router.sandbox.kafka import KafkaBroker
from stream_router.sandbox.kafka.security import BrokerSecurity, make_authority, make_security
from stream_router.sandbox.stack import Sandbox
from tests.integration.kafka_helpers import TopicReader
from tests.integration.review_backends import Backend
from tests.integration.test_review_e2e import (
    PARTITIONS,
    config,
    events,
    outcome_records,
    run_router,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def router_env(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The sandbox's AWS variables without its (plaintext) Kafka address, which would
    override the configuration file's (children inherit the test's environment)."""
    monkeypatch.delenv("STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS")
    return {k: v for k, v in sandbox_env.items() if not k.startswith("STREAM_ROUTER_KAFKA__")}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[KafkaBroker, BrokerSecurity]]:
    folder = tmp_path_factory.mktemp("secured-kafka")
    security = make_security(folder / "tls")
    async with KafkaBroker(state_dir=folder / "kafka", security=security) as broker:
        yield broker, security


def kafka_section(security: BrokerSecurity, how: str, **overrides: Any) -> dict[str, Any]:
    common = {"session_timeout_s": 6, "heartbeat_interval_s": 1, "request_timeout_s": 10}
    if how == "mtls":
        section = {
            "bootstrap_servers": security.ssl_servers,
            "security_protocol": "SSL",
            "ssl_cafile": str(security.ca_file),
            "ssl_certfile": str(security.client_cert),
            "ssl_keyfile": str(security.client_key),
        }
    else:
        section = {
            "bootstrap_servers": security.sasl_ssl_servers,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": security.username,
            "sasl_password": security.password,
            "ssl_cafile": str(security.ca_file),
        }
    return {**common, **section, **overrides}


@pytest.mark.parametrize("how", ["scram", "mtls"])
async def test_both_roles_route_and_review_over_a_secured_listener(
    sandbox: Sandbox,
    router_env: dict[str, str],
    secured: tuple[KafkaBroker, BrokerSecurity],
    tmp_path: Path,
    how: str,
) -> None:
    broker, security = secured
    tag = uuid.uuid4().hex[:8]
    names = [f"in-{tag}", f"out-{tag}", f"rr-{tag}", f"dlq-{tag}", f"le-{tag}"]
    await broker.create_topics(names, partitions=PARTITIONS)
    settings = config(Backend("a2i", sandbox.info()), tag, tmp_path)
    settings["kafka"] = kafka_section(security, how)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))

    records, fate = events(9, tag)
    context = ssl.create_default_context(cafile=str(security.ca_file))
    producer = AIOKafkaProducer(
        bootstrap_servers=security.sasl_ssl_servers,
        security_protocol="SASL_SSL",
        ssl_context=context,
        sasl_mechanism="SCRAM-SHA-256",  # the other mechanism, for the publishing model
        sasl_plain_username=security.username,
        sasl_plain_password=security.password,
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(f"in-{tag}", value, key=key)
    finally:
        await producer.stop()

    outputs = {f"out-{tag}": PARTITIONS, f"dlq-{tag}": PARTITIONS}
    async with TopicReader(broker.bootstrap_servers, outputs) as reader:  # plaintext side door
        await run_router(
            path, router_env, reader, lambda r: set(outcome_records(r, tag)) >= set(fate)
        )
    found = outcome_records(reader, tag)
    assert {event_id: len(found[event_id]) for event_id in fate} == dict.fromkeys(fate, 1)
    decisions = {found[event_id][0]["decision"] for event_id, f in fate.items() if f == "review"}
    assert decisions == {"reviewed"}  # the review role read and wrote over the same listener


def start_up(path: Path, role: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_router.cli", "run", "--role", role, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("role", ["ingest", "review"])
async def test_a_wrong_password_fails_start_up_clearly_without_the_secret(
    sandbox: Sandbox,
    router_env: dict[str, str],
    secured: tuple[KafkaBroker, BrokerSecurity],
    tmp_path: Path,
    role: str,
) -> None:
    _, security = secured
    settings = config(Backend("a2i", sandbox.info()), uuid.uuid4().hex[:8], tmp_path)
    wrong = "not-the-password-" + uuid.uuid4().hex
    settings["kafka"] = kafka_section(security, "scram", sasl_password=wrong)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    done = start_up(path, role, router_env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "cannot connect to Kafka" in output
    assert "refused the login" in output
    assert security.username in output
    assert wrong not in output
    assert security.password not in output


async def test_an_untrusted_broker_certificate_fails_start_up_clearly(
    sandbox: Sandbox,
    router_env: dict[str, str],
    secured: tuple[KafkaBroker, BrokerSecurity],
    tmp_path: Path,
) -> None:
    _, security = secured
    make_authority(tmp_path / "other-ca", "a CA the broker's certificate is not from")
    settings = config(Backend("a2i", sandbox.info()), uuid.uuid4().hex[:8], tmp_path)
    settings["kafka"] = kafka_section(
        security, "scram", ssl_cafile=str(tmp_path / "other-ca" / "ca.pem")
    )
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    done = start_up(path, "ingest", router_env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "certificate is not trusted" in output
    assert security.password not in output
