"""Running a role: build everything from settings, validate, serve metrics, run until SIGTERM.

``ingest`` is available; ``review`` and ``all`` arrive with the review path.
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


async def run_role(settings: Settings, role: str, stop: asyncio.Event | None = None) -> None:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role != "ingest":
        raise ConfigError(f"role {role!r} is not available yet; run --role ingest")
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
