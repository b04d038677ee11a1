"""Review requests are claims: a route or flow the configuration does not review is refused.

Anything that can write review-requests can name any route and flow. The scheduler records and
starts only what the configuration routes (``ReviewScheduler``'s rule 2): a forged request is
dead-lettered as the record it was (``unknown_route`` / ``unknown_flow``), counted, logged at
WARNING without its payload, never recorded, started or billed, and its route never becomes a
metric label. An entry recorded under an earlier configuration that no longer routes it is
dead-lettered at its start, as its event's outcome.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import State
from stream_router.review.request import ReviewRoutes
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

MARKER = "PAYLOAD-51d0"


def registry(run: ReviewScheduler) -> CollectorRegistry:
    found: CollectorRegistry = run.metrics.registry
    return found


def sample(run: ReviewScheduler, name: str, **labels: str) -> float:
    return registry(run).get_sample_value(name, labels) or 0.0


def route_labels(run: ReviewScheduler) -> set[str]:
    """Every value of a ``route`` label the review metrics hold."""
    return {
        s.labels["route"]
        for metric in registry(run).collect()
        for s in metric.samples
        if "route" in s.labels
    }


async def deliver(run: ReviewScheduler, world: World, *values: bytes) -> None:
    """faust hands the agent each value, in order, on partition 0."""
    records = world.requests.setdefault(0, [])
    for value in values:
        records.append(Record(len(records), value))
        await run.take_request(0, records[-1].offset, value)


def encoded(event_id: str, route: str = "general", **kwargs: Any) -> bytes:
    return orjson.dumps(dict(review_request(event_id, route, note=MARKER, **kwargs).fields))


def dead_letters(world: World) -> list[dict[str, Any]]:
    return [o for o in world.outputs if o["topic"] == "dead-letter"]


async def test_forged_routes_and_flows_are_dead_lettered_and_never_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world, backend = World(random.Random(0)), FaultyBackend(random.Random(1))
    routes = ReviewRoutes({"general": "fd-general"}, shadow=frozenset({"trial"}))
    run = scheduler(world, backend, settings(), routes=routes)
    for partition in range(PARTITIONS):
        run.assign(partition)
    try:
        with caplog.at_level(logging.WARNING, "stream_router.review"):
            await deliver(
                run,
                world,
                encoded("legit-1"),
                encoded("forged-route", "intruder"),
                encoded("forged-flow", flow="fd-someone-elses"),
                encoded("forged-shadow", "trial"),
                encoded("legit-2"),
            )
            await world.until(
                lambda: sum(e.state is State.STARTED for e in world.entries().values()) == 2,
                "the two legitimate requests started",
            )
    finally:
        await run.close()

    assert backend.start_calls == [
        review_request("legit-1").loop_name,
        review_request("legit-2").loop_name,
    ]
    assert {e.request.event_id for e in world.entries().values() if e.request} == {
        "legit-1",
        "legit-2",
    }  # the forged ones were never recorded
    letters = dead_letters(world)
    assert [(d["reason_class"], d["source"]["offset"]) for d in letters] == [
        ("unknown_route", 1),
        ("unknown_flow", 2),
        ("unknown_route", 3),
    ]
    for letter in letters:  # the record as it was, never an outcome of the event it names
        assert "review_request" not in letter
        assert orjson.loads(letter["value"])["event"]["note"] == MARKER
    assert "'intruder' is not a review route" in letters[0]["reason"]
    assert "'fd-someone-elses'; its review_flow is 'fd-general'" in letters[1]["reason"]
    assert "'trial' is a shadow route" in letters[2]["reason"]

    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.WARNING] * 3
    assert "unknown_route" in refused[0].getMessage()
    assert all(MARKER not in r.getMessage() for r in caplog.records)

    name = "stream_router_review_requests_refused_total"
    assert sample(run, name, reason="unknown_route") == 2
    assert sample(run, name, reason="unknown_flow") == 1
    assert route_labels(run) == {"general"}  # budget and start metrics: configured routes only


async def test_a_copy_of_a_recorded_request_is_a_duplicate_whatever_it_claims() -> None:
    """Its entry is the record of the request: a copy naming another route changes nothing
    and is not dead-lettered (the event keeps exactly one outcome)."""
    world, backend = World(random.Random(0)), FaultyBackend(random.Random(1))
    run = scheduler(world, backend, settings())
    for partition in range(PARTITIONS):
        run.assign(partition)
    legit = review_request("e1")
    forged = orjson.dumps({**legit.fields, "route": "intruder"})
    try:
        await deliver(run, world, orjson.dumps(dict(legit.fields)), forged)
        await world.until(
            lambda: any(e.state is State.STARTED for e in world.entries().values()), "started"
        )
    finally:
        await run.close()
    assert backend.start_calls == [legit.loop_name]
    assert dead_letters(world) == []
    assert sample(run, "stream_router_review_requests_duplicate_total") == 1


async def test_a_long_forged_route_is_cut_short_in_the_reason() -> None:
    world, backend = World(random.Random(0)), FaultyBackend(random.Random(1))
    run = scheduler(world, backend, settings())
    for partition in range(PARTITIONS):
        run.assign(partition)
    try:
        await deliver(run, world, encoded("e1", "x" * 10_000))
    finally:
        await run.close()
    (letter,) = dead_letters(world)
    assert letter["reason_class"] == "unknown_route"
    assert len(letter["reason"]) < 300
    assert backend.start_calls == []


async def test_an_entry_the_configuration_no_longer_routes_is_dead_lettered_at_its_start() -> None:
    """Recorded under a configuration with route audit (held by its budget); the process
    restarts without the route: the held entry's start refuses it, as its event's outcome."""
    world, backend = World(random.Random(0)), FaultyBackend(random.Random(1))
    review = settings(budgets={"audit": {"per_day": 2}}, budget_fallback="hold")
    flows = {"general": "fd-general", "audit": "fd-general"}
    run = scheduler(world, backend, review, flows)
    for partition in range(PARTITIONS):
        run.assign(partition)
    try:
        # Partition 0's share of the audit budget is 1: one starts, one is held.
        await deliver(run, world, encoded("a1", "audit"), encoded("a2", "audit"))
        await world.until(
            lambda: {e.state for e in world.entries().values()} == {State.HELD, State.STARTED},
            "one started, one held",
        )
    finally:
        await run.close()

    run = scheduler(world, backend, review, {"general": "fd-general"})
    for partition in range(PARTITIONS):
        run.assign(partition)
    try:
        await world.until(lambda: len(dead_letters(world)) == 1, "the held entry dead-lettered")
        await world.until(
            lambda: {e.state for e in world.entries().values()} == {State.STARTED, State.CLOSED},
            "closed",
        )
    finally:
        await run.close()
    (letter,) = dead_letters(world)
    assert letter["reason_class"] == "unknown_route"
    assert letter["review_request"]["event_id"] == "a2"  # its event's outcome
    assert backend.start_calls == [review_request("a1", "audit").loop_name]
    assert route_labels(run) == {"(unconfigured)"}  # never the name the entry carries
    assert sample(run, "stream_router_review_requests_refused_total", reason="unknown_route") == 1


async def test_an_escalation_to_a_flow_the_configuration_does_not_name_is_refused() -> None:
    """Attempt 2 starts only on the route's review.escalation_flows entry."""
    world, backend = World(random.Random(0)), FaultyBackend(random.Random(1))
    # The completer escalates to review.escalation_flows (fd-experts); the routes say fd-panel.
    routes = ReviewRoutes({"general": "fd-general"}, {"general": "fd-panel"})
    run = scheduler(world, backend, settings(), routes=routes)
    for partition in range(PARTITIONS):
        run.assign(partition)
    name = review_request("e1").loop_name
    try:
        await deliver(run, world, encoded("e1"))
        await world.until(lambda: name in backend.start_calls, "first attempt started")
        state = backend.fail(name, "Expired", "nobody took it")
        await run.take_loop_event(
            0,
            LoopEvent(name, EventSource.EVENTBRIDGE, state.status, None, state.flow,
                      state.failure_code, state.failure_reason),
        )  # fmt: skip
        await world.until(lambda: len(dead_letters(world)) == 1, "escalation refused")
    finally:
        await run.close()
    (letter,) = dead_letters(world)
    assert letter["reason_class"] == "unknown_flow"
    assert "review.escalation_flows.general is 'fd-panel'" in letter["reason"]
    assert backend.start_calls == [name]  # the second attempt was never started
