"""The ingest's readiness check, and the HTTP endpoints on a loopback port."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, Counter

from stream_router.errors import ConfigError
from stream_router.health import HealthServer, ingest_check, port_taken
from stream_router.supervision import Supervisor


@dataclass
class FakeProgress:
    assigned: asyncio.Event = field(default_factory=asyncio.Event)
    last_progress_s: float | None = None
    brokers: str = "127.0.0.1:9092"
    answered: dict[str, float] = field(default_factory=dict)
    produced_s: float | None = None

    def fetches_answered(self) -> dict[str, float]:
        return dict(self.answered)

    def unacknowledged_since(self) -> float | None:
        return self.produced_s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ingest_check_follows_assignment_and_progress() -> None:
    progress, clock = FakeProgress(), Clock()
    check = ingest_check(progress, stall_after_s=30, clock=clock)
    assert check() == "no input partitions assigned"
    progress.assigned.set()
    assert check() == "no fetch completed yet"
    progress.last_progress_s = clock.now
    assert check() is None
    clock.now += 30
    assert check() is None  # at the threshold: still fine
    clock.now += 1
    assert check() == "no fetch completed for 31 s (stall threshold 30 s)"
    progress.last_progress_s = clock.now
    assert check() is None
    progress.assigned.clear()  # revoked
    assert check() == "no input partitions assigned"


def test_ingest_check_names_the_brokers_when_no_fetch_is_answered() -> None:
    """Empty fetches keep completing while no broker answers; the answers are what counts."""
    progress, clock = FakeProgress(), Clock()
    check = ingest_check(progress, stall_after_s=30, clock=clock)
    progress.assigned.set()
    progress.answered = {"in[0]": clock.now, "in[1]": clock.now}
    clock.now += 31
    progress.last_progress_s = clock.now  # the loop's fetches complete, empty
    assert check() == (
        "Kafka at 127.0.0.1:9092 answered no fetch of in[0], in[1] for 31 s (stall threshold "
        "30 s): the brokers are unreachable or these partitions have no leader"
    )
    progress.answered["in[0]"] = clock.now  # one partition's leader answers again
    assert check() is not None
    assert "of in[1] for 31 s" in str(check())
    progress.answered = {f"in[{p}]": clock.now - 40 - p for p in range(5)}
    assert "of in[0], in[1], in[2] and 2 more for 44 s" in str(check())
    progress.answered = {f"in[{p}]": clock.now - 30 for p in range(5)}
    assert check() is None  # at the threshold: still fine
    progress.last_progress_s = clock.now - 31  # the loop is stuck too: that is said first
    assert check() == "no fetch completed for 31 s (stall threshold 30 s)"


def test_ingest_check_says_when_the_loop_waits_for_acknowledgements() -> None:
    progress, clock = FakeProgress(), Clock()
    check = ingest_check(progress, stall_after_s=30, clock=clock)
    progress.assigned.set()
    progress.last_progress_s = progress.produced_s = clock.now
    clock.now += 30
    assert check() is None
    clock.now += 1
    assert check() == (
        "no fetch completed for 31 s (stall threshold 30 s): Kafka at 127.0.0.1:9092 has not "
        "acknowledged ingest's outputs for 31 s (writes refused or unanswered: fewer replicas "
        "in sync than min.insync.replicas, or no leader); the producer keeps trying"
    )
    progress.produced_s = clock.now - 5  # a young batch waits: the stall is not the brokers'
    assert check() == "no fetch completed for 31 s (stall threshold 30 s)"
    progress.last_progress_s = clock.now  # fetches complete (nothing more came to decide)...
    progress.produced_s = clock.now - 45  # ...while the one batch in hand is never answered
    assert check() == (
        "Kafka at 127.0.0.1:9092 has not acknowledged ingest's outputs for 45 s (writes refused "
        "or unanswered: fewer replicas in sync than min.insync.replicas, or no leader); the "
        "producer keeps trying"
    )


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Supervisor, CollectorRegistry, str]]:
    supervisor, registry = Supervisor(60), CollectorRegistry()
    server = HealthServer(supervisor, registry, "127.0.0.1", 0)
    await server.start()
    assert server.port != 0
    try:
        yield supervisor, registry, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def test_endpoints_over_http(served: tuple[Supervisor, CollectorRegistry, str]) -> None:
    supervisor, registry, base = served
    Counter("stream_router_test_things", "Things.", registry=registry).inc(3)
    progress = FakeProgress()
    supervisor.add_check("ingest", ingest_check(progress, stall_after_s=60))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as reply:
            assert (reply.status, await reply.json()) == (200, {"status": "alive"})
        async with http.get(f"{base}/readyz") as reply:
            assert reply.status == 503
            assert await reply.json() == {
                "status": "not ready",
                "problems": ["ingest: no input partitions assigned"],
            }
        progress.assigned.set()
        progress.last_progress_s = time.time()
        async with http.get(f"{base}/readyz") as reply:
            assert (reply.status, await reply.json()) == (200, {"status": "ready"})
        supervisor.died("ingest", RuntimeError("boom"))
        async with http.get(f"{base}/readyz") as reply:
            assert reply.status == 503
            body = await reply.json()
            assert body["problems"][0] == "task ingest died: RuntimeError: boom"
        async with http.get(f"{base}/metrics") as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            assert "stream_router_test_things_total 3.0" in await reply.text()
        async with http.get(f"{base}/nothing") as reply:
            assert reply.status == 404


async def test_a_taken_port_is_a_config_error_that_names_the_setting_and_the_fix(
    served: tuple[Supervisor, CollectorRegistry, str],
) -> None:
    _, registry, base = served
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(ConfigError) as raised:
        await HealthServer(Supervisor(60), registry, "127.0.0.1", port).start()
    assert str(raised.value) == (
        f"metrics.port: another process listens on 127.0.0.1:{port}; set "
        "STREAM_ROUTER_METRICS__PORT to a free port (0 picks any)"
    )


def test_an_address_that_cannot_be_bound_names_host_and_port() -> None:
    error = OSError(99, "Cannot assign requested address")
    assert port_taken("review.backend.webhook", "10.9.9.9", 9102, error) == (
        "review.backend.webhook.host/review.backend.webhook.port: cannot listen on "
        "10.9.9.9:9102 (Cannot assign requested address); set "
        "STREAM_ROUTER_REVIEW__BACKEND__WEBHOOK__HOST to an address of this machine and "
        "STREAM_ROUTER_REVIEW__BACKEND__WEBHOOK__PORT to a free port"
    )


def test_healthz_is_answered_by_the_loop_so_a_wedged_loop_gives_no_answer() -> None:
    """Unlike a server on its own thread, /healthz goes silent while the loop is blocked."""
    loop = asyncio.new_event_loop()
    server = HealthServer(Supervisor(60), CollectorRegistry(), "127.0.0.1", 0)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    release = threading.Event()
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
        loop.call_soon_threadsafe(release.wait, 30)  # wedge the loop (a blocking call)
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(url, timeout=0.5)
        release.set()
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
