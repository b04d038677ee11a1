"""The review role: the review application on faust-streaming, and its wiring.

It sits beside the ingest role (``stream_router/app.py`` runs both) and is the composition root
of the review path: it picks the review backend and its completion signals, and connects them to
the framework-free core in ``review/`` (the scheduler, the ledger, the monitor, budgets): the
backend by name from the one table (``stream_router/backends.py``), and the signals the backend
makes (:meth:`~stream_router.review.backend.ReviewBackend.signals`) beside the reconciler. It is
the only module that imports faust, used narrowly: consumer-group membership (loop-events'
partitions, and review-requests' partitions of the same numbers), one agent on loop-events,
and its producer. It wires the parts of ``review/`` together::

    review-requests ──► intake ──► ReviewScheduler.take_requests: recorded PENDING, then the
      partition's intake position moves past them (a batch at a time, a plain consumer that
      faust never sees: review/intake.py, review_topics.RequestFeed)
    watchers (A2I: EventBridge and S3 output via SQS; Label Studio: its webhook posts)
      and the reconciler ──► loop-events
    loop-events ──► agent ──► ReviewScheduler.take_loop_event: the open attempt is ENDED
    one worker per owned partition ──► start, hold, publish, escalate      (review/scheduler.py)
    the monitor ──► backlog and age metrics, readiness, records faust never delivered, the
      audit monitor's counts and bounds (review/monitor.py, review/audit.py)

Everything about one review is keyed by its first name (``naming.first_name_of``): requests,
loop events and ledger entries of every attempt share a partition, so one instance owns them.
The ledger (``review/ledger.py``) is the review role's own compacted topic, read whole when a
partition is assigned; faust's tables are not used (see the ledger's docstring for why).

The rate limiter is per process: give each review instance its share of the account's quota.
Budgets are kept per partition in the ledger, each partition spending its share of the route's
limits (``review/shares.py``), so a restart or a rebalance keeps the counts and several instances
never spend more than the limits together.

Every agent and task runs under the process's :class:`~stream_router.supervision.Supervisor`:
an exception no typed disposition handles is logged, reported by :meth:`ReviewService.
readiness_problem` and stops the worker, and :func:`run_worker` exits with
:data:`~stream_router.supervision.EXIT_DIED` so the orchestrator restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_router.backends import BackendContext, build_backend
from stream_router.errors import ConfigError, UpstreamError
from stream_router.kafka_clients import (
    CLOSE_TIMEOUT_S,
    RetryingProducer,
    client_options,
    stop_consumer,
)
from stream_router.metrics import ReviewMetrics
from stream_router.models import SourceRef
from stream_router.naming import first_name_of
from stream_router.review.audit import Auditor, AuditReport
from stream_router.review.backend import ReviewBackend, Signal, SignalHooks
from stream_router.review.completion import Completer
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.intake import RequestIntake
from stream_router.review.limiter import RateLimiter
from stream_router.review.monitor import ReviewMonitor
from stream_router.review.reconciler import Reconciler
from stream_router.review.request import ReviewRoutes
from stream_router.review.scheduler import Outlets, ReviewScheduler
from stream_router.review.shares import budget_shares
from stream_router.review.starter import Starter
from stream_router.review_topics import KafkaLedgerLog, PartitionReader, RequestFeed
from stream_router.settings import KafkaSettings, Settings
from stream_router.supervision import EXIT_DIED, Supervisor
from stream_router.topics import answered, creation_configs, ledger_configs

logger = logging.getLogger(__name__)


def faust_app(settings: Settings) -> faust.App:
    kafka, review = settings.kafka, settings.review
    try:  # faust creates only the last folder of its data directory
        review.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"review.data_dir: cannot create {review.data_dir} ({exc.strerror}); set "
            "STREAM_ROUTER_REVIEW__DATA_DIR to a writable folder"
        ) from exc
    app = faust.App(
        review.app_id,
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(kafka),
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_request_timeout=kafka.request_timeout_s,
        store="memory://",
        datadir=str(review.data_dir),
        topic_partitions=review.topic_partitions,
        topic_replication_factor=settings.topics.replication_factor,
        producer_acks=-1,
        producer_compression_type=kafka.compression(),
        # faust's default (16 KiB) holds about 15 ledger entries: a flood of requests would
        # travel in thousands of small requests. Ingest's batch limit instead.
        producer_max_batch_size=kafka.producer_batch_max_bytes,
        producer_max_request_size=max(1_000_000, kafka.producer_batch_max_bytes),
        web_enabled=False,
        autodiscover=False,
    )
    app.transport.Consumer = _Consumer  # the kafka:// transport, closing its client as below
    app.transport.Producer = _producer_class(kafka.idempotence)
    app.transport._get_controller_node = _controller_node  # faust's, asking every node
    return app


async def _controller_node(owner: Any, client: Any, timeout: int = 30_000) -> int | None:  # noqa: ASYNC109 (faust calls it so)
    """The cluster's controller as faust's topic declaration looks it up, asking each broker.

    faust asks only the first broker in its metadata, so a review role starting while that
    broker is down failed (its leader assignor declares its topic at start, whether it exists
    or not). This asks the brokers in turn, a broker not answering skipped, until one answers
    or ``timeout`` (ms) has passed; a stopping worker gets None, as from faust's.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout / 1000
    while True:
        for node in [broker.nodeId for broker in client.cluster.brokers()]:
            if owner.should_stop:
                return None
            try:
                response = await client.send(node, MetadataRequest([]))
            except KafkaError as exc:
                if not exc.retriable or loop.time() >= deadline:
                    raise
                continue  # this broker is down or starting: the next one
            return int(response.controller_id)
        if loop.time() > deadline:
            raise KafkaError(f"no broker answered within {timeout / 1000:g} s")
        await asyncio.sleep(0.5)  # every broker refused: ask them again
        await client.force_metadata_update()


class _Producer(faust_aiokafka.Producer):  # type: ignore[misc]
    """faust's producer, promising what ingest's does (``stream_router.kafka_clients``).

    faust turns idempotence on only in its exactly-once mode, and its aiokafka producer gives a
    batch up after ``broker_request_timeout``. This one is idempotent as ``kafka.idempotence``
    says and retries a retriable error until the brokers take the batch
    (:class:`~stream_router.kafka_clients.RetryingProducer`): the ledger, loop events, outcomes
    and faust's own topics are all written through it.
    """

    idempotence = True

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "enable_idempotence": self.idempotence}

    @property
    def _producer_type(self) -> type[RetryingProducer]:
        return RetryingProducer


def _producer_class(idempotence: bool) -> type[_Producer]:
    return type("Producer", (_Producer,), {"idempotence": idempotence})


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """faust's consumer thread, closing its aiokafka consumer the way ingest does.

    With no broker answering, aiokafka's ``stop()`` ends in a stray ``CancelledError``
    (``stream_router.kafka_clients`` explains it); in faust's thread that aborts the thread's
    shutdown before it tells the worker, which waits mode's ``shutdown_timeout`` (60 s) and
    logs a ``TimeoutError``. :func:`~stream_router.kafka_clients.stop_consumer` closes it
    within a bound instead. Everything else is faust's.
    """

    async def on_thread_stop(self) -> None:
        # What the parent does (stop the method queue, then the consumer), bounded.
        await super(faust_aiokafka.AIOKafkaConsumerThread, self).on_thread_stop()
        if self._consumer is not None:
            await stop_consumer(self._consumer)


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


def _credentials(kafka: KafkaSettings) -> Any:
    options = client_options(kafka)
    context = options.get("ssl_context")
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=options["sasl_plain_password"],
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class ReviewService:
    """The review path of one process; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        metrics: ReviewMetrics,
        *,
        backend: ReviewBackend | None = None,
        clock: Any = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        active = settings.watchers.active(settings.review.backend.name)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        review = settings.review
        self.topics = topics = settings.topic_names()
        self.backend = backend or build_backend(BackendContext(settings, metrics, clock))
        shares = budget_shares(settings)  # fails closed; logs what an operator should know
        for warning in settings.privacy_warnings():
            logger.warning("%s", warning)
        self.limiter = RateLimiter(review.rate_per_s, review.burst)
        self._stop = asyncio.Event()
        self._opened = asyncio.Event()
        self._sweeping = asyncio.Lock()  # held during a reconciler sweep (the backend in use)
        self.supervisor = Supervisor(review.stall_after_s, monotonic=monotonic)
        #: The worker's tasks by name, each as it runs: under the supervisor (:meth:`task`).
        self.tasks: dict[str, Callable[[], Awaitable[None]]] = {}

        self.app = app = faust_app(settings)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}  # fmt: skip
        self.loop_events = app.topic(topics.loop_events, **raw)
        self.output = app.topic(topics.output, **raw)
        self.dead_letter = app.topic(topics.dead_letter, **raw)
        self.reader = PartitionReader(settings.kafka, topics.review_requests, review.app_id)
        self.feed = RequestFeed(settings.kafka, topics.review_requests)
        self._intake_idle = asyncio.Event()  #: the intake is not running (or has ended)
        self._intake_idle.set()
        routes = ReviewRoutes.from_settings(settings.policies, review)
        self.ledger_log = KafkaLedgerLog(topics.ledger, self._send_to, self.reader)
        metrics.ledger_unacknowledged.set_function(self.ledger_log.waits.oldest_s)
        auditor = Auditor(review.audit, settings.policies.version)
        self.audit_report = AuditReport(metrics, auditor, routes)
        self.scheduler = ReviewScheduler(
            review,
            backend=self.backend,
            starter=Starter(self.backend, self.limiter, projection=list(review.projection)),
            completer=Completer(self.backend, review, clock=clock),
            limiter=self.limiter,
            log=self.ledger_log,
            requests=self.reader,
            routes=routes,
            shares=shares,
            outlets=Outlets(
                output=functools.partial(self._send_keyed, self.output),
                dead_letter=functools.partial(self._send_keyed, self.dead_letter),
            ),
            metrics=metrics,
            auditor=auditor,
            die=self.supervisor.died,
            max_entry_bytes=settings.kafka.max_record_bytes,
            clock=clock,
            monotonic=monotonic,
        )
        self.monitor = ReviewMonitor(
            review,
            metrics,
            self.scheduler,
            self.reader,
            self.audit_report,
            topic=topics.review_requests,
            clock=clock,
            monotonic=monotonic,
        )
        app.on_partitions_revoked.connect(self._revoked)
        app.on_partitions_assigned.connect(self._assigned)
        self.task("review-requests", self._take_requests)
        app.agent(self.loop_events, name="loop-events", concurrency=1)(
            self._agent("loop-events", self._on_loop_events)
        )
        self.supervisor.heartbeat(
            "monitor",
            review.monitor_interval_s,
            doing=f"reads offsets from Kafka at {settings.kafka.bootstrap_servers}",
        )
        self.task("monitor", self._monitor_loop)
        self.reconciler = Reconciler(
            self.backend,
            self.scheduler.open_entries,
            self.emit,
            metrics,
            grace_s=settings.watchers.reconcile_grace_s,
            clock=clock,
        )
        if "reconciler" in active:
            self.supervisor.heartbeat("reconciler", settings.watchers.reconcile_interval_s)
            self.task("reconciler", self._reconcile_loop)
        hooks = SignalHooks(self.emit, self._check, self.supervisor.beat)
        self.signals = list(self.backend.signals(hooks))
        for each in self.signals:
            if each.beat_s is not None:
                self.supervisor.heartbeat(each.kind, each.beat_s)
            self.task(each.kind, self._signal_task(each))
        app.on_before_shutdown.connect(self._shut_down)

    # -- supervision and readiness -----------------------------------------------------------

    def _agent(self, name: str, body: Callable[[Any], Awaitable[None]]) -> Any:
        self.supervisor.require(name)

        async def actor(stream: Any) -> None:
            await self.supervisor.run(name, body(stream))

        actor.__name__ = actor.__qualname__ = name.replace("-", "_")
        return actor

    def task(
        self, name: str, body: Callable[[], Awaitable[None]], *, required: bool = True
    ) -> None:
        """Run ``body`` as a task of the worker, supervised (its death stops the process)."""
        if required:
            self.supervisor.require(name)

        async def supervised() -> None:
            await self.supervisor.run(name, body())

        supervised.__name__ = supervised.__qualname__ = name.replace("-", "_")
        self.tasks[name] = supervised
        self.app.task(supervised)

    def readiness_problem(self) -> str | None:
        """None when the review role is ready, else a short reason (no payloads).

        Ready means: no agent or task died, the worker is not stopping, it has started and
        opened the review backend, it is not rebalancing, it owns review partitions and has
        read their ledgers, no partition's intake is stuck below waiting records (see
        :class:`~stream_router.review.monitor.ReviewMonitor`), and every agent, watcher, the
        monitor and the reconciler runs without stalling (``stream_router.supervision``).
        """
        supervisor = self.supervisor
        death = supervisor.death()
        if death is not None:
            return death
        app = self.app
        loading = self.scheduler.loading()
        checks: list[tuple[Callable[[], object], str]] = [
            (self._stop.is_set, "stopping"),
            (
                lambda: not self._opened.is_set(),
                "starting: worker not started or review backend not open yet",
            ),
            (lambda: app.rebalancing, "rebalancing partitions"),
            (lambda: not self.scheduler.owned(), "no review partitions assigned"),
            (lambda: loading, f"reading the ledger of partition(s) {loading}"),
            (lambda: self.monitor.stuck, "; ".join(self.monitor.stuck)),
        ]
        for failing, reason in checks:
            if failing():
                return reason
        return supervisor.stall()

    # -- lifecycle ---------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Before the worker starts: start the backend's signals (a webhook's port taken fails
        first), connect the direct reader, create the ledger if missing, open the backend."""
        for each in self.signals:
            await each.start()  # what they learn waits until the backend is open
        await self.reader.start()
        await self.feed.start()
        review = self.settings.review
        created = await answered(
            self.settings.kafka.startup_wait_s,
            lambda: self.reader.ensure_topic(
                self.topics.ledger,
                review.topic_partitions,
                self.settings.topics.replication_factor,
                creation_configs(ledger_configs(review), self.settings),
            ),
            "creating the review ledger topic",
        )
        if created:
            logger.info("created the review ledger topic %s", self.topics.ledger)
        # Open before the worker starts: a partition's worker may need the backend as soon as
        # it has read its ledger (an entry ended before a restart is published then).
        await self._open()

    async def _open(self) -> None:
        await self.backend.open()
        self._opened.set()

    async def _shut_down(self, *_: Any, **__: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop in order: the workers and sweeps that use the backend, then the backend.

        Runs as the worker shuts down, or after :meth:`prepare` failed (whatever it opened is
        closed; what it did not open is skipped). Never raises: faust's shutdown goes no
        further than a receiver of ``on_before_shutdown`` that raises, and would leave its
        consumer thread running (the process then never exits). A step that fails is logged
        and the next one runs.
        """
        self._stop.set()  # watchers, the intake and an embedded ingest finish what they hold
        await _step("the review intake", _bounded(self._intake_idle.wait(), CLOSE_TIMEOUT_S))
        await _step("the review workers", self.scheduler.close())
        for each in self.signals:
            await _step(f"the {each.kind} signal", each.stop())
        async with self._sweeping:
            await _step("the review backend", self.backend.aclose())
        await _step("the review-requests feed", self.feed.stop())
        await _step("the ledger reader", self.reader.stop())

    # The group assigns loop-events; review-requests' partition of the same number goes with
    # each (both are keyed by the review's first name and have review.topic_partitions).

    async def _assigned(self, _sender: Any, assigned: Any, **_: Any) -> None:
        topic = self.loop_events.get_topic_name()
        for tp in assigned:
            if tp.topic == topic:
                self.scheduler.assign(tp.partition)

    async def _revoked(self, _sender: Any, revoked: Any, **_: Any) -> None:
        topic = self.loop_events.get_topic_name()
        for tp in revoked:
            if tp.topic == topic:
                await self.scheduler.revoke(tp.partition)
                self.monitor.forget(tp.partition)
                with contextlib.suppress(KeyError):  # another instance reports it now
                    self.metrics.requests_backlog.remove(str(tp.partition))

    # -- agents ------------------------------------------------------------------------------

    async def _take_requests(self) -> None:
        """review-requests to the scheduler until the role stops (review/intake.py)."""
        await self._opened.wait()
        intake = RequestIntake(
            self.scheduler.take_requests,
            self.feed,
            self.scheduler.intake_positions,
            self.scheduler.positions_changed,
            room=self.scheduler.has_room,
            handling=functools.partial(self.supervisor.handling, "review-requests"),
        )
        self._intake_idle.clear()
        try:
            await intake.run(self._stop)
        finally:
            self._intake_idle.set()

    async def _on_loop_events(self, stream: Any) -> None:
        await self._opened.wait()
        async for event in stream.events():
            with self.supervisor.handling("loop-events"):
                message = event.message
                source = SourceRef(message.topic, message.partition, message.offset,
                                   message.key, _ms(message))  # fmt: skip
                await self.scheduler.take_loop_record(source, event.value)

    async def _send_keyed(self, topic: Any, key: bytes | None, value: bytes) -> None:
        delivered = await topic.send(key=key, value=value)
        await delivered

    async def _send_to(
        self, topic: str, partition: int, key: bytes, value: bytes | None
    ) -> Awaitable[object]:
        """Hand a record to the producer; the result completes once it is acknowledged."""
        delivered: Awaitable[object] = await self.app.producer.send(
            topic, key, value, partition, None, None
        )
        return delivered

    # -- watchers, reconciler, monitor -------------------------------------------------------

    async def emit(self, event: LoopEvent) -> None:
        """Forward a loop event, keyed by the review's first name (waits for the ack)."""
        key = first_name_of(event.name).encode()
        delivered = await self.loop_events.send(key=key, value=event.to_json())
        await delivered
        self.metrics.watcher_forwarded(event.source.value, event.event_time_s, self.clock())

    async def _check(self, name: str, source: EventSource) -> None:
        await self.reconciler.report_if_finished(name, source=source)

    def _signal_task(self, each: Signal) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self._opened.wait()
            await each.run(self._stop)

        return run

    async def _every(self, interval_s: float, sweep: Callable[[], Awaitable[None]]) -> None:
        """Run ``sweep`` every ``interval_s`` once the backend is open, until shutdown."""
        await self._opened.wait()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval_s)
            if not self._stop.is_set():
                await sweep()

    async def _reconcile_loop(self) -> None:
        await self._every(self.settings.watchers.reconcile_interval_s, self._reconcile)

    async def _reconcile(self) -> None:
        async with self._sweeping:
            if self._stop.is_set():
                return
            await self.reconciler.sweep()
        self.supervisor.beat("reconciler")

    async def _monitor_loop(self) -> None:
        await self._every(self.settings.review.monitor_interval_s, self._monitor)

    async def _monitor(self) -> None:
        """One pass of the monitor; a Kafka error is a failed beat (the next pass tries again)."""
        try:
            await self.monitor.measure()
        except (KafkaError, UpstreamError) as exc:  # the broker is unwell: the next pass tries
            reason = str(exc)  # aiokafka's errors start with their class name
            logger.warning("review monitor failed: %s", reason)
            self.supervisor.failed("monitor", reason)
            return
        self.supervisor.beat("monitor")


async def _bounded(waiting: Awaitable[object], timeout_s: float) -> None:
    """Await ``waiting`` for up to ``timeout_s`` (a timeout is raised: a failed step)."""
    await asyncio.wait_for(waiting, timeout_s)


async def _step(what: str, closing: Awaitable[None]) -> None:
    """Await one step of the shutdown; its failure is logged, not raised (a cancellation of
    the caller still is). aiokafka's close can end in a stray ``CancelledError`` of its own
    when no broker answers (``stream_router.kafka_clients``): that is a failure here."""
    task = asyncio.ensure_future(closing)
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.cancelled():
        logger.warning("stopping %s was cancelled inside the Kafka client; going on", what)
    elif task.exception() is not None:
        logger.warning("stopping %s failed (%r); going on", what, task.exception())


def run_worker(service: ReviewService, *, extra_tasks: list[Any] | None = None) -> None:
    """Run the faust worker in the foreground until SIGTERM/SIGINT (blocking)."""
    for index, task in enumerate(extra_tasks or []):
        service.task(getattr(task, "__qualname__", f"extra-task-{index}"), task)
    worker = faust.Worker(
        service.app,
        loglevel=service.settings.logging.level.lower(),
        quiet=True,
        override_logging=False,
    )
    worker.spinner = None  # it writes terminal escapes to stderr, a log file or not
    # A death stops the worker as SIGTERM would (drain, flush, leave the group) ...
    service.supervisor.on_death = lambda: worker._schedule_shutdown(signal.SIGTERM)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if service.supervisor.deaths and not exc.code:
            # ... and the process exits non-zero, so the orchestrator restarts it.
            raise SystemExit(EXIT_DIED) from None
        raise


def _ms(message: Any) -> int | None:
    """A faust message's timestamp (epoch seconds, a float) in epoch milliseconds."""
    return None if message.timestamp is None else int(message.timestamp * 1000)
