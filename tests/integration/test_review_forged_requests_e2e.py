"""Forged review requests over the wire: refused, dead-lettered with the reason, never started.

Anything that can write the review-requests topic can name any route and flow. This test writes
copies of a real request straight to the topic, one naming a route the configuration does not
have and one naming the configured route with another flow definition (one the A2I emulator
has, so a start would have succeeded), between legitimate requests. The router
(``stream-router run --role all`` on the sandbox) must dead-letter both with their reason
(``unknown_route``, ``unknown_flow``), log each at WARNING, start no human loop for them (the
emulator's StartHumanLoop count and DescribeHumanLoop say so), keep their routes off its
metrics, and still give every legitimate event exactly one outcome.

The router's own loop-events topic is no more trusted: records on it that are not loop events
(an array, bytes that are not JSON, a notice whose members have the wrong types) must be
dead-lettered as they were (``malformed_loop_event``), and the review role must go on.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_router.sandbox.process import free_port
from stream_router.sandbox.stack import Sandbox
from tests.integration.kafka_helpers import TopicReader, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import config, create_topics, events, outcome_records
from tests.integration.test_review_outcomes_e2e import describe

pytestmark = pytest.mark.integration

REFUSED = ("unknown_route", "unknown_flow")
#: Records on loop-events that are not loop events.
NOT_LOOP_EVENTS = (b"[1]", b"{not json",
                   b'{"name": "r-1", "source": "reconciler", "status": 7}')  # fmt: skip


def malformed_loop_events(reader: TopicReader, tag: str) -> list[dict[str, Any]]:
    return [
        r for r in reader.values(f"dlq-{tag}") if r.get("reason_class") == "malformed_loop_event"
    ]


def refused(reader: TopicReader, tag: str) -> list[dict[str, Any]]:
    return [r for r in reader.values(f"dlq-{tag}") if r.get("reason_class") in REFUSED]


async def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The router's /metrics: name -> [(labels, value)]."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def test_forged_requests_are_dead_lettered_and_never_start_a_review(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    info = sandbox.info()
    bootstrap = sandbox.broker.bootstrap_servers
    outputs = await create_topics(sandbox, tag)
    settings = config(Backend("a2i", info), tag, tmp_path)
    port = free_port()
    settings["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    before, fate = events(9, tag)  # three of them go to review
    after, fate_after = events(6, f"{tag}y")  # two more, written after the forged ones
    legit = {**fate, **fate_after}
    reviews = sum(1 for f in legit.values() if f == "review")
    starts_before = (await sandbox.a2i.stats())["requests"].get("StartHumanLoop", {})

    await produce(bootstrap, f"in-{tag}", before)
    process = router(path, "all", sandbox_env)
    process.start()
    try:
        await process.wait_ready_async(60)
        async with TopicReader(bootstrap, outputs) as reader:
            await reader.until(lambda r: set(outcome_records(r, tag)) >= set(fate), 90)
            real = reader.values(f"rr-{tag}")[0]  # what ingest wrote, to copy
            route = {**real, "event_id": f"{tag}-fr", "loop_name": f"{tag}-forged-route",
                     "route": "intruder"}  # fmt: skip
            other_flow = info.flow_definition_arns["panel"]
            assert other_flow != real["review_flow"]
            flow = {**real, "event_id": f"{tag}-ff", "loop_name": f"{tag}-forged-flow",
                    "review_flow": other_flow}  # fmt: skip
            forged = [route, flow]
            await produce(
                bootstrap,
                f"rr-{tag}",
                [(f["loop_name"].encode(), orjson.dumps(f)) for f in forged],
            )
            await produce(
                bootstrap,
                f"le-{tag}",
                [(b"r-%d" % i, raw) for i, raw in enumerate(NOT_LOOP_EVENTS)],
            )
            await produce(bootstrap, f"in-{tag}", after)
            await reader.until(
                lambda r: (
                    set(outcome_records(r, tag)) >= set(legit)
                    and len(refused(r, tag)) >= 2
                    and len(malformed_loop_events(r, tag)) >= len(NOT_LOOP_EVENTS)
                ),
                90,
            )
            metrics = await scrape(port)
            await reader.poll()
    finally:
        code = await process.stop_async()
    assert code == 0, process.output_tail()

    # Dead-lettered as the records they were, with the reason, from the review-requests topic.
    letters = {r["reason_class"]: r for r in refused(reader, tag)}
    assert set(letters) == set(REFUSED)
    assert len(refused(reader, tag)) == 2
    for reason_class, sent in zip(REFUSED, forged, strict=True):
        letter = letters[reason_class]
        assert letter["source"]["topic"] == f"rr-{tag}"
        assert orjson.loads(letter["value"]) == sent
        assert "review_request" not in letter  # not an outcome of the event it names
    assert "'intruder' is not a review route" in letters["unknown_route"]["reason"]
    assert f"its review_flow is '{real['review_flow']}'" in letters["unknown_flow"]["reason"]

    # Never started: no loop of either name, and StartHumanLoop was called once per real review.
    for sent in forged:
        assert describe(info, sent["loop_name"]) is None
    starts_after = (await sandbox.a2i.stats())["requests"]["StartHumanLoop"]
    assert starts_after.get("OK", 0) - starts_before.get("OK", 0) == reviews
    assert sum(starts_after.values()) - sum(starts_before.values()) == reviews

    # The legitimate events around them: one outcome each, the unsure ones reviewed.
    found = outcome_records(reader, tag)
    assert set(found) == set(legit)
    assert all(len(records) == 1 for records in found.values()), found
    reviewed = [e for e in reader.values(f"out-{tag}") if e["decision"] == "reviewed"]
    assert len(reviewed) == reviews

    # Counted by reason; a route label only ever names a configured route.
    counted = {
        labels["reason"]: value
        for labels, value in metrics["stream_router_review_requests_refused_total"]
    }
    assert counted == {"unknown_route": 1.0, "unknown_flow": 1.0}

    # Not loop events: dead-lettered as the records they were, counted; the role went on.
    garbage = malformed_loop_events(reader, tag)
    assert sorted(r["value"].encode() for r in garbage) == sorted(NOT_LOOP_EVENTS)
    assert {r["source"]["topic"] for r in garbage} == {f"le-{tag}"}
    assert metrics["stream_router_review_loop_events_malformed_total"] == [
        ({}, float(len(NOT_LOOP_EVENTS)))
    ]
    routes = {labels["route"] for samples in metrics.values() for labels, _ in samples
              if "route" in labels}  # fmt: skip
    assert routes <= {"general"}, routes

    log = path.with_suffix(".all.log").read_text(encoding="utf-8")
    warnings = [line for line in log.splitlines() if "refused, dead-lettered" in line]
    assert len(warnings) == 2, warnings
    assert all("WARNING" in line for line in warnings)
    assert any("unknown_route" in line for line in warnings)
    assert any("unknown_flow" in line for line in warnings)
