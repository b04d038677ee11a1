"""The whole sandbox in one context manager: moto, the broker, the A2I emulator, Label Studio.

Usage::

    async with Sandbox() as sandbox:
        sandbox.env()             # AWS_ENDPOINT_URL_*, region, dummy credentials, Kafka address
        sandbox.broker.bootstrap_servers
        sandbox.resources.event_queue_url

The broker is Apache Kafka where Java exists and Tansu elsewhere (``broker="kafka"|"tansu"``;
:func:`default_broker_kind` chooses; see :mod:`stream_router.sandbox.broker`). With
``backend="label-studio"`` a real Label Studio (``sandbox/labelstudio/server.py``) runs beside
them, with one project per flow definition and the simulated annotators
(``sandbox/labelstudio/annotators.py``); moto and the A2I emulator run either way (they are
small, and the demo's A2I path needs them). The processes start at once; the sandbox is ready
when moto answers and its resources exist, the broker answers (Tansu on s3:// storage starts
only once its bucket exists in moto), the emulator listens and Label Studio, when asked for,
answers and has its projects. Stop order is annotators, Label Studio, emulator, broker, moto.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stream_router.sandbox.a2i.launcher import A2IEmulator
from stream_router.sandbox.aws import (
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    AwsResources,
    MotoServer,
    provision,
)
from stream_router.sandbox.broker import (
    Broker,
    BrokerKind,
    S3Storage,
    TansuBroker,
)
from stream_router.sandbox.kafka import KafkaBroker, java_available
from stream_router.sandbox.kafka.cluster import KafkaCluster
from stream_router.sandbox.labelstudio.annotators import AnnotatorsProcess
from stream_router.sandbox.labelstudio.server import LabelStudioServer
from stream_router.sandbox.process import Lifecycle
from stream_router.sandbox.settings import SandboxSettings

logger = logging.getLogger(__name__)

BrokerStorage = Literal["memory", "s3"]
Backend = Literal["a2i", "label-studio"]


def default_broker_kind() -> BrokerKind:
    """Apache Kafka where Java exists, else Tansu; ``STREAM_ROUTER_SANDBOX_BROKER`` decides."""
    chosen = os.environ.get("STREAM_ROUTER_SANDBOX_BROKER", "").strip().lower()
    if chosen in ("kafka", "tansu"):
        return "kafka" if chosen == "kafka" else "tansu"
    if chosen:
        raise ValueError(f"STREAM_ROUTER_SANDBOX_BROKER must be kafka or tansu, not {chosen!r}")
    return "kafka" if java_available() else "tansu"


@dataclass(frozen=True)
class SandboxInfo:
    """What a client needs to reach a running sandbox (also written to ``sandbox.json``)."""

    bootstrap_servers: str
    aws_endpoint_url: str
    a2i_endpoint_url: str
    region: str
    output_bucket: str
    output_prefix: str
    event_queue_url: str
    output_queue_url: str
    flow_definition_arns: dict[str, str]
    state_dir: str
    broker: str = "tansu"
    backend: str = "a2i"
    brokers: int = 1  #: nodes of the broker (Apache Kafka runs 3 with ``--brokers 3``)
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    label_studio_user: str | None = None  #: the admin's email and password, to log in
    label_studio_password: str | None = None
    label_studio_projects: dict[str, int] = field(default_factory=dict)  #: by flow name

    @property
    def idempotence(self) -> bool:
        """Whether the broker takes idempotent producers (``kafka.idempotence``): Tansu answers
        InitProducerId with an error."""
        return self.broker != "tansu"

    def kafka_config(self, **more: object) -> dict[str, object]:
        """A router's ``kafka`` section on this sandbox (a configuration file's mapping, or
        ``Settings``' keyword argument): its brokers, idempotence as the broker allows, and
        ``more``. A section given whole replaces the environment's ``STREAM_ROUTER_KAFKA__*``."""
        return {"bootstrap_servers": self.bootstrap_servers, "idempotence": self.idempotence,
                **more}  # fmt: skip

    @property
    def sagemaker_endpoint_url(self) -> str:
        """SageMaker's control plane (DescribeFlowDefinition): the A2I emulator serves it."""
        return self.a2i_endpoint_url

    def env(self) -> dict[str, str]:
        """Environment variables that point any AWS SDK or CLI, and Kafka clients, here (and,
        on Tansu, which cannot do idempotent writes, turn the roles' idempotence off).

        ``AWS_ENDPOINT_URL_SAGEMAKER`` is SageMaker's control plane, where the router checks its
        flow definitions at start-up; the A2I emulator answers there too.
        """
        env = {
            "STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "AWS_ENDPOINT_URL_SAGEMAKER_A2I_RUNTIME": self.a2i_endpoint_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker_endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.aws_endpoint_url,
            "AWS_ENDPOINT_URL_SQS": self.aws_endpoint_url,
            "AWS_ENDPOINT_URL_EVENTBRIDGE": self.aws_endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        }
        if not self.idempotence:
            env["STREAM_ROUTER_KAFKA__IDEMPOTENCE"] = "false"
        return env

    def router_env(self) -> dict[str, str]:
        """:meth:`env` plus what the router needs beyond Kafka: the settings of the sandbox's
        review backend that only the sandbox knows (``review.backend``'s section).

        A2I: the watchers' queue URLs, so ``config/router.yaml`` runs both roles against the
        sandbox (its flow ARNs are the sandbox's default flow definitions). Label Studio: the
        backend's name (so commands given no configuration file load these keys as Label
        Studio's), its URL and API token, for ``config/router-label-studio.yaml``.
        """
        env = self.env()
        if self.brokers > 1:  # topics create then replicates as the cluster allows
            env["STREAM_ROUTER_TOPICS__REPLICATION_FACTOR"] = str(min(self.brokers, 3))
            env["STREAM_ROUTER_TOPICS__MIN_INSYNC_REPLICAS"] = "2"
        if self.backend == "label-studio" and self.label_studio_url and self.label_studio_token:
            env["STREAM_ROUTER_REVIEW__BACKEND__NAME"] = "label-studio"
            env["STREAM_ROUTER_REVIEW__BACKEND__URL"] = self.label_studio_url
            env["STREAM_ROUTER_REVIEW__BACKEND__API_TOKEN"] = self.label_studio_token
        else:
            env["STREAM_ROUTER_REVIEW__BACKEND__EVENT_QUEUE_URL"] = self.event_queue_url
            env["STREAM_ROUTER_REVIEW__BACKEND__OUTPUT_QUEUE_URL"] = self.output_queue_url
        return env


class Sandbox(Lifecycle):
    """Broker + moto + A2I emulator on loopback ports, started and stopped together."""

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        broker: BrokerKind | None = None,
        broker_storage: BrokerStorage = "memory",
        state_dir: Path | None = None,
        backend: Backend = "a2i",
        brokers: int = 1,
    ) -> None:
        self.settings = settings or SandboxSettings()
        self.broker_kind: BrokerKind = broker or default_broker_kind()
        if self.broker_kind == "kafka" and broker_storage != "memory":
            raise ValueError(
                "broker_storage is Tansu's choice; Apache Kafka keeps its data in the state dir"
            )
        if brokers != 1 and self.broker_kind != "kafka":
            raise ValueError("a cluster of brokers is Apache Kafka's (--broker kafka)")
        if brokers < 1:
            raise ValueError(f"brokers must be at least 1, not {brokers}")
        self.brokers = brokers
        self.broker_storage = broker_storage
        self.backend: Backend = backend
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="stream-router-sandbox-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.moto = MotoServer(log_dir=self.state_dir)
        self._broker: Broker | None = None
        self._a2i: A2IEmulator | None = None
        self._resources: AwsResources | None = None
        self._label_studio: LabelStudioServer | None = None
        self._annotators: AnnotatorsProcess | None = None
        self.label_studio_projects: dict[str, int] = {}
        self.startup_s: float | None = None

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("the sandbox is not started")
        return self._broker

    @property
    def a2i(self) -> A2IEmulator:
        if self._a2i is None:
            raise RuntimeError("the sandbox is not started")
        return self._a2i

    @property
    def label_studio(self) -> LabelStudioServer:
        if self._label_studio is None:
            raise RuntimeError("the sandbox runs no Label Studio (backend='label-studio')")
        return self._label_studio

    @property
    def annotators(self) -> AnnotatorsProcess:
        if self._annotators is None:
            raise RuntimeError("the sandbox runs no Label Studio (backend='label-studio')")
        return self._annotators

    @property
    def resources(self) -> AwsResources:
        if self._resources is None:
            raise RuntimeError("the sandbox is not started")
        return self._resources

    async def start(self) -> None:
        """Launch the three processes at once, then wait for each in dependency order."""
        started = time.monotonic()
        try:
            self.moto.launch()
            # The emulator needs moto only when a loop ends, by which time moto is ready.
            self._a2i = A2IEmulator(
                self.settings,
                aws_endpoint_url=self.moto.endpoint_url,
                state_dir=self.state_dir / "a2i",
            )
            self._a2i.launch()
            if self.backend == "label-studio":
                await self._launch_label_studio()  # starts while the rest comes up
            storage = None
            if self.broker_storage == "s3":
                storage = S3Storage(
                    bucket=self.settings.aws.broker_bucket,
                    endpoint_url=self.moto.endpoint_url,
                    region=self.settings.aws.region,
                )
            if self.broker_kind == "kafka" and self.brokers > 1:
                self._broker = KafkaCluster(state_dir=self.state_dir / "kafka", size=self.brokers)
            elif self.broker_kind == "kafka":
                self._broker = KafkaBroker(state_dir=self.state_dir / "kafka")
            else:
                self._broker = TansuBroker(s3_storage=storage, log_dir=self.state_dir)
            await self._broker.prepare()  # Kafka: jars (first use) and storage format
            if storage is None:
                self._broker.launch()
            await self.moto.ready()
            self._resources = await provision(self.moto.endpoint_url, self.settings.aws)
            if storage is not None:
                self._broker.launch()  # its bucket exists now
            await self._broker.ready()
            if self.settings.topics:
                await self._broker.create_topics(
                    self.settings.topics, partitions=self.settings.topic_partitions
                )
            await self._a2i.ready()
            if self.backend == "label-studio":
                await self.start_label_studio()
        except BaseException:
            await self.stop()
            raise
        self.startup_s = time.monotonic() - started
        logger.info("sandbox ready in %.2f s", self.startup_s)

    async def _launch_label_studio(self) -> LabelStudioServer:
        if self._label_studio is None:
            self._label_studio = LabelStudioServer(state_dir=self.state_dir / "label-studio")
        server = self._label_studio
        if not server.process.running():
            await server.prepare()  # installs it on first use
            server.launch()
        return server

    async def start_label_studio(self) -> LabelStudioServer:
        """Label Studio with its projects and annotators (at start with ``backend=
        "label-studio"``; a running sandbox of either backend may add it later, as tests do)."""
        server = await self._launch_label_studio()
        if self._annotators is not None and self._annotators.process.running():
            return server
        await server.ready()
        flows = list(self.settings.flow_definitions)
        made = await server.provision(flows)
        self.label_studio_projects = made.projects
        self._annotators = AnnotatorsProcess(
            self.settings,
            url=server.url,
            token=server.token,
            projects=made.projects,
            users=made.annotators,
            state_dir=self.state_dir / "label-studio",
        )
        await self._annotators.start()
        return server

    async def stop(self) -> None:
        for component in (self._annotators, self._label_studio, self._a2i, self._broker):
            if component is not None:
                await component.stop()
        await self.moto.stop()
        if self._own_state_dir:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.state_dir)

    def info(self) -> SandboxInfo:
        resources = self.resources
        info = SandboxInfo(
            bootstrap_servers=self.broker.bootstrap_servers,
            aws_endpoint_url=self.moto.endpoint_url,
            a2i_endpoint_url=self.a2i.endpoint_url,
            region=resources.region,
            output_bucket=resources.output_bucket,
            output_prefix=resources.output_prefix,
            event_queue_url=resources.event_queue_url,
            output_queue_url=resources.output_queue_url,
            flow_definition_arns={
                fd.name: self.settings.flow_arn(fd.name) for fd in self.settings.flow_definitions
            },
            state_dir=str(self.state_dir),
            broker=self.broker_kind,
            backend=self.backend,
            brokers=self.brokers,
        )
        server = self._label_studio
        if server is None:
            return info
        return dataclasses.replace(
            info,
            label_studio_url=server.url,
            label_studio_token=server.token,
            label_studio_user=server.credentials.email,
            label_studio_password=server.credentials.password,
            label_studio_projects=dict(self.label_studio_projects),
        )

    def env(self) -> dict[str, str]:
        return self.info().env()

    def resident_bytes(self) -> int:
        """Resident memory of the sandbox's processes (broker, moto, emulator)."""
        processes = [self.moto.process, *(self._broker.processes() if self._broker else [])]
        for component in (self._a2i, self._label_studio, self._annotators):
            if component is not None:
                processes.append(component.process)
        return sum(p.resident_bytes() for p in processes)
