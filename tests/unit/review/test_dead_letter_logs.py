"""A review that ends in the dead-letter topic says so in one WARNING: loop, route, reason.

Before, a rejected start (a flow definition that does not exist) only moved a counter. The
log line names the review and why, never the event (the payload carries a marker to prove it).
"""

from __future__ import annotations

import logging
import random

import orjson
import pytest

from stream_router.errors import ReviewRejected
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import State
from stream_router.review.scheduler import ReviewScheduler
from tests.unit.review.requests import review_request
from tests.unit.review.test_scheduler import (
    PARTITIONS,
    FaultyBackend,
    Record,
    World,
    scheduler,
    settings,
)

MARKER = "PAYLOAD-7f3c1e"
MISSING = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/sandbox-genral"
FLOWS = {"general": MISSING, "experts": MISSING}  #: configured so (the backend refuses them)


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and name in r.getMessage()
    ]


async def take(run: ReviewScheduler, world: World, route: str) -> str:
    """Hand one review request (its event carrying MARKER) to the scheduler; its loop name."""
    request = review_request("evt-1", route, flow=MISSING, note=MARKER)
    value = orjson.dumps(dict(request.fields))
    world.requests[0] = [Record(0, value)]
    for partition in range(PARTITIONS):
        run.assign(partition)
    await run.take_request(0, 0, value)
    return request.loop_name


def dead_letters(world: World) -> list[dict[str, object]]:
    return [o for o in world.outputs if o["topic"] == "dead-letter"]


async def test_a_rejected_start_logs_one_warning_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(random.Random(0))
    backend = FaultyBackend(random.Random(1))
    reason = f"StartHumanLoop: ValidationException (Flow definition {MISSING} does not exist)"
    backend.fail_next(ReviewRejected(reason))
    run = scheduler(world, backend, settings(), FLOWS)
    try:
        with caplog.at_level(logging.WARNING, "stream_router.review"):
            name = await take(run, world, "experts")
            await world.until(lambda: len(dead_letters(world)) == 1, "dead-lettered")
    finally:
        await run.close()
    (line,) = warnings_about(caplog, name)
    assert "route experts" in line
    assert f"{MISSING} does not exist" in line
    assert "rejected" in line
    assert all(MARKER not in r.getMessage() for r in caplog.records)


async def test_a_failed_review_dead_lettered_by_on_failure_logs_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(random.Random(0))
    backend = FaultyBackend(random.Random(1))
    run = scheduler(world, backend, settings(on_failure="dead-letter"), FLOWS)
    try:
        with caplog.at_level(logging.WARNING, "stream_router.review"):
            name = await take(run, world, "general")
            await world.until(
                lambda: any(e.state is State.STARTED for e in world.entries().values()), "started"
            )
            state = backend.fail(name, "Expired", "no worker took the task in time")
            event = LoopEvent(name, EventSource.EVENTBRIDGE, state.status, None, state.flow,
                              state.failure_code, state.failure_reason)  # fmt: skip
            await run.take_loop_event(0, event)
            await world.until(lambda: len(dead_letters(world)) == 1, "dead-lettered")
    finally:
        await run.close()
    (line,) = warnings_about(caplog, name)
    assert "route general" in line
    assert "Expired: no worker took the task in time" in line
    assert all(MARKER not in r.getMessage() for r in caplog.records)
