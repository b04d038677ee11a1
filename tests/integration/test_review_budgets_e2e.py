"""Budgets over the wire: counts survive a restart of the router; ``hold`` keeps requests.

Each test runs ``stream-router run --role all`` on the sandbox as a child process, stops it with
SIGTERM, starts it again on the same configuration (same consumer groups and tables) and reads
every outcome back from the topics.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_router.review.budget import BudgetLimits
from stream_router.review.shares import share
from stream_router.sandbox.process import free_port
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import (
    PARTITIONS,
    config,
    create_topics,
    emulator_loops,
    events,
    outcome_records,
    run_router,
)
from tests.integration.test_review_outcomes_e2e import describe

pytestmark = pytest.mark.integration

LAG = "stream_router_review_watcher_event_lag_seconds"


def outcomes(reader: TopicReader, tag: str) -> dict[str, list[str]]:
    """Event id -> every decision published for it (a request's dead letter: dead-lettered)."""
    return {
        event_id: [record.get("decision", "dead-lettered") for record in records]
        for event_id, records in outcome_records(reader, tag).items()
    }


def requests_by_partition(reader: TopicReader, tag: str) -> dict[int, set[str]]:
    """Loop names of the review requests ingest wrote, by review-requests partition."""
    names: dict[int, set[str]] = {p: set() for p in range(PARTITIONS)}
    for record in reader.records[f"rr-{tag}"]:
        names[record.partition].add(record.key.decode())
    return names


async def run_phase(
    path: Path, env: dict[str, str], reader: TopicReader, tag: str, wanted: set[str]
) -> None:
    """Run the router until every wanted event has an outcome, then stop it with SIGTERM."""
    await run_router(path, env, reader, lambda r: set(outcomes(r, tag)) >= wanted)


async def test_budget_counts_survive_a_restart(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Reviews spent before a SIGTERM still count after the restart: the route never spends
    more than its daily budget, and each partition spends exactly its share."""
    per_day = 6  # shares of 3 on each of the two partitions
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    settings = config(
        Backend("a2i", sandbox_info),
        tag,
        tmp_path,
        budgets={"general": {"per_day": per_day}},
        budget_fallback="accept-unreviewed",
    )
    path.write_text(yaml.safe_dump(settings))
    first_records, first_fate = events(12, tag)  # 4 review requests
    second_records, second_fate = events(90, f"{tag}x")  # 30 more
    bootstrap = sandbox.broker.bootstrap_servers

    async with TopicReader(bootstrap, outputs) as reader:
        await produce(bootstrap, f"in-{tag}", first_records)
        await run_phase(path, sandbox_env, reader, tag, set(first_fate))
        await reader.poll()
        spent_first = Counter(d for ds in outcomes(reader, tag).values() for d in ds)["reviewed"]
        first_requests = requests_by_partition(reader, tag)

        await produce(bootstrap, f"in-{tag}", second_records)
        await run_phase(path, sandbox_env, reader, tag, set(first_fate) | set(second_fate))
        await reader.poll()

    assert spent_first >= 1, "the first run started no review: nothing to carry over"
    found = outcomes(reader, tag)
    assert set(found) == set(first_fate) | set(second_fate)
    assert {e: d for e, d in found.items() if len(d) != 1} == {}
    requests = requests_by_partition(reader, tag)
    shares = [share(BudgetLimits(per_day=per_day), p, PARTITIONS).per_day or 0
              for p in range(PARTITIONS)]  # fmt: skip
    assert sum(shares) == per_day
    later = {p: requests[p] - first_requests[p] for p in requests}
    # Without the carried-over counts, the second run alone could spend every whole share.
    assert all(len(later[p]) >= shares[p] for p in later), {p: len(n) for p, n in later.items()}

    results = reader.values(f"out-{tag}")
    reviewed = [e for e in results if e["decision"] == "reviewed"]
    unreviewed = [e for e in results if e["decision"] == "unreviewed"]
    assert len(reviewed) == per_day
    assert len(unreviewed) == sum(len(n) for n in requests.values()) - per_day
    assert {e["review"]["failure_code"] for e in unreviewed} == {"BudgetExhausted"}
    reviewed_names = {e["review"]["loop_name"] for e in reviewed}
    for partition, names in requests.items():
        assert len(reviewed_names & names) == shares[partition]
    loops = emulator_loops(sandbox_info, set().union(*requests.values()))
    assert set(loops) == reviewed_names  # the budget's count of paid reviews, no more
    assert max(loops.values()) == 1


def scrape(port: int, name: str, **labels: str) -> float:
    """The value of one sample on the router's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_hold_keeps_requests_until_the_budget_allows_them(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """With ``hold``, requests over budget get no outcome, are not lost across a SIGTERM, and
    are all reviewed (each once) after a restart with a raised budget."""
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    port = free_port()
    settings = config(
        Backend("a2i", sandbox_info),
        tag,
        tmp_path,
        budgets={"general": {"per_day": 2}},
        budget_fallback="hold",
    )
    settings["metrics"] = {"enabled": True, "port": port}
    path.write_text(yaml.safe_dump(settings))
    records, fate = events(18, tag)  # 6 review requests, budget for 2 (one per partition)
    bootstrap = sandbox.broker.bootstrap_servers
    await produce(bootstrap, f"in-{tag}", records)
    accepted = {e for e, f in fate.items() if f == "accepted"}

    async with TopicReader(bootstrap, outputs) as reader:
        process = router(path, "all", sandbox_env)
        process.start()
        try:
            await process.wait_ready_async(60)
            await reader.until(lambda r: len(r.records[f"rr-{tag}"]) == 6, 60)
            requests = requests_by_partition(reader, tag)
            may_start = sum(min(1, len(n)) for n in requests.values())
            held = 6 - may_start

            def settled(r: TopicReader) -> bool:
                over = scrape(port, "stream_router_review_start_outcomes_total",
                              route="general", outcome="over-budget")  # fmt: skip
                reviewed = [d for d in outcomes(r, tag).values() if d == ["reviewed"]]
                return over >= held and len(reviewed) >= may_start

            await reader.until(settled, 90)

            def lag_observed(_: TopicReader) -> bool:  # each event's own time to forwarding
                return all(
                    scrape(port, f"{LAG}_count", watcher=w) >= may_start
                    and scrape(port, f"{LAG}_sum", watcher=w) > 0
                    for w in ("eventbridge", "s3-output")
                )

            await reader.until(lag_observed, 30)
            await reader.until(lambda r: set(outcomes(r, tag)) >= accepted, 30)
            await reader.poll()
            found = outcomes(reader, tag)
            # Held requests have no outcome: not unreviewed, not dead-lettered.
            assert Counter(d for ds in found.values() for d in ds) == Counter(
                {"accepted": len(accepted), "reviewed": may_start}
            )
        finally:
            code = await process.stop_async()
        assert code == 0, process.output_tail()  # a holding worker still stops cleanly

        settings["review"]["budgets"] = {"general": {"per_day": 100}}
        path.write_text(yaml.safe_dump(settings))
        await run_phase(path, sandbox_env, reader, tag, set(fate))
        await reader.poll()

    found = outcomes(reader, tag)
    assert all(len(d) == 1 for d in found.values()), found
    review = {e for e, f in fate.items() if f == "review"}
    assert {e for e, d in found.items() if d == ["reviewed"]} == review
    names = set().union(*requests_by_partition(reader, tag).values())
    loops = emulator_loops(sandbox_info, names)
    assert set(loops) == names
    assert max(loops.values()) == 1  # a handed-back request started no second review


async def test_a_held_escalation_is_resumed_after_a_restart(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """An escalation held over budget when the router stops is started after the restart
    (it used to be lost: its first loop's entry was closed before the hold)."""
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    port = free_port()
    settings = config(
        Backend("a2i", sandbox_info),
        tag,
        tmp_path,
        budgets={"general": {"per_day": PARTITIONS}},  # one loop per partition: no escalation
        budget_fallback="hold",
        on_failure="escalate",
        escalation_flows={"general": sandbox_info.flow_definition_arns["fast"]},
        max_attempts=2,
    )
    settings["policies"]["routes"][0]["review_flow"] = sandbox_info.flow_definition_arns["never"]
    settings["metrics"] = {"enabled": True, "port": port}
    path.write_text(yaml.safe_dump(settings))
    records, fate = events(3, tag)  # one review request
    review = {e for e, f in fate.items() if f == "review"}
    assert len(review) == 1
    bootstrap = sandbox.broker.bootstrap_servers
    await produce(bootstrap, f"in-{tag}", records)

    async with TopicReader(bootstrap, outputs) as reader:
        process = router(path, "all", sandbox_env)
        process.start()
        try:
            await process.wait_ready_async(60)
            await reader.until(
                lambda _: scrape(port, "stream_router_review_start_outcomes_total",
                                 route="general", outcome="over-budget") >= 1,
                90,
            )  # fmt: skip
            await reader.poll()
            assert not set(outcomes(reader, tag)) & review  # held: no outcome yet
        finally:
            code = await process.stop_async()
        assert code == 0, process.output_tail()

        settings["review"]["budgets"] = {"general": {"per_day": 100}}
        path.write_text(yaml.safe_dump(settings))
        await run_phase(path, sandbox_env, reader, tag, set(fate))
        await reader.poll()

    found = outcomes(reader, tag)
    assert all(len(d) == 1 for d in found.values()), found
    assert {e for e, d in found.items() if d == ["reviewed"]} == review
    (envelope,) = [e for e in reader.values(f"out-{tag}") if e["event_id"] in review]
    second = envelope["review"]["loop_name"]
    first = second.removesuffix("-a2")
    assert second == f"{first}-a2"
    expired = describe(sandbox_info, first)
    assert expired is not None
    assert expired["FailureCode"] == "Expired"
    assert emulator_loops(sandbox_info, {second}) == {second: 1}  # the fast flow's loops
