"""The broker goes away under both roles: readiness names it, the logs stay readable, and SIGTERM
still stops each role cleanly within its bound.

The sandbox's broker is stopped for real (its process ends, connections are refused) and started
again on the same port with the same data; ``broker_stopped`` always starts it again. Each role
runs as ``stream-router run`` in a child process, as the README shows it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_router.app import shutdown_bound_s
from stream_router.sandbox.process import ManagedProcess, free_port
from stream_router.sandbox.stack import Sandbox
from stream_router.settings import Settings
from tests.integration import test_health, test_ingest, test_review_e2e
from tests.integration.kafka_helpers import json_record, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router

pytestmark = pytest.mark.integration

STALL_S = 5.0  #: ingest.stall_after_s and review.stall_after_s of these tests
MONITOR_S = 1.0  #: review.monitor_interval_s
SLACK_S = 3.0  #: readiness polls every 0.1 s; the rest is a loaded 2-core machine
SUMMARY = re.compile(r"repeated \d+ times in the last \d+ s: ")


@asynccontextmanager
async def broker_stopped(sandbox: Sandbox) -> AsyncIterator[float]:
    """Stop the sandbox's broker; yields when it is gone (loop time); starts it again after."""
    await sandbox.broker.stop()
    try:
        yield asyncio.get_running_loop().time()
    finally:
        await sandbox.broker.start()


class Role:
    """One router process and what the test reads of it: /readyz and its log."""

    def __init__(self, process: ManagedProcess, port: int, log: Path) -> None:
        self.process = process
        self.readyz = f"http://127.0.0.1:{port}/readyz"
        self.log = log

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    async def ready(self, timeout_s: float) -> None:
        await test_health.poll(self.readyz, lambda r: r[0] == 200, timeout_s, self.process)


async def start_roles(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path, *, backlog: int = 0, **settings: Any
) -> tuple[Role, Role, dict[str, Any]]:
    """An ingest (with ``backlog`` events waiting and these ingest ``settings``) and a review
    process, on topics of their own, both ready."""
    tag = uuid.uuid4().hex[:8]
    ingest_port = free_port()
    ingest = test_health.ingest_config(sandbox, f"i{tag}", ingest_port)
    ingest["ingest"].update(stall_after_s=STALL_S, **settings)
    await test_ingest.create_topics(sandbox, ingest)
    events = [json_record({"event_id": f"e{i}", "label": "cat", "confidence": 0.95})
              for i in range(backlog)]  # fmt: skip
    await produce(sandbox.broker.bootstrap_servers, ingest["ingest"]["input_topics"][0], events)
    review = test_review_e2e.config(Backend("a2i", sandbox.info()), f"r{tag}", tmp_path)
    review_port = free_port()
    review["metrics"] = {"enabled": True, "port": review_port}
    review["review"].update(stall_after_s=STALL_S, monitor_interval_s=MONITOR_S)
    await test_review_e2e.create_topics(sandbox, f"r{tag}")
    roles = []
    for role, data, port in (("ingest", ingest, ingest_port), ("review", review, review_port)):
        config = tmp_path / f"{role}.yaml"
        config.write_text(yaml.safe_dump(data))
        process = router(config, role, env)
        process.start()
        roles.append(Role(process, port, config.with_suffix(f".{role}.log")))
    for each in roles:
        await each.ready(90)
    return roles[0], roles[1], ingest


async def until_logged(role: Role, pattern: re.Pattern[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(pattern.search(line) for line in role.lines()):
        assert time.monotonic() < deadline, f"no line like {pattern.pattern!r} in {role.log}"
        await asyncio.sleep(0.2)  # polling a child's log file, bounded by the deadline


async def test_readiness_names_the_unreachable_broker_and_recovers_with_it(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Empty fetches keep completing while no broker answers: readiness must not believe them.

    Within the stall limit of the broker's stop each role reports 503 naming the broker; the
    flood of aiokafka's connection errors is a few lines and their summaries; once the broker
    is back, both roles are ready again.
    """
    ingest, review, _ = await start_roles(sandbox, sandbox_env, tmp_path)
    bootstrap = sandbox.broker.bootstrap_servers
    loop = asyncio.get_running_loop()
    try:
        before = {role: len(role.lines()) for role in (ingest, review)}
        async with broker_stopped(sandbox) as stopped:
            _, body = await test_health.poll(
                ingest.readyz, lambda r: r[0] == 503, STALL_S + SLACK_S, ingest.process
            )
            assert loop.time() - stopped <= STALL_S + SLACK_S
            (problem,) = body["problems"]
            assert problem.startswith(f"ingest: Kafka at {bootstrap} answered no fetch of "), body

            _, body = await test_health.poll(
                review.readyz, lambda r: r[0] == 503, STALL_S + MONITOR_S + SLACK_S, review.process
            )
            assert loop.time() - stopped <= STALL_S + MONITOR_S + SLACK_S
            (problem,) = body["problems"]  # one, naming what reads Kafka and where
            assert problem.startswith(
                f"review: monitor (reads offsets from Kafka at {bootstrap}): no progress for"
            ), body

            # A summary line comes once a window of repeats has passed (10 s).
            for role in (ingest, review):
                await until_logged(role, SUMMARY, 20)
            outage_s = loop.time() - stopped
            for role in (ingest, review):
                logged = role.lines()[before[role] :]
                # Before summarising, ingest logged about 60 aiokafka errors a second here and
                # review about 130; now the first of each kind, then one line per kind per 10 s.
                assert len(logged) <= 40, (outage_s, logged[:50])
                assert sum(line.startswith("Traceback") for line in logged) == 0, logged

        # The broker is back (same port, same data): both roles rejoin and are ready again.
        for role in (ingest, review):
            await role.ready(120)
    finally:
        codes = [await role.process.stop_async() for role in (ingest, review)]
    assert codes == [0, 0], [role.process.output_tail() for role in (ingest, review)]


async def test_sigterm_with_the_broker_down_stops_both_roles_cleanly_within_the_bound(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """No broker to leave the group with, commit to or flush to: each role still exits 0, within
    ``shutdown_bound_s`` (the drain, then closing its clients), without a traceback.

    Ingest works through a backlog one small batch at a time, so the broker goes away under a
    batch in hand: the drain gives it up uncommitted after ``ingest.drain_timeout_s`` and says so.
    (The backlog lasts about 15 s at 10 records a batch: 20,000 lasted only 3 s once commits no
    longer held up the next batch, and ingest had finished it before the broker went.)
    """
    ingest, review, data = await start_roles(
        sandbox, sandbox_env, tmp_path, backlog=100000,
        batch_max_records=10, max_in_flight_batches=0, drain_timeout_s=3,
    )  # fmt: skip
    bound_s = shutdown_bound_s(Settings.model_validate(data))
    try:
        async with broker_stopped(sandbox):
            # Stopping before the roles noticed would prove little: wait until both say so.
            for role in (ingest, review):
                await test_health.poll(role.readyz, lambda r: r[0] == 503, 30, role.process)
            for role in (ingest, review):
                assert role.process.pid is not None
                started = time.monotonic()
                os.kill(role.process.pid, signal.SIGTERM)
                code = await test_health.wait_exit(role.process, bound_s)
                took = time.monotonic() - started
                assert code == 0, role.process.output_tail()
                assert took <= bound_s, (took, bound_s)
                text = role.log.read_text(encoding="utf-8", errors="replace")
                assert "Traceback" not in text, text[-4000:]
                assert "\x1b" not in text, "a terminal escape in the log"
            gave_up = [line for line in ingest.lines() if "stopping without finishing" in line]
            assert len(gave_up) == 1, ingest.lines()[-30:]
            assert "ingest.drain_timeout_s (3 s)" in gave_up[0]
            assert "consumed again after the restart (at-least-once)" in gave_up[0]
            assert not [line for line in ingest.lines() if "finished and committed" in line]
    finally:
        for role in (ingest, review):
            await role.process.stop_async()
