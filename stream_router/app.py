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
``/readyz`` and takes the process down with exit code 1, so the orchestrator restarts it (one
``stream_router.supervision.Supervisor`` per process, whichever the role).

Shutdown is bounded even when no broker answers: ingest gives the batches in hand
``ingest.drain_timeout_s``, then stops without committing them (their records are consumed
again after the restart, at-least-once, and the log says so), and closing each Kafka client
takes at most ``kafka_clients.CLOSE_TIMEOUT_S`` more (:func:`shutdown_bound_s`). Every path
that built an ingest closes its clients, a failed start too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry

from stream_router.errors import ConfigError
from stream_router.health import HealthServer, ingest_check
from stream_router.ingest.loop import Ingest
from stream_router.kafka_clients import CLOSE_TIMEOUT_S
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.settings import MetricsSettings, Settings
from stream_router.supervision import EXIT_DIED, Supervisor
from stream_router.topics import check_topics

logger = logging.getLogger(__name__)

ROLES = ("ingest", "review", "all")


def shutdown_bound_s(settings: Settings) -> float:
    """The longest ingest's shutdown takes after SIGTERM: the drain, then closing two clients."""
    return settings.ingest.drain_timeout_s + 2 * CLOSE_TIMEOUT_S


def build_ingest(settings: Settings, registry: CollectorRegistry) -> Ingest:
    """The ingest service for these settings; raises ConfigError for a bad policy."""
    routes = Routes(settings.policies)
    return Ingest(settings.kafka, settings.ingest, routes, IngestMetrics(registry))


async def serve(
    settings: MetricsSettings, registry: CollectorRegistry, supervisor: Supervisor
) -> HealthServer | None:
    """Start the HTTP endpoints on the running loop (none when metrics are disabled)."""
    if not settings.enabled:
        return None
    server = HealthServer(supervisor, registry, settings.host, settings.port)
    await server.start()
    return server


async def run_role(settings: Settings, role: str, stop: asyncio.Event | None = None) -> None:
    if role != "ingest":
        raise ConfigError(f"role {role!r} runs with run_review_role; expected ingest here")
    registry = CollectorRegistry()
    ingest = build_ingest(settings, registry)
    stall_after_s = settings.ingest.stall_after_s
    supervisor = Supervisor(stall_after_s)
    supervisor.add_check("ingest", ingest_check(ingest, stall_after_s))
    stop = stop or asyncio.Event()

    def on_signal() -> None:
        supervisor.stopping = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    server: HealthServer | None = None
    try:
        server = await serve(settings.metrics, registry, supervisor)
        await check_topics(settings, role)  # readiness meanwhile: nothing assigned yet
        await ingest.start()
        await supervisor.run("ingest", ingest.run(stop), until_shutdown=True)
        if supervisor.deaths:
            raise SystemExit(EXIT_DIED)
    finally:
        try:
            await ingest.stop()  # whatever start reached, even nothing
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

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, supervisor: Supervisor
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.supervisor = supervisor
        self.ingest: Ingest | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        supervisor.add_check("ingest", self._check)

    def _check(self) -> str | None:
        if self.ingest is None:
            return "not started"
        return ingest_check(self.ingest, self.settings.ingest.stall_after_s)()

    async def run(self) -> None:
        try:
            self.ingest = ingest = build_ingest(self.settings, self.registry)  # on the loop
            try:
                await ingest.start()
                await ingest.run(self._stop)
            finally:
                await ingest.stop()
        finally:
            self._done.set()

    async def drain(self, *_: Any, **__: Any) -> None:
        """Stop fetching and wait until the batch in hand is committed and the clients closed
        (``Ingest.run`` and ``Ingest.stop`` bound both; see the module docstring)."""
        self.supervisor.stopping = True
        self._stop.set()
        if self.ingest is None:
            return  # never started: nothing in hand
        bound = shutdown_bound_s(self.settings) + CLOSE_TIMEOUT_S  # run and stop bound it first
        try:
            await asyncio.wait_for(self._done.wait(), bound)
        except TimeoutError:
            logger.warning(
                "ingest did not stop within %.0f s; the worker stops anyway (what was not "
                "committed is consumed again after the restart)",
                bound,
            )


def run_review_role(settings: Settings, role: str) -> None:
    """Run ``review`` or ``all`` in the foreground (blocking) until SIGTERM/SIGINT."""
    from stream_router.metrics import ReviewMetrics  # noqa: PLC0415
    from stream_router.review_role import ReviewService, run_worker  # noqa: PLC0415

    if role not in ("review", "all"):
        raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    registry = CollectorRegistry()
    service = ReviewService(settings, ReviewMetrics(registry, settings.review.backend.name))
    supervisor = service.supervisor
    app = service.app
    # The review service supervises its agents and tasks, and the extra tasks given to the
    # worker: a death is in its readiness problem, and the worker then exits non-zero.
    supervisor.add_check("worker", lambda: "stopping" if app.should_stop else None)
    supervisor.add_check("review", service.readiness_problem, reports_deaths=True)
    extra: list[Callable[[], Awaitable[None]]] = []
    if role == "all":
        Routes(settings.policies)  # fail now on a bad policy, before the worker starts
        embedded = EmbeddedIngest(settings, registry, supervisor)
        app.on_before_shutdown.connect(embedded.drain)

        async def ingest() -> None:
            await embedded.run()

        ingest.__qualname__ = "ingest"  # the name its supervisor reports
        extra.append(ingest)
    # The worker runs this loop: the endpoints answer from it from start-up to exit.
    loop = app.loop
    server: HealthServer | None = None
    try:
        server = loop.run_until_complete(serve(settings.metrics, registry, supervisor))
        loop.run_until_complete(check_topics(settings, role))  # readiness meanwhile: starting
        loop.run_until_complete(service.prepare())
    except BaseException:
        loop.run_until_complete(service.close())  # what prepare opened (its reader, backend)
        if server is not None:
            loop.run_until_complete(server.stop())
        raise
    run_worker(service, extra_tasks=extra)
