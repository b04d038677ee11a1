"""A real Apache Kafka broker for the sandbox: single-node KRaft, assembled from Maven Central.

Usage::

    async with KafkaBroker(state_dir=Path("state")) as broker:
        await broker.create_topics(["predictions"], partitions=4)
        ...  # any Kafka client at broker.bootstrap_servers

Nothing is downloaded as a tarball and nothing is vendored. ``pom.xml`` beside this module pins
the broker (``org.apache.kafka:kafka_2.13``) and its log binding; :func:`kafka_lib` copies them
and their runtime dependencies with ``mvn dependency:copy-dependencies`` into a cached folder
(``$STREAM_ROUTER_CACHE_DIR`` or ``~/.cache/stream-router``), keyed by the pom's digest, once per
machine. Starting the broker needs Java 17 or later; the first start also needs Maven.

The broker is one JVM acting as broker and controller, listening on free loopback ports only.
Its storage is formatted once (``kafka.tools.StorageTool``) in ``state_dir``, so a restart keeps
topics, records and committed offsets. It is ready when a metadata request succeeds and a group
coordinator answers (the first group lookup creates ``__consumer_offsets``; a client arriving
before that would be told the coordinator is not available).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream_router.sandbox.broker import Broker
from stream_router.sandbox.kafka.security import BrokerSecurity
from stream_router.sandbox.process import ManagedProcess, ProcessStartError, free_port
from stream_router.sandbox.tokens import kafka_cluster_id

logger = logging.getLogger(__name__)

#: The pinned broker version (keep equal to ``kafka.version`` in pom.xml; a test checks).
KAFKA_VERSION = "4.4.0"
_STARTED = r"Kafka Server started"
_CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or the broker's jars could not be assembled."""


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def cache_dir() -> Path:
    """Where assembled brokers are kept: ``$STREAM_ROUTER_CACHE_DIR`` or the user cache."""
    configured = os.environ.get("STREAM_ROUTER_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-router"


def java_binary() -> str:
    """The ``java`` to run the broker with (``$JAVA_HOME/bin/java`` first, then PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaUnavailable(
            "the Apache Kafka broker needs Java 17 or later (no java on PATH or in JAVA_HOME); "
            "install a JDK, or use the Tansu broker: --broker tansu"
        )
    return found


def java_available() -> bool:
    try:
        java_binary()
    except KafkaUnavailable:
        return False
    return True


def kafka_lib(*, quiet: bool = True) -> Path:
    """The folder of the broker's jars, assembled with Maven on first use.

    Several processes may ask at once (parallel test runs): a file lock makes one of them
    resolve while the others wait, and the folder appears whole or not at all.
    """
    pom = _resource("pom.xml")
    digest = hashlib.sha256(pom).hexdigest()[:12]
    root = cache_dir() / f"kafka-{KAFKA_VERSION}-{digest}"
    lib = root / "lib"
    if (root / "complete").is_file():
        return lib
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "complete").is_file():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaUnavailable(
                f"the Apache Kafka broker's jars are not in {lib} yet, and assembling them "
                "needs Maven (mvn on PATH); install Maven, or use the Tansu broker: --broker tansu"
            )
        logger.warning("assembling Apache Kafka %s from Maven Central into %s", KAFKA_VERSION, lib)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=root) as work:
            (Path(work) / "pom.xml").write_bytes(pom)
            staged = Path(work) / "lib"
            command = [
                mvn,
                "-B",
                *(["-q"] if quiet else []),
                "-f",
                str(Path(work) / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staged}",
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not any(staged.glob("kafka_2.13-*.jar")):
                raise KafkaUnavailable(
                    f"mvn could not assemble Apache Kafka {KAFKA_VERSION} (exit "
                    f"{done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
                )
            shutil.rmtree(lib, ignore_errors=True)
            staged.rename(lib)
        (root / "complete").write_text(f"{time.time()}\n", encoding="ascii")
        logger.warning("assembled Apache Kafka in %.1f s", time.monotonic() - started)
    return lib


class KafkaBroker(Broker):
    """A single-node KRaft Apache Kafka on free loopback ports, data in ``state_dir``.

    ``extra_config`` adds or overrides ``server.properties`` entries; ``security`` adds a
    mutual-TLS and a SCRAM-over-TLS listener (:mod:`stream_router.sandbox.kafka.security`)
    beside the plaintext one, which the sandbox and the readiness probe use.

    As one node of a cluster (:class:`~stream_router.sandbox.kafka.cluster.KafkaCluster`):
    ``node_id``, the quorum's ``voters`` (``id@host:port`` of every controller), the cluster's
    ``cluster_id`` (every node formats its storage with the same one) and ``replication``,
    the replication factor of the broker's own topics and of topics created without one
    (``min.insync.replicas`` is then 2).
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        heap_mb: int = 512,
        collector: str = "SerialGC",
        extra_config: Mapping[str, str] | None = None,
        security: BrokerSecurity | None = None,
        ready_timeout_s: float = 120.0,
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
    ) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap_mb = heap_mb
        #: The JVM's garbage collector (``-XX:+Use<collector>``): the serial one by default,
        #: the smallest footprint; ``bench_ingest.py --broker-gc`` compares others' pauses.
        self.collector = collector
        self.extra_config = dict(extra_config or {})
        self.security = security
        self.ready_timeout_s = ready_timeout_s
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.cluster_id = cluster_id
        self.replication = replication
        self.data_dir = state_dir / "kafka-data"
        self.config_path = state_dir / "kafka-server.properties"
        self.process = ManagedProcess(
            "kafka",
            [],  # set in prepare(): the classpath is known once the jars are assembled
            ready_pattern=_STARTED,
            log_path=state_dir / "broker.log",
            stop_timeout_s=30.0,
        )

    def server_properties(self) -> dict[str, str]:
        """The broker's configuration: loopback only, sizes for a small machine."""
        listener, controller = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.controller_port}"
        served = [f"PLAINTEXT://{listener}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.security is not None:
            served += self.security.listeners()
            protocols += ["SSL:SSL", "SASL_SSL:SASL_SSL"]
        replicas, insync = str(self.replication), str(min(2, self.replication))
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": ",".join([*served, f"CONTROLLER://{controller}"]),
            "advertised.listeners": ",".join(served),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # Topics are created on purpose, as on MSK and Confluent Cloud.
            "auto.create.topics.enable": "false",
            "default.replication.factor": replicas,
            "min.insync.replicas": insync,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": insync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": insync,
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        }
        if self.security is not None:
            properties.update(self.security.server_properties())
        properties.update(self.extra_config)
        return properties

    def _jvm(self, lib: Path, main: str, *args: str, heap_mb: int) -> list[str]:
        return [
            java_binary(),
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 128)}m",
            f"-XX:+Use{self.collector}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'kafka-log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]

    async def prepare(self) -> None:
        """Assemble the jars (first use), write the configuration, format storage once."""
        lib = await asyncio.to_thread(kafka_lib)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "kafka-log4j2.properties").write_bytes(_resource("log4j2.properties"))
        self.config_path.write_text(
            "".join(f"{key}={value}\n" for key, value in self.server_properties().items()),
            encoding="utf-8",
        )
        if not (self.data_dir / "meta.properties").is_file():
            await asyncio.to_thread(self._format, lib)
        self.process.argv = self._jvm(
            lib, "kafka.Kafka", str(self.config_path), heap_mb=self.heap_mb
        )

    def batch_codecs(self, topic: str) -> list[str]:
        """The compression codec of every record batch stored for ``topic``, partition by
        partition in log order: what the broker wrote to disk, not what a client says it sent.

        Read from the log segments, whose record batches are laid out as on the wire (v2):
        base offset (8 bytes), batch length (4), leader epoch (4), magic (1), CRC (4), then
        the attributes (2), whose low three bits name the codec.
        """
        codecs = []
        for segment in sorted(self.data_dir.glob(f"{topic}-*/*.log")):
            data = segment.read_bytes()
            position = 0
            while position + 23 <= len(data):
                (length,) = struct.unpack_from(">i", data, position + 8)
                (attributes,) = struct.unpack_from(">h", data, position + 21)
                codecs.append(_CODECS.get(attributes & 0x07, f"unknown-{attributes & 0x07}"))
                position += 12 + length
        return codecs

    def _format(self, lib: Path) -> None:
        command = self._jvm(
            lib,
            "kafka.tools.StorageTool",
            "format",
            # Never starting with "-" (sandbox/tokens.py).
            f"--cluster-id={self.cluster_id or kafka_cluster_id()}",
            "-c",
            str(self.config_path),
            *(self.security.format_arguments() if self.security else []),
            heap_mb=128,
        )
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ProcessStartError(
                f"formatting the Kafka storage in {self.data_dir} failed (exit "
                f"{done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
            )

    async def ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        await self.process.wait_ready_async(self.ready_timeout_s)
        await self._clients_answered(deadline)
        logger.info("kafka ready at %s", self.bootstrap_servers)

    async def _clients_answered(self, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.process.running():
                raise ProcessStartError(
                    f"kafka exited before it answered metadata; last output:\n"
                    f"{self.process.output_tail()}"
                )
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=5000,
                **self.probe_options(),
            )
            try:
                await admin.start()
                await admin.describe_cluster()
                await admin.list_consumer_group_offsets("stream-router-sandbox-ready")
            except (KafkaError, OSError) as exc:
                last = exc
            else:
                return
            finally:
                with contextlib.suppress(KafkaError, OSError):
                    await admin.close()
            await asyncio.sleep(0.2)  # polling a server we do not control: nothing to await
        raise ProcessStartError(
            f"kafka did not answer metadata and group requests in time: {last!r}"
        )
