"""Three Apache Kafka nodes on loopback, replication 3: the shape production clusters have.

Usage::

    async with KafkaCluster(state_dir=Path("state")) as cluster:
        await cluster.create_topics(["predictions"], partitions=4)  # replication 3
        ...  # any Kafka client at cluster.bootstrap_servers (every node's listener)
        await cluster.nodes[0].kill()  # SIGKILL one node; the others keep serving

Each node is a :class:`~stream_router.sandbox.kafka.KafkaBroker` of its own (one JVM acting as
broker and controller, its own ports and data directory under ``state_dir/node-N``), assembled
from the same jars. The three controllers form a static KRaft quorum
(``controller.quorum.voters``), every node formatted with one cluster id. Topics created
without a replication factor get 3, and ``min.insync.replicas`` is 2 on every topic (the
broker's own included), as on MSK and Confluent: one node may be down and ``acks=all`` writes
go on; with two down they fail, and reads of what was written go on from the node left.

A cluster is ready once every node answers metadata and group requests (the consumer offsets
topic needs its three replicas to exist). One node started again (:meth:`KafkaCluster.start_node`)
rejoins from its own data directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from stream_router.sandbox.broker import Broker
from stream_router.sandbox.kafka import KafkaBroker
from stream_router.sandbox.process import ManagedProcess, free_port
from stream_router.sandbox.tokens import kafka_cluster_id

logger = logging.getLogger(__name__)

#: The nodes of a sandbox cluster: the smallest quorum that survives one node lost.
NODES = 3


class KafkaCluster(Broker):
    """``size`` KRaft nodes (broker and controller each) on free loopback ports, data in
    ``state_dir``; topics replicated ``min(size, 3)`` times, two in sync required."""

    def __init__(
        self,
        *,
        state_dir: Path,
        size: int = NODES,
        heap_mb: int = 384,
        extra_config: Mapping[str, str] | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster has at least one node, not {size}")
        self.state_dir = state_dir
        self.ready_timeout_s = ready_timeout_s
        self.replication = min(size, 3)
        controllers = [free_port() for _ in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controllers))
        cluster_id = kafka_cluster_id()
        self.nodes = [
            KafkaBroker(
                state_dir=state_dir / f"node-{i + 1}",
                controller_port=port,
                heap_mb=heap_mb,
                extra_config=extra_config,
                ready_timeout_s=ready_timeout_s,
                node_id=i + 1,
                voters=voters,
                cluster_id=cluster_id,
                replication=self.replication,
            )
            for i, port in enumerate(controllers)
        ]
        self.port = self.nodes[0].port
        #: The first node's process (what a single broker's callers read); :meth:`processes`
        #: has every node's.
        self.process = self.nodes[0].process

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def processes(self) -> list[ManagedProcess]:
        return [node.process for node in self.nodes]

    async def prepare(self) -> None:
        for node in self.nodes:  # the jars once (the first node), each node's storage
            await node.prepare()

    def launch(self) -> None:
        for node in self.nodes:
            node.launch()

    async def ready(self) -> None:
        await asyncio.gather(*(node.ready() for node in self.nodes))
        logger.info("kafka cluster of %d nodes ready at %s", len(self.nodes),
                    self.bootstrap_servers)  # fmt: skip

    async def stop(self) -> None:
        # Together: a node stopped last, alone, waits for a quorum to shut down in order.
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def stop_node(self, index: int, *, kill: bool = False) -> None:
        """Stop node ``index`` (0-based): shut down cleanly, or SIGKILL with ``kill``."""
        node = self.nodes[index]
        if kill:
            await asyncio.to_thread(node.process.kill)
        else:
            await node.stop()

    async def start_node(self, index: int) -> None:
        """Start node ``index`` again from its data directory; returns once it is up (its
        server started: it catches up with its partitions afterwards)."""
        node = self.nodes[index]
        node.launch()
        await node.process.wait_ready_async(node.ready_timeout_s)

    async def create_topics(
        self,
        names: Iterable[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        configs: Mapping[str, str] | None = None,
    ) -> None:
        """As :meth:`Broker.create_topics`, replicated on ``min(size, 3)`` nodes by default."""
        await super().create_topics(
            names,
            partitions=partitions,
            replication_factor=replication_factor or self.replication,
            configs=configs,
        )
