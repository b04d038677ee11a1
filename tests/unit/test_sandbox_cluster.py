"""The sandbox's three-node Kafka cluster as configured (no JVM started here: the cluster itself
runs in tests/integration/test_kafka_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_router import cli
from stream_router.sandbox.kafka.cluster import KafkaCluster
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from stream_router.settings import Settings


def test_the_nodes_form_one_quorum_with_replication_three(tmp_path: Path) -> None:
    cluster = KafkaCluster(state_dir=tmp_path)
    properties = [node.server_properties() for node in cluster.nodes]
    assert [p["node.id"] for p in properties] == ["1", "2", "3"]
    voters = {p["controller.quorum.voters"] for p in properties}
    assert len(voters) == 1
    assert sorted(v.split("@")[0] for v in voters.pop().split(",")) == ["1", "2", "3"]
    assert len({node.cluster_id for node in cluster.nodes}) == 1
    assert len({node.data_dir for node in cluster.nodes}) == 3
    assert (
        len({node.port for node in cluster.nodes} | {n.controller_port for n in cluster.nodes}) == 6
    )
    for p in properties:
        assert p["default.replication.factor"] == p["offsets.topic.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
    assert cluster.bootstrap_servers.count(",") == 2


def test_a_single_node_keeps_one_replica(tmp_path: Path) -> None:
    (node,) = KafkaCluster(state_dir=tmp_path, size=1).nodes
    properties = node.server_properties()
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["min.insync.replicas"] == "1"


def info(brokers: int, broker: str = "kafka") -> SandboxInfo:
    return SandboxInfo("b:1", "http://aws", "http://a2i", "r", "bucket", "out", "q", "q2", {},
                       "state", broker=broker, brokers=brokers)  # fmt: skip


def test_idempotence_is_off_only_on_tansu_in_the_exports_and_the_kafka_section() -> None:
    tansu, kafka = info(1, "tansu"), info(1)
    assert tansu.router_env()["STREAM_ROUTER_KAFKA__IDEMPOTENCE"] == "false"
    assert Settings(kafka=tansu.kafka_config()).kafka.idempotence is False  # type: ignore[arg-type]
    assert "STREAM_ROUTER_KAFKA__IDEMPOTENCE" not in kafka.router_env()
    assert Settings(kafka=kafka.kafka_config(client_id="x")).kafka.idempotence is True  # type: ignore[arg-type]


def test_the_exports_make_topics_create_replicate_on_a_cluster() -> None:
    env = info(3).router_env()
    assert env["STREAM_ROUTER_TOPICS__REPLICATION_FACTOR"] == "3"
    assert env["STREAM_ROUTER_TOPICS__MIN_INSYNC_REPLICAS"] == "2"
    assert "STREAM_ROUTER_TOPICS__REPLICATION_FACTOR" not in info(1).router_env()


def test_a_cluster_is_apache_kafkas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="Apache Kafka"):
        Sandbox(broker="tansu", brokers=3, state_dir=tmp_path)
    assert cli.main(["sandbox", "up", "--broker", "tansu", "--brokers", "3"]) == 2
    assert "--brokers N (N > 1) is for --broker kafka" in capsys.readouterr().err
