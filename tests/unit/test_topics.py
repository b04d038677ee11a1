"""The router's topic list, what start-up makes of a cluster's topics, and how it waits for an
unreachable cluster (no broker here)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, TopicAuthorizationFailedError
from pydantic import ValidationError

from stream_router import review_role, topics
from stream_router.errors import ConfigError
from stream_router.settings import Settings
from stream_router.topics import _problems, check_topics, connected_admin, router_topics


def settings(**sections: dict[str, object]) -> Settings:
    return Settings(**sections)  # type: ignore[arg-type]


def test_every_topic_the_router_uses_is_listed_with_what_matters() -> None:
    specs = {s.name: s for s in router_topics(settings(
        ingest={"input_topics": ["a", "b"]},
        review={"topic_partitions": 6, "app_id": "rv"},
        topics={"partitions": 3, "review_requests_retention_s": 3600},
    ))}  # fmt: skip
    assert list(specs) == [
        "a", "b", "predictions-routed", "predictions-dead-letter",
        "stream-router-review-requests", "stream-router-loop-events",
        "rv-ledger", "rv-__assignor-__leader",
    ]  # fmt: skip
    assert specs["a"].foreign
    assert specs["predictions-routed"].partitions == 3
    requests = specs["stream-router-review-requests"]
    assert (requests.partitions, requests.exact) == (6, True)
    assert requests.configs == {"retention.ms": "3600000"}
    assert specs["rv-ledger"].configs == {"cleanup.policy": "compact", "segment.ms": "3600000"}
    assert (specs["rv-ledger"].partitions, specs["rv-ledger"].exact) == (6, True)


def test_start_up_names_missing_topics_and_broken_co_partitioning() -> None:
    specs = router_topics(settings(review={"topic_partitions": 4}))
    found = {
        "predictions": 8,  # inputs may have any partition count
        "predictions-routed": 1,
        "stream-router-review-requests": 4,
        "stream-router-loop-events": 2,
        "stream-router-review-ledger": 3,
    }
    problems = _problems(specs, found, {"ingest", "review"})
    assert len(problems) == 3, problems
    missing, loop_events, ledger = problems
    assert "'predictions-dead-letter' (ingest.dead_letter_topic) does not exist" in missing
    assert "stream-router topics create" in missing
    assert "'stream-router-loop-events' (review.loop_events_topic) has 2 partitions" in loop_events
    assert "review.topic_partitions is 4" in loop_events
    assert "'stream-router-review-ledger' (review.app_id (the review ledger))" in ledger
    # A ledger the review role has not created yet is no problem; ingest alone needs no loop events.
    assert _problems(specs, {**found, "stream-router-loop-events": 4,
                             "stream-router-review-ledger": 4,
                             "predictions-dead-letter": 1}, {"ingest"}) == []  # fmt: skip


def test_review_requests_may_not_outlive_their_ledger_entries() -> None:
    with pytest.raises(ValidationError, match=r"review_requests_retention_s .* exceeds"):
        settings(topics={"review_requests_retention_s": 8 * 86_400})
    with pytest.raises(ValidationError, match=r"review\.ledger_retention_s"):
        settings(review={"ledger_retention_s": 3600})
    settings(review={"ledger_retention_s": 3600}, topics={"review_requests_retention_s": 3600})


def test_replication_and_session_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="min_insync_replicas"):
        settings(topics={"replication_factor": 1, "min_insync_replicas": 2})
    with pytest.raises(ValidationError, match="must not exceed request_timeout_s"):
        settings(kafka={"session_timeout_s": 45, "request_timeout_s": 40})


async def test_start_up_waits_for_a_cluster_that_refuses_connections_then_names_it() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: connections refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}",
                                  "startup_wait_s": 1.5})  # fmt: skip
    began = time.monotonic()
    with pytest.raises(ConfigError, match=rf"127\.0\.0\.1:{port} over PLAINTEXT: .*refused"):
        await connected_admin(unreachable)
    assert time.monotonic() - began >= 1.5  # it kept trying for startup_wait_s


class FlakyCluster:
    """Admin clients whose start fails the first ``failures`` times, for the reason given."""

    def __init__(self, failures: int, reason: str, transient: bool) -> None:
        self.failures, self.reason, self.transient = failures, reason, transient
        self.tries = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(topics, "_admin", lambda _: self)
        monkeypatch.setattr(topics, "_unreachable", self.unreachable)

    async def start(self) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")

    async def close(self) -> None:
        pass

    async def unreachable(self, _: object) -> tuple[str, bool]:
        return f"cannot connect to Kafka at 127.0.0.1:9092 over PLAINTEXT: {self.reason}", (
            self.transient
        )


async def test_start_up_connects_once_a_restarting_broker_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = FlakyCluster(failures=2, reason="connection refused", transient=True)
    cluster.install(monkeypatch)
    assert await connected_admin(settings(kafka={"startup_wait_s": 10})) is cluster
    assert cluster.tries == 3


async def test_a_refused_login_fails_start_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FlakyCluster(failures=99, reason="the broker refused the login", transient=False)
    cluster.install(monkeypatch)
    with pytest.raises(ConfigError, match="refused the login"):
        await connected_admin(settings(kafka={"startup_wait_s": 30}))
    assert cluster.tries == 1


class NodeDown:
    """A connected admin client whose describe requests go to a node that is down for the
    first ``failures`` tries (aiokafka raises NodeNotReadyError), then answer."""

    def __init__(self, config: Settings, failures: int, error: type[Exception]) -> None:
        self.specs = router_topics(config)
        self.failures, self.error, self.tries = failures, error, 0

    async def list_topics(self) -> list[str]:
        return [spec.name for spec in self.specs]

    async def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
        self.tries += 1
        if self.tries <= self.failures:
            raise self.error("Attempt to send a request to node which is not ready (node id 1)")
        partitions = {spec.name: spec.partitions for spec in self.specs}
        return [{"topic": name, "error_code": 0, "partitions": [{}] * partitions[name]}
                for name in names]  # fmt: skip

    async def describe_configs(self, _: object) -> list[object]:
        return []

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("role", ["ingest", "review"])
async def test_start_up_asks_again_while_a_node_of_the_cluster_is_down(
    monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    config = settings(kafka={"startup_wait_s": 10})
    cluster = NodeDown(config, failures=2, error=NodeNotReadyError)

    async def connected(_: Settings) -> NodeDown:
        return cluster

    monkeypatch.setattr(topics, "connected_admin", connected)
    await check_topics(config, role)
    assert cluster.tries == 3


async def test_what_will_not_pass_fails_start_up_at_once_and_waiting_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(kafka={"startup_wait_s": 0.2})
    refused = NodeDown(config, failures=99, error=TopicAuthorizationFailedError)
    down = NodeDown(config, failures=99, error=NodeNotReadyError)
    for cluster, error in ((refused, TopicAuthorizationFailedError), (down, NodeNotReadyError)):

        async def connected(_: Settings, cluster: NodeDown = cluster) -> NodeDown:
            return cluster

        monkeypatch.setattr(topics, "connected_admin", connected)
        with pytest.raises(error):
            await check_topics(config, "all")
    assert refused.tries == 1  # not retriable: at once
    assert down.tries > 1  # retriable: asked again until kafka.startup_wait_s passed


class Brokers:
    """An aiokafka client's view for faust's controller lookup: nodes, the first ``down``."""

    def __init__(self, down: set[int]) -> None:
        self.down = down
        self.asked: list[int] = []
        self.cluster = self

    def brokers(self) -> list[Any]:
        return [type("Node", (), {"nodeId": node})() for node in (1, 2, 3)]

    async def send(self, node: int, request: object) -> Any:
        self.asked.append(node)
        if node in self.down:
            raise NodeNotReadyError(f"node {node}")
        return type("Reply", (), {"controller_id": 3})()

    async def force_metadata_update(self) -> None:
        self.down.discard(min(self.down))  # the next round finds a node back


async def test_the_review_role_finds_the_controller_with_a_node_down() -> None:
    """faust asked the first node only (its start failed while that node was down)."""
    owner = type("Owner", (), {"should_stop": False})()
    one_down = Brokers({1})
    assert await review_role._controller_node(owner, one_down) == 3
    assert one_down.asked == [1, 2]
    all_down = Brokers({1, 2, 3})  # a round refused: asked again after a pause
    assert await review_role._controller_node(owner, all_down) == 3
    assert all_down.asked == [1, 2, 3, 1]
    with pytest.raises(NodeNotReadyError):  # nobody answers: the wait ends
        await review_role._controller_node(owner, Brokers({1, 2, 3, 4}), timeout=0)
    app = review_role.faust_app(Settings())
    assert app.transport._get_controller_node is review_role._controller_node
