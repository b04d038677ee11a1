"""End to end on the sandbox: ingest and review in one process, simulated reviewers, real wire.

Every event must end as exactly one record (accepted, reviewed, unreviewed or dead-lettered),
counted by event id; reviewed answers must be what the simulated reviewers wrote; no review may
be started twice. Tests of behaviour both review backends share run on each (the ``backend``
fixture, ``review_backends.py``): the A2I emulator, and Label Studio with simulated annotators.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_router.review.budget import BudgetLimits
from stream_router.review.shares import share
from stream_router.sandbox.aws import client as sandbox_client
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.envelope_schema import envelope_validator
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.review_backends import BACKENDS, Backend
from tests.integration.router_process import router
from tests.integration.test_kafka_broker import topic_config

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

PARTITIONS = 2
LABELS = ["cat", "dog", "bird", "other"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, sandbox_info: SandboxInfo) -> Backend:
    if request.param == "label-studio":
        return Backend("label-studio", request.getfixturevalue("label_studio_info"))
    return Backend("a2i", sandbox_info)


def config(
    backend: Backend,
    tag: str,
    tmp: Path,
    watchers: tuple[str, ...] | None = None,
    **review: Any,
) -> dict[str, Any]:
    info = backend.info
    return {
        "kafka": info.kafka_config(session_timeout_s=6, heartbeat_interval_s=1),
        "ingest": {
            "input_topics": [f"in-{tag}"],
            "output_topic": f"out-{tag}",
            "review_requests_topic": f"rr-{tag}",
            "dead_letter_topic": f"dlq-{tag}",
            "group_id": f"ingest-{tag}",
            "fetch_wait_s": 0.05,
        },
        "policies": {
            "version": "e2e",
            "routes": [
                {
                    "name": "general",
                    "review_flow": backend.flow("fast"),
                    "policy": {"type": "confidence", "below": 0.7},
                }
            ],
        },
        "review": {
            "app_id": f"review-{tag}",
            "loop_events_topic": f"le-{tag}",
            "topic_partitions": PARTITIONS,
            "rate_per_s": 20,
            "burst": 5,
            "data_dir": str(tmp / "review-data"),
            **backend.review_settings(),
            **review,
        },
        "watchers": {
            "enabled": list(watchers or backend.signals),
            "reconcile_interval_s": 2,
            "reconcile_grace_s": 5,
        },
        "aws": {"region": info.region},
        "metrics": {"enabled": False},
        "logging": {"level": "INFO"},  # the ready line is an INFO line
    }


def events(count: int, tag: str) -> tuple[list[tuple[bytes | None, bytes | None]], dict[str, str]]:
    """Predictions with a ground truth; every third one unsure. Returns records, expected fate.

    Event ids carry the test's tag: loop names must not repeat across tests on one emulator.
    """
    records: list[tuple[bytes | None, bytes | None]] = []
    fate: dict[str, str] = {}
    for i in range(count):
        event_id = f"{tag}-e{i}"
        unsure = i % 3 == 0
        event = {
            "event_id": event_id,
            "label": LABELS[i % 4],
            "ground_truth": LABELS[(i + (1 if i % 2 else 0)) % 4],
            "confidence": 0.5 if unsure else 0.95,
        }
        records.append(json_record(event, f"k{i}"))
        fate[event_id] = "review" if unsure else "accepted"
    records.append((b"k-bad", b"{broken"))
    return records, fate


async def create_topics(sandbox: Sandbox, tag: str) -> dict[str, int]:
    names = [f"in-{tag}", f"out-{tag}", f"rr-{tag}", f"dlq-{tag}", f"le-{tag}"]
    await sandbox.broker.create_topics(names, partitions=PARTITIONS)
    return {f"out-{tag}": PARTITIONS, f"dlq-{tag}": PARTITIONS, f"rr-{tag}": PARTITIONS}


def emulator_loops(info: SandboxInfo, names: set[str]) -> Counter[str]:
    """How many human loops the A2I emulator's ``fast`` flow holds for each of ``names``."""
    a2i = sandbox_client("sagemaker-a2i-runtime", info.a2i_endpoint_url, info.region)
    found: Counter[str] = Counter()
    paginator = a2i.get_paginator("list_human_loops")
    for page in paginator.paginate(FlowDefinitionArn=info.flow_definition_arns["fast"]):
        for summary in page["HumanLoopSummaries"]:
            if summary["HumanLoopName"] in names:
                found[summary["HumanLoopName"]] += 1
    a2i.close()
    return found


async def run_until_done(
    sandbox: Sandbox,
    backend: Backend,
    env: dict[str, str],
    tmp_path: Path,
    count: int,
    *,
    watchers: tuple[str, ...] | None = None,
    timeout_s: float = 120,
    **review: Any,
) -> tuple[TopicReader, dict[str, str], str]:
    """Run ingest+review on ``count`` events until each has a result; returns what was read."""
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config(backend, tag, tmp_path, watchers, **review)))
    records, fate = events(count, tag)
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)

    def finished(r: TopicReader) -> bool:
        return set(outcome_records(r, tag)) >= set(fate) and len(r.records[f"dlq-{tag}"]) >= 1

    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
        await run_router(path, env, reader, finished, timeout_s)
        await reader.poll()
    return reader, fate, tag


def outcome_records(reader: TopicReader, tag: str) -> dict[str, list[dict[str, Any]]]:
    """Event id -> every record published for it (output envelopes and request dead letters)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for envelope in reader.values(f"out-{tag}"):
        found.setdefault(envelope["event_id"], []).append(envelope)
    for record in reader.values(f"dlq-{tag}"):
        if "review_request" in record:
            found.setdefault(record["review_request"]["event_id"], []).append(record)
    return found


async def run_router(
    path: Path,
    env: dict[str, str],
    reader: TopicReader,
    done: Callable[[TopicReader], bool],
    timeout_s: float = 120,
) -> None:
    """Run ingest+review on config ``path`` until ``done(reader)``; SIGTERM must exit 0."""
    process = router(path, "all", env)
    process.start()
    try:
        await process.wait_ready_async(60)
        await reader.until(done, timeout_s)
    finally:
        code = await process.stop_async()
    assert code == 0, process.output_tail()


async def check_exactly_once(
    reader: TopicReader, fate: dict[str, str], tag: str, backend: Backend
) -> list[dict[str, Any]]:
    """Each event has one result; reviewed ones have one review each. Returns results."""
    results = reader.values(f"out-{tag}")
    dead = [e["review_request"]["event_id"] for e in reader.values(f"dlq-{tag}")
            if "review_request" in e]  # fmt: skip
    by_id = Counter([e["event_id"] for e in results] + dead)
    assert set(by_id) == set(fate)
    assert max(by_id.values()) == 1, [k for k, v in by_id.items() if v > 1]
    for envelope in results:
        envelope_validator().validate(envelope)
        expected = fate[envelope["event_id"]]
        assert (envelope["decision"] == "accepted") == (expected == "accepted")
        if envelope["decision"] != "accepted":
            assert envelope["review"]["backend"] == backend.name
    reviewed = [e for e in results if e["decision"] == "reviewed"]
    names = {e["review"]["loop_name"] for e in reviewed}
    loops = await backend.reviews("fast", names)
    assert set(loops) == names
    assert not loops or max(loops.values()) == 1  # one review per reviewed event
    return results


async def test_every_event_ends_exactly_once(
    sandbox: Sandbox, backend: Backend, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    reader, fate, tag = await run_until_done(sandbox, backend, sandbox_env, tmp_path, 45)
    results = await check_exactly_once(reader, fate, tag, backend)
    if sandbox.broker_kind == "kafka":  # the review role created its ledger (Tansu: no configs)
        ledger = f"review-{tag}-ledger"
        bootstrap = sandbox.broker.bootstrap_servers
        assert await topic_config(bootstrap, ledger, "segment.ms") == "3600000"
        assert await topic_config(bootstrap, ledger, "cleanup.policy") == "compact"
    assert len([e for e in reader.values(f"dlq-{tag}") if "reason_class" in e]) == 1
    reviewed = [e for e in results if e["decision"] == "reviewed"]
    assert len(reviewed) == sum(1 for f in fate.values() if f == "review")
    assert {r["loop_name"] for r in reader.values(f"rr-{tag}")} == {
        e["review"]["loop_name"] for e in reviewed
    }

    # The answers published are the simulated reviewers' answers, read back from the backend
    # (A2I's output.json in S3, Label Studio's annotations).
    for envelope in reviewed:
        review = envelope["review"]
        given = await backend.answers(envelope)
        assert [a["answer"] for a in review["answers"]] == given
        assert review["label"] == given[0]  # one worker on the fast flow


@pytest.mark.parametrize(
    ("backend", "watcher"),
    [("a2i", "eventbridge"), ("a2i", "s3-output"), ("a2i", "reconciler"),
     pytest.param("label-studio", "webhook", marks=pytest.mark.label_studio),
     pytest.param("label-studio", "reconciler", marks=pytest.mark.label_studio)],
    indirect=["backend"],
)  # fmt: skip
async def test_each_watcher_alone_finishes_every_review(
    sandbox: Sandbox,
    backend: Backend,
    sandbox_env: dict[str, str],
    tmp_path: Path,
    watcher: str,
) -> None:
    reader, fate, tag = await run_until_done(
        sandbox, backend, sandbox_env, tmp_path, 15, watchers=(watcher,)
    )
    results = await check_exactly_once(reader, fate, tag, backend)
    assert sum(e["decision"] == "reviewed" for e in results) == 5


async def test_throttling_and_server_errors_slow_but_lose_nothing(
    sandbox: Sandbox,
    sandbox_info: SandboxInfo,
    sandbox_env: dict[str, str],
    tmp_path: Path,
    a2i_faults: Any,
) -> None:
    a2i = Backend("a2i", sandbox_info)
    await a2i_faults.set_faults(quota_rps=2, quota_burst=1, internal_error_rate=0.2)
    reader, fate, tag = await run_until_done(sandbox, a2i, sandbox_env, tmp_path, 30)
    results = await check_exactly_once(reader, fate, tag, a2i)
    assert sum(e["decision"] == "reviewed" for e in results) == 10
    stats = await a2i_faults.stats()
    starts = stats["requests"]["StartHumanLoop"]
    assert starts.get("ThrottlingException", 0) + starts.get("InternalServerException", 0) > 0


@pytest.mark.parametrize(
    ("fallback", "outcome"),
    [("accept-unreviewed", "unreviewed"), ("dead-letter", "dead-lettered")],
)
async def test_budget_fallbacks(
    sandbox: Sandbox,
    backend: Backend,
    sandbox_env: dict[str, str],
    tmp_path: Path,
    fallback: str,
    outcome: str,
) -> None:
    reader, fate, tag = await run_until_done(
        sandbox,
        backend,
        sandbox_env,
        tmp_path,
        30,
        budgets={"general": {"per_day": 4}},
        budget_fallback=fallback,
    )
    results = await check_exactly_once(reader, fate, tag, backend)
    # Each review-requests partition spends its share of the limit (review/shares.py); requests
    # spread over partitions by their names' hash, so a partition may get fewer than its share.
    landed = Counter(r.partition for r in reader.records[f"rr-{tag}"])
    limits = BudgetLimits(per_day=4)
    allowed = sum(
        min(landed[p], share(limits, p, PARTITIONS).per_day or 0) for p in range(PARTITIONS)
    )
    wanted = sum(1 for f in fate.values() if f == "review")
    assert sum(landed.values()) == wanted
    reviewed = [e for e in results if e["decision"] == "reviewed"]
    assert len(reviewed) == allowed
    if outcome == "unreviewed":
        unreviewed = [e for e in results if e["decision"] == "unreviewed"]
        assert len(unreviewed) == wanted - allowed
        assert {e["review"]["failure_code"] for e in unreviewed} == {"BudgetExhausted"}
    else:
        dead = [e for e in reader.values(f"dlq-{tag}") if "review_request" in e]
        assert len(dead) == wanted - allowed
        assert {e["reason_class"] for e in dead} == {"BudgetExhausted"}


async def test_killed_router_restarts_without_duplicate_loops_or_lost_results(
    sandbox: Sandbox, backend: Backend, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config(backend, tag, tmp_path, rate_per_s=5)))
    records, fate = events(60, tag)
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)
    wanted = set(fate)

    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:

        def reviewed(r: TopicReader) -> int:
            return sum(e["decision"] == "reviewed" for e in r.values(f"out-{tag}"))

        first = router(path, "all", sandbox_env)
        first.start()
        try:
            await reader.until(lambda r: reviewed(r) >= 3, 120)
        finally:
            first.kill()  # mid-run: reviews open, requests not yet started
        assert reviewed(reader) < 20, "everything finished before the kill"

        second = router(path, "all", sandbox_env)
        second.start()
        try:
            await second.wait_ready_async(60)
            await reader.until(
                lambda r: {e["event_id"] for e in r.values(f"out-{tag}")} >= wanted, 180
            )
            # A create the kill interrupted may land in the backend late (Label Studio applies
            # it after the client died): the router's sweeps must leave one review per name.
            names = {e["review"]["loop_name"] for e in reader.values(f"out-{tag}")
                     if e["decision"] == "reviewed"}  # fmt: skip
            loops = await backend.one_review_each("fast", names, timeout_s=60)
        finally:
            code = await second.stop_async()
        assert code == 0, second.output_tail()

    results = reader.values(f"out-{tag}")
    assert {e["event_id"] for e in results} == wanted  # nothing lost
    by_event: dict[str, set[str]] = {}
    for envelope in results:
        by_event.setdefault(envelope["event_id"], set()).add(envelope["decision"])
    for event_id, expected in fate.items():
        assert by_event[event_id] == ({"accepted"} if expected == "accepted" else {"reviewed"})
    assert set(loops) == names
    assert max(loops.values()) == 1  # the restart left no second review for any event


async def test_a_malformed_review_request_is_dead_lettered_and_the_partition_moves_on(
    sandbox: Sandbox, backend: Backend, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config(backend, tag, tmp_path)))
    bootstrap = sandbox.broker.bootstrap_servers
    # Both partitions get a broken record ahead of real requests.
    await produce(bootstrap, f"rr-{tag}", [(b"k", b"{broken"), (b"x", b"[1]")])
    records, fate = events(6, tag)
    await produce(bootstrap, f"in-{tag}", records)
    async with TopicReader(bootstrap, outputs) as reader:
        await run_router(
            path, sandbox_env, reader, lambda r: set(outcome_records(r, tag)) >= set(fate)
        )
        await reader.poll()
    letters = [e for e in reader.values(f"dlq-{tag}") if e["reason_class"] == "malformed_request"]
    assert sorted(e["value"] for e in letters) == ["[1]", "{broken"]
    assert {e["source"]["topic"] for e in letters} == {f"rr-{tag}"}
    await check_exactly_once(reader, fate, tag, backend)


async def test_an_unexpected_failure_takes_the_review_process_down_non_zero(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """A ledger record no version of the review role wrote stops the process (exit 1)."""
    tag = uuid.uuid4().hex[:8]
    await create_topics(sandbox, tag)
    await sandbox.broker.create_topics(
        [f"review-{tag}-ledger"], partitions=PARTITIONS, configs={"cleanup.policy": "compact"}
    )
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config(Backend("a2i", sandbox_info), tag, tmp_path)))
    await produce(sandbox.broker.bootstrap_servers, f"review-{tag}-ledger",
                  [(b"some-loop", b'{"v": 99}')])  # fmt: skip
    argv = ["-m", "stream_router.cli", "run", "--role", "review", "--config", str(path)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        env={**os.environ, **sandbox_env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 1, text[-3000:]
    assert "died (CorruptLedger: " in text
    assert "{broken" not in text  # the record itself is never logged
