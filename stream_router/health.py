"""The HTTP server that reports a role's liveness, readiness and metrics; the ingest's check.

Endpoints (on ``metrics.host``:``metrics.port``)::

    GET /metrics   Prometheus text format of the role's registry
    GET /healthz   200 {"status": "alive"}: answered by the role's event loop itself, so a
                   wedged loop gives no answer (the probe times out) rather than a false "alive"
    GET /readyz    200 {"status": "ready"}
                   503 {"status": "not ready", "problems": ["...", ...]}

Readiness is what the process's :class:`~stream_router.supervision.Supervisor` lists: dead
tasks first, then ``stopping`` after SIGTERM, then each failing named check.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream_router.errors import ConfigError
from stream_router.supervision import Check, Supervisor

logger = logging.getLogger(__name__)


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

    def unacknowledged_since(self) -> float | None:
        """Clock time the oldest batch still waiting for the brokers' acknowledgement was
        produced (None: none waits)."""
        ...


def ingest_check(
    ingest: Progress, stall_after_s: float, clock: Callable[[], float] = time.time
) -> Check:
    """Ready while the ingest owns partitions, completed a fetch within ``stall_after_s``,
    and a broker answered a fetch of each owned partition within ``stall_after_s``.

    A fetch completes even when it returns nothing, so an idle but healthy loop stays ready;
    a loop stuck (on the broker, on acknowledgements, or wedged) stops completing fetches. When
    it is stuck on acknowledgements (the brokers refuse writes: fewer replicas in sync than
    ``min.insync.replicas``), the problem says so.
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
        since = ingest.unacknowledged_since()
        unacknowledged = (
            f"Kafka at {ingest.brokers} has not acknowledged ingest's outputs for "
            f"{now - since:.0f} s (writes refused or unanswered: fewer replicas in sync than "
            "min.insync.replicas, or no leader); the producer keeps trying"
            if since is not None and now - since > stall_after_s
            else None
        )
        if idle > stall_after_s:
            stalled = f"no fetch completed for {idle:.0f} s (stall threshold {stall_after_s:g} s)"
            return stalled if unacknowledged is None else f"{stalled}: {unacknowledged}"
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
        return unacknowledged  # fetching goes on (nothing more to decide), writes unanswered

    return check


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on aiohttp, served by the running loop."""

    def __init__(
        self, supervisor: Supervisor, registry: CollectorRegistry, host: str, port: int
    ) -> None:
        self.supervisor = supervisor
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
        problems = self.supervisor.problems()
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
