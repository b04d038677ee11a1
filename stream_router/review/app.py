"""The review application on faust-streaming: agents, the ledger table, watchers, reconciler.

The only module that imports faust. It wires the pure parts of ``review/`` together::

    review-requests ──► on_requests:  dedupe (ledger) → Starter → ledger entry
    watchers (SQS: EventBridge, S3 output) and the reconciler ──► loop-events
    loop-events ──► on_loop_events:   ledger → Completer → output / dead-letter / escalation

Everything about one review is keyed by its first name (``naming.first_name_of``): requests,
loop events and ledger entries of every attempt share a partition, so one worker owns them.
Finished reviews stay in the ledger as closed entries, so a late or repeated loop event
publishes nothing new.

With ``budget_fallback: hold`` a request over budget waits in its worker; its ledger entry
says it is held (attempt and flow, an escalation too). On shutdown the worker hands it back to
review-requests, and the reconciler of the partition's owner re-sends any held request no
worker holds, since a copy can be lost across a restart (see ``_resend_orphaned_holds``).

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
import base64
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError

from stream_router.aws.a2i import A2IReviewBackend
from stream_router.aws.clients import AwsClients, AwsEndpoints
from stream_router.envelope import review_dead_letter
from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewRejected,
    ReviewThrottled,
    UpstreamError,
)
from stream_router.metrics import ReviewMetrics
from stream_router.naming import attempt_name, first_name_of
from stream_router.review.audit import RequestAudit
from stream_router.review.backend import ReviewBackend, ReviewStatus
from stream_router.review.budget import Budget, BudgetLimits
from stream_router.review.completion import Action, Completer, Completion
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import LedgerEntry
from stream_router.review.limiter import RateLimiter
from stream_router.review.outcome import UnreviewedCode, unreviewed_envelope
from stream_router.review.shares import PartitionBudgets
from stream_router.review.starter import StartDecision, Starter, StartResult
from stream_router.review.supervision import Supervisor, retry_upstream
from stream_router.settings import KafkaSettings, Settings
from stream_router.watchers.sqs import (
    EventBridgeSqsWatcher,
    PollErrors,
    S3OutputSqsWatcher,
    SqsWatcher,
    WatcherCounts,
)

logger = logging.getLogger(__name__)

CAPACITY_RETRY_S = 5.0
EXIT_DIED = 1  #: exit code when an agent or task died
OUTPUT_UNREADABLE = "OutputUnreadable"  #: dead-letter reason: the review's output cannot be read


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
        topic_replication_factor=1,
        producer_acks=-1,
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
        self.starter = Starter(
            self.backend, self.limiter, Budget({}), projection=list(review.projection)
        )
        self.completer = Completer(self.backend, review, clock=clock)
        self.in_flight = 0
        self._capacity = asyncio.Condition()
        self._stop = asyncio.Event()
        self._opened = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: set[str] = set()  # first names this process holds over budget
        self._in_hand: set[str] = set()  # first names whose request an actor is handling
        self._nudged: dict[str, float] = {}  # first name -> when the sweep last re-sent it
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
            in_hand=self._in_hand.__contains__,
            resend=functools.partial(self._send_keyed, self.requests),
        )
        self.supervisor.heartbeat("request-audit", review.audit_interval_s)
        self.task("request-audit", self._audit_loop)
        if "reconciler" in settings.watchers.enabled:
            self.supervisor.heartbeat("reconciler", settings.watchers.reconcile_interval_s)
            self.task("reconciler", self._reconcile_loop)
        for watcher in self._watchers():
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

    # -- review requests ---------------------------------------------------------------------

    async def _on_requests(self, stream: Any) -> None:
        await self._opened.wait()
        async for event in stream.events():
            with self.supervisor.handling("review-requests"):
                request = orjson.loads(event.value)
                name = str(request["loop_name"])
                await retry_upstream(
                    f"review request {name}",
                    functools.partial(self._request, request, name, event.message.partition),
                )

    async def _request(self, request: Mapping[str, Any], name: str, partition: int) -> None:
        if name in self._in_hand:
            return  # a copy (handed back, or re-sent by the audit) of a request in hand here
        self._in_hand.add(name)
        try:
            data = self.ledger.get(name)
            if data is None:
                await self._start(request, name, 1, str(request["review_flow"]), partition)
            elif data.get("held") and name not in self._held:  # a held request handed back
                self._held.add(name)
                try:
                    await self._start(
                        request, name, int(data["attempt"]), str(data["flow"]), partition
                    )
                finally:
                    self._held.discard(name)
            # else redelivered: started (or finished) already, or held by this process
        finally:
            self._in_hand.discard(name)

    def _owned_requests(self) -> list[int]:
        """The review-requests partitions this instance owns (actively)."""
        topic = self.requests.get_topic_name()
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == topic)  # fmt: skip

    async def _reassigned(self, *_: Any, **__: Any) -> None:
        self.budgets.forget()  # counters of partitions now owned come from the table

    async def _start(
        self, request: Mapping[str, Any], first: str, attempt: int, flow: str, partition: int
    ) -> None:
        """Start a review; ``partition`` (of the event in hand) decides whose budget pays."""
        review = self.settings.review
        name = attempt_name(first, attempt)
        route = str(request["route"])
        budget = self.budgets.budget(partition)
        while True:
            async with self._capacity:
                with self.supervisor.waiting():
                    await self._capacity.wait_for(lambda: self.in_flight < review.max_in_flight)
            try:
                result = await self.starter.start(
                    request, name=name, flow=flow, attempt=attempt, budget=budget
                )
            except ReviewCapacityExceeded:
                self.metrics.capacity_waits.inc()
                logger.warning("open-reviews quota reached; pausing starts")
                await self._wait_for_capacity()
                continue
            except ReviewThrottled:
                self.metrics.start_throttled.inc()
                continue  # the limiter is paused already; try again
            finally:
                self.budgets.save(partition)
            break
        self.metrics.start_throttled.inc(result.throttled)
        self.metrics.start_outcomes.labels(route, result.decision.value).inc()
        now = self.clock()
        owned = self._owned_requests() or [partition]
        for window, left in self.budgets.remaining(route, now, owned).items():
            if left is not None:
                self.metrics.budget_remaining.labels(route, window).set(left)
        if result.decision in (StartDecision.STARTED, StartDecision.ALREADY_STARTED):
            entry = LedgerEntry(
                name=name,
                first_name=first,
                route=route,
                flow=flow,
                attempt=attempt,
                started_s=now,
                deadline_s=now + review.review_deadline_s,
                request=request,
            )
            self.ledger[first] = entry.to_dict()
            self.in_flight += 1
            self.metrics.in_flight.set(self.in_flight)
            if result.decision is StartDecision.ALREADY_STARTED:
                await self._report_if_finished(name)
            return
        await self._not_started(request, first, result, partition)

    async def _not_started(
        self, request: Mapping[str, Any], first: str, result: StartResult, partition: int
    ) -> None:
        review = self.settings.review
        if result.decision is StartDecision.OVER_BUDGET and review.budget_fallback == "hold":
            route = str(request["route"])
            until = self.budgets.budget(partition).available_at_s(route, self.clock())
            if until is not None:
                logger.info("budget of %s spent: holding review requests", route)
                # The ledger keeps what is held (an escalation too: its previous entry is
                # closed already), so a copy handed back or lost still gets started later.
                self.ledger[first] = {"held": True, "attempt": result.attempt,
                                      "flow": result.flow, "partition": partition,
                                      "held_s": self.clock(), "request": dict(request)}  # fmt: skip
                self._held.add(first)
                try:
                    with self.supervisor.waiting():
                        stopping = await self._hold(until)
                    if not stopping:
                        await self._start(request, first, result.attempt, result.flow, partition)
                    else:  # hand it back: acking it unstarted would lose it
                        await self._hand_back(first, request)
                        logger.info("stopping: held review request %s handed back to Kafka", first)
                finally:
                    self._held.discard(first)
                return
        reason = result.reason or result.decision.value
        code = {
            StartDecision.OVER_BUDGET: UnreviewedCode.BUDGET_EXHAUSTED.value,
            StartDecision.OVERSIZE: UnreviewedCode.INPUT_TOO_LARGE.value,
        }.get(result.decision, result.decision.value)
        accept = (
            result.decision is StartDecision.OVER_BUDGET
            and review.budget_fallback == "accept-unreviewed"
        ) or result.decision is StartDecision.OVERSIZE
        if result.decision is StartDecision.OVERSIZE:
            # As large as the event is, Kafka would refuse the envelope (and crash this agent):
            # the envelope leaves the event out; its ``source`` locates it in the input topic.
            request = {**request, "event": {}}
            reason += "; the event is left out of this envelope (see source)"
        if accept:
            record = unreviewed_envelope(
                request, failure_code=code, reason=reason, loop_name=result.name,
                review_flow=result.flow,
            )  # fmt: skip
            await self._send(self.output, request, record)
            outcome = "unreviewed"
        else:
            record = review_dead_letter(request, code, reason, self.clock())
            await self._send(self.dead_letter, request, record)
            outcome = "dead-lettered"
        self.metrics.outcomes.labels(outcome, "none", str(request["route"])).inc()
        self.ledger[first] = {"closed": True, "outcome": outcome, "closed_s": self.clock()}

    async def _hand_back(self, first: str, request: Mapping[str, Any]) -> None:
        """Send a held request to review-requests again (its ledger entry says how to start)."""
        await self._send_keyed(self.requests, first.encode(), orjson.dumps(request))

    async def _hold(self, until_s: float) -> bool:
        """Wait until ``until_s`` (epoch seconds); True if the worker began stopping first.

        faust sets ``should_stop`` before it waits for the events in hand, so a hold must end
        then or the worker never stops; the stop event of the service follows later.
        """
        while (left := until_s - self.clock()) > 0:
            if self.app.should_stop or self._stop.is_set():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(left, 1.0))
        return False

    async def _report_if_finished(self, name: str) -> None:
        """A review found already started may have ended long ago, its events long gone."""
        state = await self.backend.describe(name)
        if state is not None and state.status.terminal:
            await self.emit(
                LoopEvent(
                    state.name,
                    EventSource.RECONCILER,
                    state.status,
                    state.output_uri,
                    state.flow,
                    state.failure_code,
                    state.failure_reason,
                    self.clock(),
                    state.ended_at_s,
                )
            )

    async def _wait_for_capacity(self) -> None:
        async with self._capacity:
            before = self.in_flight
            try:
                with self.supervisor.waiting():
                    await asyncio.wait_for(
                        self._capacity.wait_for(lambda: self.in_flight < before), CAPACITY_RETRY_S
                    )
            except TimeoutError:
                logger.debug("no review ended within %.0f s; trying again", CAPACITY_RETRY_S)

    # -- loop events -------------------------------------------------------------------------

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
                                self._handle_loop_event,
                                first,
                                loop_event,
                                event.message.partition,
                            ),
                        )
            finally:
                if not lock.locked() and self._locks.get(first) is lock:
                    del self._locks[first]

    async def _handle_loop_event(self, first: str, loop_event: LoopEvent, partition: int) -> None:
        data = self.ledger.get(first)
        if data is None or data.get("closed") or data.get("held"):
            return  # unknown, handled already, or its next attempt waits for the budget
        entry = LedgerEntry.from_dict(data)
        if entry.name != loop_event.name:
            return  # about an earlier attempt
        try:
            completion = await self.completer.complete(loop_event, entry)
        except ReviewRejected as exc:  # its output is missing or unreadable: nothing to publish
            record = review_dead_letter(entry.request, OUTPUT_UNREADABLE, str(exc), self.clock())
            completion = Completion(Action.DEAD_LETTER, "dead-lettered", record)
        if completion.action is Action.WAIT:
            return
        status = loop_event.status.value if loop_event.status else "Completed"
        if completion.action is Action.PUBLISH and completion.record is not None:
            await self._send(self.output, entry.request, completion.record)
        elif completion.action is Action.DEAD_LETTER and completion.record is not None:
            await self._send(self.dead_letter, entry.request, completion.record)
        if loop_event.status is ReviewStatus.FAILED:
            self.metrics.failed.labels(loop_event.failure_code or "unknown").inc()
        self.metrics.outcomes.labels(completion.outcome, status, entry.route).inc()
        self.metrics.time_in_review.observe(max(0.0, self.clock() - entry.started_s))
        self.ledger[first] = {"closed": True, "outcome": completion.outcome,
                              "closed_s": self.clock(), "name": entry.name}  # fmt: skip
        await self._released()
        if completion.action is Action.ESCALATE and completion.next_flow:
            await self._start(
                entry.request, first, entry.attempt + 1, completion.next_flow, partition
            )
        elif self.settings.review.delete_finished:
            delete = getattr(self.backend, "delete", None)
            if delete is not None:
                await delete(entry.name)

    async def _released(self) -> None:
        async with self._capacity:
            self.in_flight = max(0, self.in_flight - 1)
            self.metrics.in_flight.set(self.in_flight)
            self._capacity.notify_all()

    async def _send(self, topic: Any, request: Mapping[str, Any], value: bytes) -> None:
        key = request.get("key")
        if isinstance(key, str) and request.get("key_encoding") == "base64":
            key_bytes: bytes | None = base64.b64decode(key)
        else:
            key_bytes = key.encode() if isinstance(key, str) else None
        await self._send_keyed(topic, key_bytes, value)

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

    def _watchers(self) -> list[SqsWatcher]:
        watchers_settings = self.settings.watchers
        watchers: list[SqsWatcher] = []
        if "eventbridge" in watchers_settings.enabled and watchers_settings.event_queue_url:
            watchers.append(
                EventBridgeSqsWatcher(
                    self.clients,
                    watchers_settings.event_queue_url,
                    self.emit,
                    wait_time_s=watchers_settings.wait_time_s,
                    on_poll=self._poll_reporter("eventbridge"),
                )
            )
        if "s3-output" in watchers_settings.enabled and watchers_settings.output_queue_url:
            watchers.append(
                S3OutputSqsWatcher(
                    self.clients,
                    watchers_settings.output_queue_url,
                    self.emit,
                    wait_time_s=watchers_settings.wait_time_s,
                    on_poll=self._poll_reporter("s3-output"),
                )
            )
        return watchers

    def _poll_reporter(self, watcher: str) -> Callable[[WatcherCounts], None]:
        """After each poll: count its errors; only a clean poll is progress (metric, readiness)."""
        new_errors = PollErrors()

        def report(counts: WatcherCounts) -> None:
            if self.metrics.watcher_polled(watcher, new_errors(counts), self.clock()):
                self.supervisor.beat(watcher)

        return report

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the worker begins to shut down."""
        return self._stop

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

    async def _audit_loop(self) -> None:
        await self.audit.start()
        try:
            await self._every(self.settings.review.audit_interval_s, self._audit)
        finally:
            await self.audit.stop()

    async def _audit(self) -> None:
        """Re-send owned review requests committed but never handled (``review/audit.py``)."""
        if self.app.rebalancing or self.app.in_recovery:
            self.supervisor.beat("request-audit")  # the tables are not whole yet: wait
            return
        try:
            self.metrics.requests_recovered.inc(await self.audit.sweep(self._owned_requests()))
        except KafkaError as exc:  # the broker is unwell: the next sweep tries again
            logger.warning("request audit failed: %s", exc)
            return
        self.metrics.audit_last_sweep.set(self.clock())
        self.supervisor.beat("request-audit")

    async def _reconcile(self) -> None:
        """Describe open reviews that are overdue or no longer listed as open; report ends."""
        try:
            await self._reconcile_once()
        except UpstreamError as exc:  # the backend is unwell: the next sweep tries again
            logger.warning("reconciler sweep failed: %s", exc)
        self.supervisor.beat("reconciler")

    async def _reconcile_once(self) -> None:
        now = self.clock()
        grace = self.settings.watchers.reconcile_grace_s
        items = [(str(key), data) for key, data in list(self.ledger.items()) if data is not None]
        await self._resend_orphaned_holds(items, now, grace)
        entries = [
            LedgerEntry.from_dict(data)
            for _, data in items
            if not data.get("closed") and not data.get("held")
        ]
        if not entries:
            self.metrics.watcher_last_poll.labels("reconciler").set(now)
            return
        open_names: set[str] = set()
        for flow in {entry.flow for entry in entries}:
            async for state in self.backend.pending(flow):
                open_names.add(state.name)
        for entry in entries:
            overdue = now >= entry.deadline_s
            vanished = entry.name not in open_names and now - entry.started_s >= grace
            if not (overdue or vanished):
                continue
            await self._report_if_finished(entry.name)
        self.metrics.watcher_last_poll.labels("reconciler").set(now)

    async def _resend_orphaned_holds(
        self, items: list[tuple[str, Mapping[str, Any]]], now: float, grace: float
    ) -> None:
        """Hand back again the held requests no worker holds (their copy may be lost).

        faust can drop records fetched while a worker finishes recovering its tables (and
        then commit past them), so a copy handed back on shutdown is not enough: the ledger
        entry is the record of a held request, and the owner of its partition re-sends it
        until it is started, once per ``grace``. Duplicates find the ledger and do nothing.
        """
        owned = set(self._owned_requests())
        held = {first: data for first, data in items if data.get("held")}
        self._nudged = {first: at for first, at in self._nudged.items() if first in held}
        for first, data in held.items():
            request = data["request"]
            if first in self._held or int(data["partition"]) not in owned:
                continue
            if now - max(float(data["held_s"]), self._nudged.get(first, 0.0)) < grace:
                continue
            self._nudged[first] = now
            await self._hand_back(first, request)
            logger.info("held review request %s was not held by any worker: handed back", first)


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
