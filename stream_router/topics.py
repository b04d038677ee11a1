"""The router's Kafka topics: which it uses, creating them, and the check at start-up.

:func:`router_topics` is the one list of every topic the router reads or writes, each with
the setting that names it, its partitions and the topic configs that matter:

- the input topics (created only if missing: they belong to the models that publish);
- the output and dead-letter topics (``topics.partitions``);
- review-requests, loop-events and the review role's ledger: exactly
  ``review.topic_partitions`` each, because the review role joins them partition by partition;
  the ledger compacted; review-requests kept ``topics.review_requests_retention_s``,
  never longer than ``review.ledger_retention_s`` (a copy of a request that outlives its
  ledger entry would start a second, paid review);
- faust's leader topic of the review application (one partition).

``stream-router topics create --config F`` creates what is missing (:func:`create_topics`) and
never alters an existing topic. It returns once every broker knows the topics
(:func:`until_known`): on a cluster a broker applies a creation a moment after the controller
answers, and a role started at once was told by that broker its topics did not exist (seen in
tests/integration/test_kafka_cluster.py). Each role calls :func:`check_topics` before it consumes: a
missing topic, a partition count that breaks the review role's co-partitioning, or a
review-requests retention longer than the ledger's fails start-up with a
:class:`~stream_router.errors.ConfigError` naming the topic, the setting and the fix.

Both ask again (:func:`answered`) while the cluster answers with an error that may pass, for
up to ``kafka.startup_wait_s``: on a cluster, a node may be down or a leader being elected
when a role starts, and the admin client may have picked that node (on the sandbox's
three-node cluster, every review instance started during a node fault exited at this check:
16 exits in one short chaos run, none once it asked again).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from stream_router.errors import ConfigError
from stream_router.kafka_clients import client_options
from stream_router.settings import KafkaSettings, ReviewSettings, Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
CREATE_HINT = "create the router's topics with: stream-router topics create --config FILE"


@dataclass(frozen=True)
class TopicSpec:
    """One topic the router uses."""

    name: str
    setting: str  #: the setting that names it (for error messages)
    partitions: int
    roles: frozenset[str]  #: the roles that need it at start-up
    #: Must have exactly ``partitions`` (the review role's co-partitioned topics).
    exact: bool = False
    configs: Mapping[str, str] = field(default_factory=dict)
    #: Created by ``topics create`` only when missing, and only checked for existence.
    foreign: bool = False


def ledger_configs(review: ReviewSettings) -> dict[str, str]:
    """The ledger topic's configs: compacted, with a segment closed every
    ``review.ledger_segment_s`` (Kafka compacts closed segments only; measured in a soak with
    the default of 7 days: +130 MiB an hour per copy, none of it cleaned)."""
    return {"cleanup.policy": "compact", "segment.ms": str(int(review.ledger_segment_s * 1000))}


def router_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the router uses, in the order ``topics create`` makes them."""
    names, review, topics = settings.topic_names(), settings.review, settings.topics
    both, review_only = frozenset({"ingest", "review"}), frozenset({"review"})
    compacted = {"cleanup.policy": "compact"}
    retention_ms = str(int(topics.review_requests_retention_s * 1000))
    specs = [
        TopicSpec(name, "ingest.input_topics", topics.partitions, frozenset({"ingest"}),
                  foreign=True)
        for name in names.inputs
    ]  # fmt: skip
    specs += [
        TopicSpec(names.output, "ingest.output_topic", topics.partitions, both),
        TopicSpec(names.dead_letter, "ingest.dead_letter_topic", topics.partitions, both),
        TopicSpec(
            names.review_requests,
            "ingest.review_requests_topic",
            review.topic_partitions,
            both,
            exact=True,
            configs={"retention.ms": retention_ms},
        ),
        TopicSpec(
            names.loop_events,
            "review.loop_events_topic",
            review.topic_partitions,
            review_only,
            exact=True,
        ),
    ]
    specs.append(
        TopicSpec(
            names.ledger,
            "review.app_id (the review ledger)",
            review.topic_partitions,
            frozenset(),  # the review role creates it when missing; checked when present
            exact=True,
            configs=ledger_configs(review),
        )
    )
    specs.append(
        TopicSpec(
            f"{review.app_id}-__assignor-__leader",
            "review.app_id (faust's leader topic)",
            1,
            frozenset(),
            configs=compacted,
        )
    )
    return specs


def creation_configs(configs: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """A topic's configs as the router creates it: its own, and ``topics.min_insync_replicas``
    when set (``topics create`` and the review role's own creation of its ledger)."""
    configs = dict(configs)
    if settings.topics.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.topics.min_insync_replicas)
    return configs


def _new_topic(spec: TopicSpec, settings: Settings) -> NewTopic:
    configs = creation_configs(spec.configs, settings)
    return NewTopic(
        spec.name, spec.partitions, settings.topics.replication_factor, topic_configs=configs
    )


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(settings.kafka))


async def connected_admin(settings: Settings) -> AIOKafkaAdminClient:
    """A started admin client, or a ConfigError that says why the cluster cannot be reached.

    aiokafka reports a failed bootstrap only as "Unable to bootstrap"; the cause (refused
    connection, untrusted certificate, failed login) comes from one direct connection to the
    first bootstrap server. The message names the user, never the password. A cluster that
    refuses connections or has no metadata yet (a broker restarting) is tried again for
    ``kafka.startup_wait_s``; TLS and login failures fail at once.
    """
    deadline = asyncio.get_running_loop().time() + settings.kafka.startup_wait_s
    pause = 0.5
    while True:
        admin = _admin(settings)
        try:
            await admin.start()
        except KafkaConnectionError:
            await admin.close()
            message, transient = await _unreachable(settings.kafka)
            left = deadline - asyncio.get_running_loop().time()
            if not transient or left <= 0:
                raise ConfigError(message) from None
            logger.warning("%s; trying again for %.0f s more (kafka.startup_wait_s)", message, left)
            await asyncio.sleep(min(pause, left))  # back-off between tries of the cluster
            pause = min(pause * 2, 5.0)
            continue
        return admin


async def _unreachable(kafka: KafkaSettings) -> tuple[str, bool]:
    """Why the cluster is unreachable, and whether that may pass (refused, no metadata)."""
    options = client_options(kafka)
    first = kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    how: str = kafka.security_protocol
    transient = False
    if kafka.security_protocol.startswith("SASL"):
        how += f" ({kafka.sasl_mechanism} as user {kafka.sasl_username!r})"
    try:
        conn = await create_conn(
            host,
            int(port),
            ssl_context=options.get("ssl_context"),
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
            sasl_plain_username=options.get("sasl_plain_username"),
            sasl_plain_password=options.get("sasl_plain_password"),
            request_timeout_ms=options["request_timeout_ms"],
        )
    except ssl.SSLCertVerificationError as exc:
        cause = (
            f"the broker's certificate is not trusted ({exc.verify_message}); "
            "check kafka.ssl_cafile and kafka.ssl_check_hostname"
        )
    except ssl.SSLError as exc:
        cause = f"the TLS handshake failed ({exc.reason}); check kafka.ssl_* and the listener"
    except KafkaError as exc:
        cause = f"{type(exc).__name__}: {exc}"
        if "SaslAuthentication" in cause:
            cause = (
                "the broker refused the login (wrong user name or password, or a mechanism "
                "the listener does not enable); check kafka.sasl_*"
            )
    except ConnectionResetError:
        cause = (
            "the broker closed the connection during the handshake (a plaintext listener "
            "spoken to with TLS, or the reverse?); check kafka.security_protocol against the "
            "listener at kafka.bootstrap_servers"
        )
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        transient = isinstance(exc, ConnectionRefusedError)
        if transient:
            reason = f"connection refused ({reason})"
        cause = f"{reason}; check kafka.bootstrap_servers and the listener"
    else:
        conn.close()
        cause = "a direct connection worked, so the cluster's metadata was not reachable"
        transient = True
    return f"cannot connect to Kafka at {kafka.bootstrap_servers} over {how}: {cause}", transient


async def create_topics(settings: Settings) -> dict[str, str]:
    """Create the router's missing topics; returns ``{topic: "created" | "exists"}``.

    Raises ConfigError naming the topic when the cluster refuses one (replication factor above
    the broker count, a policy, an ACL).
    """
    specs = router_topics(settings)
    wait_s = settings.kafka.startup_wait_s
    admin = await connected_admin(settings)
    try:
        new = [_new_topic(spec, settings) for spec in specs]
        reply = await answered(wait_s, lambda: admin.create_topics(new), "creating topics")
        if not any(code not in (0, _ALREADY_EXISTS) for _, code, _ in reply.topic_errors):
            await until_known(admin, [spec.name for spec in specs], wait_s)
    finally:
        await admin.close()
    results: dict[str, str] = {}
    refused = []
    for name, code, message in reply.topic_errors:
        if code == 0:
            results[name] = "created"
        elif code == _ALREADY_EXISTS:
            results[name] = "exists"
        else:
            refused.append(f"{name}: {message or f'error code {code}'}")
    if refused:
        raise ConfigError("the cluster refused to create topics: " + "; ".join(refused))
    return {spec.name: results[spec.name] for spec in specs}


async def check_topics(settings: Settings, role: str) -> None:
    """Fail start-up of ``role`` (ingest, review or all) on what would break it later."""
    roles = {"ingest", "review"} if role == "all" else {role}
    specs = [spec for spec in router_topics(settings) if spec.roles & roles or spec.exact]
    wait_s = settings.kafka.startup_wait_s
    admin = await connected_admin(settings)
    try:
        # Only existing topics are described: a metadata request naming a missing topic
        # creates it on a broker with auto.create.topics.enable (Kafka's default), with the
        # broker's partition count.
        existing = set(await answered(wait_s, admin.list_topics, "listing topics"))
        named = [spec.name for spec in specs if spec.name in existing]
        described = (
            await answered(wait_s, lambda: admin.describe_topics(named), "describing topics")
            if named
            else []
        )
        found = {
            topic["topic"]: len(topic["partitions"])
            for topic in described
            if topic["error_code"] != _UNKNOWN_TOPIC
        }
        problems = _problems(specs, found, roles)
        requests = settings.topic_names().review_requests
        if "review" in roles and requests in found:
            retention = await _retention_s(admin, requests)
            if retention is not None and retention > settings.review.ledger_retention_s:
                problems.append(
                    f"topic {requests!r} keeps records {retention:.0f} s but "
                    f"review.ledger_retention_s is {settings.review.ledger_retention_s:.0f} s: a "
                    "request older than its ledger entry would start a second review; lower "
                    "the topic's retention.ms or raise the ledger retention"
                )
    finally:
        await admin.close()
    if problems:
        raise ConfigError("; ".join(problems))


async def until_known(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Until every broker of the cluster answers metadata for ``names`` with a leader for each
    partition (polled: a broker says nothing when it applies a creation); TimeoutError after
    ``timeout_s``. Asks each broker itself, through the admin client's connection to it."""
    request = MetadataRequest(names)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            nodes = [broker.nodeId for broker in admin._client.cluster.brokers()]
            replies = [(await admin._send_request(request, node)).to_object() for node in nodes]
            if nodes and all(
                topic["error_code"] == 0 and all(p["leader"] >= 0 for p in topic["partitions"])
                for reply in replies
                for topic in reply["topics"]
            ):
                return
        except KafkaError as exc:
            if not exc.retriable:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not every broker knows the topics {names} after {timeout_s} s")
        await asyncio.sleep(0.1)  # polling the brokers' metadata (see the docstring)


async def answered(wait_s: float, ask: Callable[[], Awaitable[T]], what: str) -> T:
    """What ``ask()`` returns, asked again while it raises a Kafka error that may pass (a node
    down, a leader being elected) until ``wait_s`` (``kafka.startup_wait_s``) has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    pause = 0.5
    while True:
        try:
            return await ask()
        except KafkaError as exc:
            left = deadline - loop.time()
            if not exc.retriable or left <= 0:
                raise
            logger.warning("%s: %r; asking again for %.0f s more (kafka.startup_wait_s)",
                           what, exc, left)  # fmt: skip
            await asyncio.sleep(min(pause, left))  # back-off between tries of the cluster
            pause = min(pause * 2, 5.0)


def _problems(specs: list[TopicSpec], found: dict[str, int], roles: set[str]) -> list[str]:
    problems = []
    for spec in specs:
        partitions = found.get(spec.name)
        if partitions is None:
            if spec.roles & roles:
                problems.append(
                    f"topic {spec.name!r} ({spec.setting}) does not exist; {CREATE_HINT}"
                )
            continue
        if spec.exact and partitions != spec.partitions:
            problems.append(
                f"topic {spec.name!r} ({spec.setting}) has {partitions} partitions but "
                f"review.topic_partitions is {spec.partitions}; the review role joins these "
                "topics partition by partition, so they must match"
            )
    return problems


async def _retention_s(admin: AIOKafkaAdminClient, topic: str) -> float | None:
    """The topic's ``retention.ms`` in seconds; None when unlimited or not reported.

    A broker that does not answer DescribeConfigs (Tansu drops the connection) leaves the
    retention unchecked, with a warning.
    """
    try:
        replies: list[Any] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
        )
    except (KafkaError, asyncio.IncompleteReadError, OSError) as exc:
        logger.warning(
            "the broker did not report retention.ms of %s (%s); its retention is not checked",
            topic,
            type(exc).__name__,
        )
        return None
    for reply in replies:
        for resource in reply.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "retention.ms" and entry["config_value"]:
                    value = int(entry["config_value"])
                    return None if value < 0 else value / 1000
    return None
