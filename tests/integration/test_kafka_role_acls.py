"""Each role as its own Kafka user, on a broker that enforces exactly the ACLs of its role.

A private Apache Kafka with an authorizer (``StandardAuthorizer``, no access without an ACL) and
a SASL_SSL listener with two SCRAM users, one per role. Each user gets exactly the ACLs
``tests/deploy/role_acls.py`` states for its role (the table of deploy/README.md and the Strimzi
KafkaUsers, which ``tests/deploy/test_kubernetes.py`` holds to the same statement). Ingest and
the review role then run as two processes, each logged in as its own user: every event gets its
outcome (so the ACLs are enough, the review role creating its ledger and faust its leader topic),
and each user is refused what its role must not do: the review user writing review requests,
the ingest user writing loop events or seeing the review role's topics.

The test's own clients (creating topics and ACLs, writing events, reading outcomes) use the
plaintext listener, whose anonymous principal is the broker's super user.
"""

from __future__ import annotations

import dataclasses
import ssl
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.protocol.admin import CreateAclsRequest

from stream_router.sandbox.kafka import KafkaBroker
from stream_router.sandbox.kafka.security import SCRAM_MECHANISMS, BrokerSecurity, make_security
from stream_router.sandbox.process import ManagedProcess
from stream_router.sandbox.stack import Sandbox
from stream_router.sandbox.tokens import urlsafe_token
from stream_router.settings import load_settings
from tests.deploy.role_acls import ROLES, Acl, leader_topic, role_acls
from tests.integration.kafka_helpers import TopicReader, produce
from tests.integration.review_backends import Backend
from tests.integration.test_review_e2e import PARTITIONS, config, events, outcome_records

pytestmark = pytest.mark.integration

USERS = {role: f"stream-router-{role}" for role in ROLES}
READY = {"ingest": r"assigned \d+ partitions", "review": r"review partition \d+: ledger read"}
# Kafka's wire codes (org.apache.kafka.common.acl / resource).
RESOURCE_TYPES = {"topic": 2, "group": 3}
OPERATIONS = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8, "DescribeConfigs": 10}
LITERAL, ALLOW = 3, 3


@dataclasses.dataclass(frozen=True)
class RoleUsers(BrokerSecurity):
    """The secured listeners, with one more SCRAM user per role (``users``: name, password)."""

    users: tuple[tuple[str, str], ...] = ()

    def format_arguments(self) -> list[str]:
        arguments = super().format_arguments()
        for name, password in self.users:
            for mechanism in SCRAM_MECHANISMS:
                arguments += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return arguments


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def authorizing(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[KafkaBroker, RoleUsers]]:
    folder = tmp_path_factory.mktemp("acl-kafka")
    base = make_security(folder / "tls")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    users = tuple((USERS[role], urlsafe_token(18)) for role in ROLES)
    security = RoleUsers(**fields, users=users)
    enforce = {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:ANONYMOUS",  # the plaintext and controller listeners
    }
    async with KafkaBroker(
        state_dir=folder / "kafka", security=security, extra_config=enforce
    ) as broker:
        yield broker, security


@pytest.fixture
def router_env(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The sandbox's AWS variables without its (plaintext, unrestricted) Kafka settings."""
    monkeypatch.delenv("STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS")
    return {k: v for k, v in sandbox_env.items() if not k.startswith("STREAM_ROUTER_KAFKA__")}


async def grant(bootstrap: str, user: str, acls: set[Acl]) -> None:
    """Create ``acls`` for ``user`` (aiokafka's admin client has no CreateAcls call: its
    protocol request, sent as the admin client sends its own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for acl in sorted(acls):
            for operation in acl.operations:
                principal, code = f"User:{user}", OPERATIONS[operation]
                kind = RESOURCE_TYPES[acl.resource]
                request = CreateAclsRequest(kind, acl.name, LITERAL, principal, "*", code, ALLOW)
                response = await admin._send_request(request)
                assert [code for code, _ in response.creation_responses] == [0], response
    finally:
        await admin.close()


def login(security: RoleUsers, role: str) -> dict[str, Any]:
    """aiokafka options of ``role``'s user on the SASL_SSL listener."""
    password = dict(security.users)[USERS[role]]
    return {
        "bootstrap_servers": security.sasl_ssl_servers,
        "security_protocol": "SASL_SSL",
        "ssl_context": ssl.create_default_context(cafile=str(security.ca_file)),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USERS[role],
        "sasl_plain_password": password,
    }


def role_process(path: Path, role: str, env: dict[str, str], security: RoleUsers) -> ManagedProcess:
    own = {
        "STREAM_ROUTER_KAFKA__SASL_USERNAME": USERS[role],
        "STREAM_ROUTER_KAFKA__SASL_PASSWORD": dict(security.users)[USERS[role]],
    }
    return ManagedProcess(
        f"router-{role}",
        [sys.executable, "-m", "stream_router.cli", "run", "--role", role, "--config", str(path)],
        ready_pattern=READY[role],
        env={**env, **own},
        log_path=path.with_suffix(f".{role}.log"),
        stop_timeout_s=60,
    )


async def refused_write(security: RoleUsers, role: str, topic: str) -> bool:
    producer = AIOKafkaProducer(**login(security, role))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k")
    except TopicAuthorizationFailedError:
        return True
    finally:
        await producer.stop()
    return False


async def visible_topics(security: RoleUsers, role: str) -> set[str]:
    admin = AIOKafkaAdminClient(**login(security, role))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_each_role_runs_as_its_own_user_with_exactly_its_acls(
    sandbox: Sandbox,
    router_env: dict[str, str],
    authorizing: tuple[KafkaBroker, RoleUsers],
    tmp_path: Path,
) -> None:
    broker, security = authorizing
    tag = uuid.uuid4().hex[:8]
    await broker.create_topics(
        [f"in-{tag}", f"out-{tag}", f"rr-{tag}", f"dlq-{tag}", f"le-{tag}"], partitions=PARTITIONS
    )
    settings = config(Backend("a2i", sandbox.info()), tag, tmp_path)
    settings["kafka"] = {
        "bootstrap_servers": security.sasl_ssl_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "set-per-role",  # the environment gives each process its own
        "sasl_password": "set-per-role",
        "ssl_cafile": str(security.ca_file),
        "session_timeout_s": 6,
        "heartbeat_interval_s": 1,
    }
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    loaded = load_settings(path)
    acls = {role: role_acls(loaded, role) for role in ROLES}
    for role in ROLES:
        await grant(broker.bootstrap_servers, USERS[role], acls[role])

    records, fate = events(9, tag)
    await produce(broker.bootstrap_servers, f"in-{tag}", records)
    processes = [role_process(path, role, router_env, security) for role in ROLES]
    outputs = {f"out-{tag}": PARTITIONS, f"dlq-{tag}": PARTITIONS}
    try:
        for process in processes:
            process.start()
        for process in processes:
            await process.wait_ready_async(90)
        async with TopicReader(broker.bootstrap_servers, outputs) as reader:
            await reader.until(lambda r: set(outcome_records(r, tag)) >= set(fate), 120)
    finally:
        codes = [await process.stop_async() for process in processes]
    assert codes == [0, 0], [p.output_tail() for p in processes]
    found = outcome_records(reader, tag)
    assert {event_id: len(found[event_id]) for event_id in fate} == dict.fromkeys(fate, 1)
    reviewed = {found[e][0]["decision"] for e, f in fate.items() if f == "review"}
    assert reviewed == {"reviewed"}  # the review role read, started, and published as itself
    names = loaded.topic_names()
    assert {names.ledger, leader_topic(loaded)} <= await visible_topics(security, "review")

    # What each role must not do, refused by the broker.
    assert await refused_write(security, "review", names.review_requests)
    assert await refused_write(security, "ingest", names.loop_events)
    assert await refused_write(security, "ingest", names.ledger)
    seen = await visible_topics(security, "ingest")
    assert seen == {*names.inputs, names.output, names.review_requests, names.dead_letter}
