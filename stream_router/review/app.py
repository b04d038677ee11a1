"""The review application on faust-streaming: agents, tables, watchers, reconciler and audit.

The only module that imports faust. It wires the parts of ``review/`` together::

    review-requests ──► review-requests agent ──► ReviewFlow.request  (review/flow.py)
    watchers (SQS: EventBridge, S3 output) and the reconciler ──► loop-events
    loop-events ──► loop-events agent ──► ReviewFlow.loop_event
    the request audit re-sends requests committed but never handled     (review/audit.py)

Everything about one review is keyed by its first name (``naming.first_name_of``): requests,
loop events and ledger entries of every attempt share a partition, so one worker owns them.
Finished reviews stay in the ledger as closed entries for ``review.ledger_retention_s``, so a
late or repeated loop event publishes nothing new, and the audit knows which requests were
handled.

The rate limiter is per process: give each review instance its share of the account's quota.
Budgets are kept per review-requests partition in the ``budgets`` table, each partition
spending its share of the route's limits, so a restart or a rebalance keeps the counts and
several instances never spend more than the limits together (see ``review/shares.py``).

Every agent and task runs under a :class:`~stream_router.review.supervision.Supervisor`: an
exception no typed disposition handles is logged, reported by :meth:`ReviewService.
readiness_problem` and stops the worker, and :func:`run_worker` exits with
:data:`EXIT_DIED` so the orchestrator restarts the process (faust's supervisor never sees it, so
it never restarts an agent in place). Malformed records on the internal topics (review-requests,
loop-events) are such exceptions: only stream_router writes them, so one that does not parse is
a bug or a version skew that must be seen, not dead-lettered out of sight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError

from stream_router.aws.a2i import A2IReviewBackend
from stream_router.aws.clients import AwsClients, AwsEndpoints
from stream_router.metrics import ReviewMetrics
from stream_router.naming import first_name_of
from stream_router.review.audit import RequestAudit
from stream_router.review.backend import ReviewBackend
from stream_router.review.budget import Budget, BudgetLimits
from stream_router.review.completion import Completer
from stream_router.review.events import LoopEvent
from stream_router.review.flow import Outlets, ReviewFlow
from stream_router.review.limiter import RateLimiter
from stream_router.review.reconciler import Reconciler
from stream_router.review.shares import PartitionBudgets
from stream_router.review.starter import Starter
from stream_router.review.supervision import Supervisor, retry_upstream
from stream_router.settings import KafkaSettings, Settings
from stream_router.watchers.sqs import PollErrors, SqsWatcher, WatcherCounts, sqs_watchers

logger = logging.getLogger(__name__)

EXIT_DIED = 1  #: exit code when an agent or task died


def faust_app(settings: Settings) -> faust.App:
    kafka, review = settings.kafka, settings.review
    return faust.App(
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
        web_enabled=False,
        autodiscover=False,
    )


def _credentials(kafka: KafkaSettings) -> Any:
    options = kafka.client_options()
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
        settings.watchers.check_for_review()
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        review = settings.review
        self.clients = AwsClients(
            AwsEndpoints(
                region=settings.aws.region,
                endpoint_urls=settings.aws.endpoint_urls(),
                access_key_id=_secret(settings.aws.access_key_id),
                secret_access_key=_secret(settings.aws.secret_access_key),
                max_attempts=settings.aws.max_attempts,
            )
        )
        self.backend: Any = backend or A2IReviewBackend(
            self.clients, content_classifiers=review.content_classifiers
        )
        limits = {
            route: BudgetLimits(per_hour=b.per_hour, per_day=b.per_day)
            for route, b in review.budgets.items()
        }
        self.limiter = RateLimiter(review.rate_per_s, review.burst)
        self._stop = asyncio.Event()
        self._opened = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}  # first name -> its loop events, one at a time
        self.supervisor = Supervisor(review.stall_after_s, monotonic=monotonic)

        self.app = app = faust_app(settings)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}  # fmt: skip
        self.requests = app.topic(settings.ingest.review_requests_topic, **raw)
        self.loop_events = app.topic(review.loop_events_topic, **raw)
        self.output = app.topic(settings.ingest.output_topic, **raw)
        self.dead_letter = app.topic(settings.ingest.dead_letter_topic, **raw)
        self.ledger = app.Table(
            "ledger",
            default=None,
            partitions=review.topic_partitions,
            key_type=str,  # values are JSON objects (the app's default value serializer)
        )
        budget_table = app.Table(
            "budgets", default=None, partitions=review.topic_partitions, key_type=str
        )
        self.budgets = PartitionBudgets(
            limits, limits.pop("*", BudgetLimits()), review.topic_partitions, budget_table
        )
        for route in self.budgets.low_limits():
            logger.warning(
                "the budget of route %s is below review.topic_partitions (%d): partitions "
                "whose share is zero always apply the fallback",
                route,
                review.topic_partitions,
            )
        self.flow = flow = ReviewFlow(
            review,
            backend=self.backend,
            starter=Starter(
                self.backend, self.limiter, Budget({}), projection=list(review.projection)
            ),
            completer=Completer(self.backend, review, clock=clock),
            ledger=self.ledger,
            budgets=self.budgets,
            outlets=Outlets(
                output=functools.partial(self._send_keyed, self.output),
                dead_letter=functools.partial(self._send_keyed, self.dead_letter),
                requests=functools.partial(self._send_keyed, self.requests),
                loop_events=self.emit,
            ),
            metrics=metrics,
            supervisor=self.supervisor,
            owned=self._owned_requests,
            stopping=lambda: app.should_stop or self._stop.is_set(),
            stop=self._stop,
            clock=clock,
        )
        app.on_partitions_assigned.connect(self._reassigned)
        app.agent(self.requests, name="review-requests", concurrency=review.concurrency)(
            self._agent("review-requests", self._on_requests)
        )
        app.agent(self.loop_events, name="loop-events", concurrency=review.concurrency)(
            self._agent("loop-events", self._on_loop_events)
        )
        self.task("open-backend", self._open_backend, required=False)
        self.audit = RequestAudit(
            settings.kafka,
            self.requests.get_topic_name(),
            review.app_id,
            known=lambda name: self.ledger.get(name) is not None,
            in_hand=flow.in_hand.__contains__,
            resend=functools.partial(self._send_keyed, self.requests),
            flush=self._flush_producer,
            # Ingest's clock stamps the records, this one prunes: a tenth of the retention
            # spare, so a skew between hosts never has the audit judge a record whose entry
            # was deleted.
            max_age_s=review.ledger_retention_s * 0.9,
            paused=lambda: app.rebalancing or app.in_recovery,
            clock=clock,
        )
        self.supervisor.heartbeat("request-audit", review.audit_interval_s)
        self.task("request-audit", self._audit_loop)
        self.reconciler = Reconciler(
            flow, metrics, grace_s=settings.watchers.reconcile_grace_s, clock=clock
        )
        if "reconciler" in settings.watchers.enabled:
            self.supervisor.heartbeat("reconciler", settings.watchers.reconcile_interval_s)
            self.task("reconciler", self._reconcile_loop)
        watchers = sqs_watchers(settings.watchers, self.clients, self.emit, self._poll_reporter)
        for watcher in watchers:
            self.supervisor.heartbeat(watcher.kind, float(settings.watchers.wait_time_s))
            self.task(watcher.kind, self._watch_task(watcher))
        app.on_before_shutdown.connect(self._close_backend)

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
        self.app.task(supervised)

    def readiness_problem(self) -> str | None:
        """None when the review role is ready, else a short reason (no payloads).

        Ready means: no agent or task died, the worker is not stopping, it has started and
        opened the review backend, it is not rebalancing or recovering its tables, it owns
        review partitions, every agent, watcher and the reconciler runs, and none is stalled
        (see ``stream_router.review.supervision`` for what stalled means).
        """
        supervisor = self.supervisor
        if supervisor.deaths:
            return supervisor.problem()
        app = self.app
        checks: list[tuple[Callable[[], object], str]] = [
            (self._stop.is_set, "stopping"),
            (
                lambda: not self._opened.is_set(),
                "starting: worker not started or review backend not open yet",
            ),
            (lambda: app.rebalancing, "rebalancing partitions"),
            (lambda: app.in_recovery, "recovering tables from their changelogs"),
            (lambda: not app.assignor.assigned_actives(), "no review partitions assigned"),
        ]
        for failing, reason in checks:
            if failing():
                return reason
        return supervisor.problem()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _open_backend(self) -> None:
        opener = getattr(self.backend, "open", None)
        if opener is not None:
            await opener()
        self._opened.set()

    async def _close_backend(self, *_: Any, **__: Any) -> None:
        self._stop.set()  # watchers and an embedded ingest finish what they hold
        closer = getattr(self.backend, "close", None)
        if closer is not None:
            await closer()

    # -- agents ------------------------------------------------------------------------------

    async def _on_requests(self, stream: Any) -> None:
        await self._opened.wait()
        async for event in stream.events():
            with self.supervisor.handling("review-requests"):
                request = orjson.loads(event.value)
                name = str(request["loop_name"])
                partition = event.message.partition
                await retry_upstream(
                    f"review request {name}",
                    functools.partial(self.flow.request, request, name, partition),
                )
                self.flow.prune(partition)

    async def _on_loop_events(self, stream: Any) -> None:
        await self._opened.wait()
        async for event in stream.events():
            loop_event = LoopEvent.from_json(event.value)
            first = first_name_of(loop_event.name)
            # Several actors take loop events at once; one review's events go one at a time.
            lock = self._locks.setdefault(first, asyncio.Lock())
            try:
                with self.supervisor.handling("loop-events"):
                    async with lock:
                        await retry_upstream(
                            f"loop event of {loop_event.name}",
                            functools.partial(
                                self.flow.loop_event,
                                first,
                                loop_event,
                                event.message.partition,
                            ),
                        )
                        self.flow.prune(event.message.partition)
            finally:
                if not lock.locked() and self._locks.get(first) is lock:
                    del self._locks[first]

    def _owned_requests(self) -> list[int]:
        """The review-requests partitions this instance owns (actively)."""
        topic = self.requests.get_topic_name()
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == topic)  # fmt: skip

    async def _reassigned(self, *_: Any, **__: Any) -> None:
        self.budgets.forget()  # counters of partitions now owned come from the table
        self.flow.forget_closed()

    async def _flush_producer(self) -> None:
        """Wait until every record sent so far (the tables' changelogs too) is acknowledged."""
        await self.app.producer.flush()

    async def _send_keyed(self, topic: Any, key: bytes | None, value: bytes) -> None:
        delivered = await topic.send(key=key, value=value)
        await delivered

    # -- watchers and reconciler -------------------------------------------------------------

    async def emit(self, event: LoopEvent) -> None:
        """Forward a loop event, keyed by the review's first name (waits for the ack)."""
        key = first_name_of(event.name).encode()
        delivered = await self.loop_events.send(key=key, value=event.to_json())
        await delivered
        self.metrics.watcher_forwarded(event.source.value, event.event_time_s, self.clock())

    def _poll_reporter(self, watcher: str) -> Callable[[WatcherCounts], None]:
        """After each poll: count its errors; only a clean poll is progress (metric, readiness)."""
        new_errors = PollErrors()

        def report(counts: WatcherCounts) -> None:
            if self.metrics.watcher_polled(watcher, new_errors(counts), self.clock()):
                self.supervisor.beat(watcher)

        return report

    def _watch_task(self, watcher: SqsWatcher) -> Callable[[], Awaitable[None]]:
        async def watch() -> None:
            await self._opened.wait()
            await watcher.run(self._stop)

        return watch

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
        await self.reconciler.sweep()
        self.supervisor.beat("reconciler")

    async def _audit_loop(self) -> None:
        await self.audit.start()
        try:
            await self._every(self.settings.review.audit_interval_s, self._audit)
        finally:
            await self.audit.stop()

    async def _audit(self) -> None:
        """Re-send owned review requests committed but never handled (``review/audit.py``)."""
        if self.audit.paused():
            self.supervisor.beat("request-audit")  # the tables are not whole yet: wait
            return
        try:
            self.metrics.requests_recovered.inc(await self.audit.sweep(self._owned_requests()))
            await self.reconciler.resend_orphaned_holds()
        except KafkaError as exc:  # the broker is unwell: the next sweep tries again
            logger.warning("request audit failed: %s", exc)
            return
        self.metrics.audit_last_sweep.set(self.clock())
        self.supervisor.beat("request-audit")


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
    # A death stops the worker as SIGTERM would (drain, flush, leave the group) ...
    service.supervisor.on_death = lambda: worker._schedule_shutdown(signal.SIGTERM)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if service.supervisor.deaths and not exc.code:
            # ... and the process exits non-zero, so the orchestrator restarts it.
            raise SystemExit(EXIT_DIED) from None
        raise


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
