"""Running a role: build everything from settings, validate, serve metrics, run until SIGTERM.

- ``ingest``: the hot path on aiokafka (``run_role``, asyncio);
- ``review``: the review application on faust (``run_review_role``, faust's worker);
- ``all``: both in one process, ingest as a task of the faust worker (small installs).

Policies are built (and so validated) before the first event is consumed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

from prometheus_client import CollectorRegistry, start_http_server

from stream_router.errors import ConfigError
from stream_router.ingest.loop import Ingest
from stream_router.metrics import IngestMetrics
from stream_router.policies.routes import Routes
from stream_router.settings import MetricsSettings, Settings

logger = logging.getLogger(__name__)

ROLES = ("ingest", "review", "all")


def build_ingest(settings: Settings, registry: CollectorRegistry) -> Ingest:
    """The ingest service for these settings; raises ConfigError for a bad policy."""
    routes = Routes(settings.policies)
    return Ingest(settings.kafka, settings.ingest, routes, IngestMetrics(registry))


def serve_metrics(settings: MetricsSettings, registry: CollectorRegistry) -> object | None:
    if not settings.enabled:
        return None
    server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    logger.info("metrics on http://%s:%d/metrics", settings.host, server.server_port)
    return server


def run_review_role(settings: Settings, role: str) -> None:
    """Run ``review`` or ``all`` in the foreground (blocking) until SIGTERM/SIGINT."""
    from stream_router.metrics import ReviewMetrics  # noqa: PLC0415
    from stream_router.review.app import ReviewService, run_worker  # noqa: PLC0415

    if role not in ("review", "all"):
        raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    registry = CollectorRegistry()
    service = ReviewService(settings, ReviewMetrics(registry))
    extra = []
    if role == "all":
        Routes(settings.policies)  # fail now on a bad policy, before the worker starts

        async def run_ingest() -> None:
            ingest = build_ingest(settings, registry)  # aiokafka wants the running loop
            await ingest.start()
            try:
                await ingest.run(service.stopping)
            finally:
                await ingest.stop()

        extra.append(run_ingest)
    serve_metrics(settings.metrics, registry)
    run_worker(service, extra_tasks=extra)


async def run_role(settings: Settings, role: str, stop: asyncio.Event | None = None) -> None:
    if role != "ingest":
        raise ConfigError(f"role {role!r} runs with run_review_role; expected ingest here")
    registry = CollectorRegistry()
    ingest = build_ingest(settings, registry)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = serve_metrics(settings.metrics, registry)
    await ingest.start()
    try:
        await ingest.run(stop)
        logger.info("stopping: the batch in hand is finished and committed")
    finally:
        await ingest.stop()
        if server is not None:
            with suppress(Exception):
                server.shutdown()  # type: ignore[attr-defined]
