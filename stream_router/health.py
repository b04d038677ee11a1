"""Liveness and readiness of a role, and the HTTP server that reports them with the metrics.

Endpoints (on ``metrics.host``:``metrics.port``)::

    GET /metrics   Prometheus text format of the role's registry
    GET /healthz   200 {"status": "alive"}: answered by the role's event loop itself, so a
                   wedged loop gives no answer (the probe times out) rather than a false "alive"
    GET /readyz    200 {"status": "ready"}
                   503 {"status": "not ready", "problems": ["...", ...]}

Readiness is the sum of named checks (a check returns ``None`` when fine, or a short reason)
plus the background tasks registered with :meth:`Health.supervise`: a task that died makes the
role not ready (listed first) and its exception is re-raised, so the process exits non-zero and
the orchestrator restarts it (:class:`TaskDied`). After SIGTERM the role reports ``stopping``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream_router.errors import ConfigError, StreamRouterError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Check = Callable[[], str | None]


class TaskDied(StreamRouterError):
    """A supervised background task raised; the process must exit so it is restarted."""


class Progress(Protocol):
    """What the ingest check reads (``stream_router.ingest.loop.Ingest`` has all of it)."""

    assigned: asyncio.Event  # set while partitions are owned
    last_progress_s: float | None  # clock time of the last completed fetch

    @property
    def brokers(self) -> str:
        """The cluster's address, for messages (``kafka.bootstrap_servers``)."""
        ...

    def fetches_answered(self) -> dict[str, float]:
        """Clock time a broker last answered a fetch of each owned partition, by name."""
        ...


class Health:
    """Named readiness checks and supervised background tasks of one process."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._dead: dict[str, str] = {}
        self.stopping = False

    def add_check(self, name: str, check: Check) -> None:
        if name in self._checks:
            raise ValueError(f"a readiness check named {name!r} exists already; pick another")
        self._checks[name] = check

    async def supervise(self, name: str, work: Awaitable[T]) -> T:
        """Await ``work`` (a background task's body); if it raises, record the death first.

        A task that returns while the process is not stopping is recorded as dead too: it
        should have run until shutdown.
        """
        try:
            result = await work
        except Exception as exc:
            self.task_died(name, f"{type(exc).__name__}: {exc}", exc)
            raise TaskDied(f"background task {name} died: {exc!r}") from exc
        if not self.stopping:
            self.task_died(name, "ended before shutdown")
            raise TaskDied(f"background task {name} ended before shutdown")
        return result

    def task_died(self, name: str, reason: str, exc: BaseException | None = None) -> None:
        """Record a dead task (readiness lists it first) and log it with its traceback."""
        self._dead.setdefault(name, reason)
        logger.critical(
            "background task %s died (%s); the process stops so it can be restarted",
            name,
            reason,
            exc_info=exc,
            extra={"task": name},
        )

    def problems(self) -> list[str]:
        """Why the process is not ready; empty when it is. Dead tasks come first."""
        found = [f"task {name} died: {reason}" for name, reason in self._dead.items()]
        if self.stopping:
            found.append("stopping")
        for name, check in self._checks.items():
            try:
                reason = check()
            except Exception as exc:  # a broken check must not hide the others
                reason = f"check failed: {type(exc).__name__}: {exc}"
            if reason is not None:
                found.append(f"{name}: {reason}")
        return found


def ingest_check(
    ingest: Progress, stall_after_s: float, clock: Callable[[], float] = time.time
) -> Check:
    """Ready while the ingest owns partitions, completed a fetch within ``stall_after_s``,
    and a broker answered a fetch of each owned partition within ``stall_after_s``.

    A fetch completes even when it returns nothing, so an idle but healthy loop stays ready;
    a loop stuck (on the broker, on acknowledgements, or wedged) stops completing fetches.
    A completed fetch does not mean a broker answered, though: with no broker reachable the
    loop's fetches keep completing, empty, after their timeout. What a broker answered is
    what the Kafka client recorded of its background fetches (``Ingest.fetches_answered``),
    so an unreachable cluster, or a partition without a leader, stops the answers.
    """

    def check() -> str | None:
        if not ingest.assigned.is_set():
            return "no input partitions assigned"
        last = ingest.last_progress_s
        if last is None:
            return "no fetch completed yet"
        now = clock()
        idle = now - last
        if idle > stall_after_s:
            return f"no fetch completed for {idle:.0f} s (stall threshold {stall_after_s:g} s)"
        answered = ingest.fetches_answered()
        silent = sorted(name for name, at in answered.items() if now - at > stall_after_s)
        if silent:
            longest = now - min(answered[name] for name in silent)
            shown = ", ".join(silent[:3])
            if len(silent) > 3:
                shown += f" and {len(silent) - 3} more"
            return (
                f"Kafka at {ingest.brokers} answered no fetch of {shown} for {longest:.0f} s "
                f"(stall threshold {stall_after_s:g} s): the brokers are unreachable or these "
                "partitions have no leader"
            )
        return None

    return check


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on aiohttp, served by the running loop."""

    def __init__(self, health: Health, registry: CollectorRegistry, host: str, port: int) -> None:
        self.health = health
        self.registry = registry
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(port_taken("metrics", self.host, self.port, exc)) from exc
        address = self._runner.addresses[0]
        self.port = int(address[1])
        logger.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, _: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        problems = self.health.problems()
        if problems:
            return _json(503, {"status": "not ready", "problems": problems})
        return _json(200, {"status": "ready"})


def port_taken(setting: str, host: str, port: int, exc: OSError) -> str:
    """One line for an address that cannot be bound: the setting, what is wrong, the fix.

    ``setting`` is the dotted path of the settings section holding ``host`` and ``port`` (such
    as ``metrics``); the fix names them by path and by environment variable.
    """
    env = "STREAM_ROUTER_" + "__".join(part.upper() for part in setting.split("."))
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{setting}.port: another process listens on {host}:{port}; set {env}__PORT to a "
            "free port (0 picks any)"
        )
    return (
        f"{setting}.host/{setting}.port: cannot listen on {host}:{port} "
        f"({exc.strerror or exc}); set {env}__HOST to an address of this machine and "
        f"{env}__PORT to a free port"
    )


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
