"""Running a role: build everything from settings, validate, serve HTTP, run until SIGTERM.

- ``ingest``: the hot path on aiokafka (``run_role``, asyncio);
- ``review``: the review application on faust (``run_review_role``, faust's worker);
- ``all``: both in one process, ingest as a task of the faust worker (small installs).

Policies are built (and so validated) before the first event is consumed, and the role's topics
are checked (``stream_router.topics.check_topics``: reachable cluster, topics exist, the review
role's partition counts and retention) before a client starts. Every role serves
``/metrics``, ``/healthz`` and ``/readyz`` (see ``stream_router.health``) from its own event
loop. SIGTERM drains: ingest stops fetching, finishes, produces and commits the batch in hand
(under ``all`` before the faust worker stops). A background task that dies is reported by
``/readyz`` and takes the process down with exit code 1, so the orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry

from stream_router.errors import ConfigError
from stream_router.health import Health, HealthServer, TaskDied, ingest_check
from stream_router.ingest.loop import Ingest
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.settings import MetricsSettings, Settings
from stream_router.topics import check_topics

logger = logging.getLogger(__name__)

ROLES = ("ingest", "review", "all")
EXIT_TASK_DIED = 1
DRAIN_TIMEOUT_S = 60.0


def build_ingest(settings: Settings, registry: CollectorRegistry) -> Ingest:
    """The ingest service for these settings; raises ConfigError for a bad policy."""
    routes = Routes(settings.policies)
    return Ingest(settings.kafka, settings.ingest, routes, IngestMetrics(registry))


async def serve(
    settings: MetricsSettings, registry: CollectorRegistry, health: Health
) -> HealthServer | None:
    """Start the HTTP endpoints on the running loop (none when metrics are disabled)."""
    if not settings.enabled:
        return None
    server = HealthServer(health, registry, settings.host, settings.port)
    await server.start()
    return server


async def run_role(settings: Settings, role: str, stop: asyncio.Event | None = None) -> None:
    if role != "ingest":
        raise ConfigError(f"role {role!r} runs with run_review_role; expected ingest here")
    registry = CollectorRegistry()
    ingest = build_ingest(settings, registry)
    health = Health()
    health.add_check("ingest", ingest_check(ingest, settings.ingest.stall_after_s))
    stop = stop or asyncio.Event()

    def on_signal() -> None:
        health.stopping = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    server = await serve(settings.metrics, registry, health)
    try:
        await check_topics(settings, role)  # readiness meanwhile: nothing assigned yet
        await ingest.start()
        try:
            await health.supervise("ingest", ingest.run(stop))
            logger.info("stopping: the batch in hand is finished and committed")
        finally:
            await ingest.stop()
    except TaskDied:
        raise SystemExit(EXIT_TASK_DIED) from None
    finally:
        if server is not None:
            await server.stop()


class EmbeddedIngest:
    """Ingest as a task of the faust worker (role ``all``), drained before the worker stops.

    The review service supervises ``run`` like its own tasks (its death stops the process).

    faust cancels its tasks once its shutdown signal has been handled, so ``drain`` is
    connected to that signal: it stops fetching and waits until the batch in hand is
    produced and committed and the ingest has left the group.
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry, health: Health) -> None:
        self.settings = settings
        self.registry = registry
        self.health = health
        self.ingest: Ingest | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        health.add_check("ingest", self._check)

    def _check(self) -> str | None:
        if self.ingest is None:
            return "not started"
        return ingest_check(self.ingest, self.settings.ingest.stall_after_s)()

    async def run(self) -> None:
        try:
            self.ingest = ingest = build_ingest(self.settings, self.registry)  # on the loop
            await ingest.start()
            try:
                await ingest.run(self._stop)
                logger.info("stopping: the batch in hand is finished and committed")
            finally:
                await ingest.stop()
        finally:
            self._done.set()

    async def drain(self, *_: Any, **__: Any) -> None:
        self.health.stopping = True
        self._stop.set()
        if self.ingest is None:
            return  # never started: nothing in hand
        try:
            await asyncio.wait_for(self._done.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            logger.warning("ingest did not drain within %.0f s; stopping anyway", DRAIN_TIMEOUT_S)


def run_review_role(settings: Settings, role: str) -> None:
    """Run ``review`` or ``all`` in the foreground (blocking) until SIGTERM/SIGINT."""
    from stream_router.metrics import ReviewMetrics  # noqa: PLC0415
    from stream_router.review.app import ReviewService, run_worker  # noqa: PLC0415

    if role not in ("review", "all"):
        raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    registry = CollectorRegistry()
    service = ReviewService(settings, ReviewMetrics(registry, settings.review.backend))
    health = Health()
    app = service.app
    # The review service supervises its agents and tasks, and the extra tasks given to the
    # worker: a death is in its readiness problem, and the worker then exits non-zero.
    health.add_check("worker", lambda: "stopping" if app.should_stop else None)
    health.add_check("review", service.readiness_problem)
    extra: list[Callable[[], Awaitable[None]]] = []
    if role == "all":
        Routes(settings.policies)  # fail now on a bad policy, before the worker starts
        embedded = EmbeddedIngest(settings, registry, health)
        app.on_before_shutdown.connect(embedded.drain)

        async def ingest() -> None:
            await embedded.run()

        ingest.__qualname__ = "ingest"  # the name its supervisor reports
        extra.append(ingest)
    # The worker runs this loop: the endpoints answer from it from start-up to exit.
    app.loop.run_until_complete(serve(settings.metrics, registry, health))
    app.loop.run_until_complete(check_topics(settings, role))  # readiness meanwhile: starting
    app.loop.run_until_complete(service.prepare())
    run_worker(service, extra_tasks=extra)
