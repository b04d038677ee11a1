"""The request audit on the sandbox: requests committed past but never handled still end once.

faust can commit the review application's offsets past review requests no agent handled (see
``stream_router/review/audit.py``). The test makes that state on purpose, over the wire: the
ingest role writes review requests, then the review application's consumer group is committed
past them before the review role ever runs, exactly what faust leaves behind.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka import ConsumerRecord, TopicPartition

from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader, commit_offsets, produce
from tests.integration.router_process import router
from tests.integration.test_review_e2e import (
    config,
    create_topics,
    emulator_loops,
    events,
    outcome_records,
    run_router,
)

pytestmark = pytest.mark.integration


async def commit_past(bootstrap: str, group: str, records: list[ConsumerRecord]) -> None:
    """Commit ``group``'s offsets past ``records``, as faust does past records it lost.

    The offsets come from the records read, not from ListOffsets: this broker can report end
    offsets short of the records it holds (see ../shared/broker-notes.md).
    """
    ends: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    await commit_offsets(bootstrap, group, ends)


async def test_committed_but_unhandled_requests_are_re_sent_and_end_exactly_once(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    bootstrap = sandbox.broker.bootstrap_servers
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"

    def write_config(**review: object) -> None:
        path.write_text(yaml.safe_dump(config(sandbox_info, tag, tmp_path, **review)))

    lost, lost_fate = events(15, f"{tag}a")
    handled, handled_fate = events(15, f"{tag}b")
    lost_reviews = {e for e, fate in lost_fate.items() if fate == "review"}
    async with TopicReader(bootstrap, outputs) as reader:
        # 1. Ingest writes review requests; the review group is committed past all of them.
        write_config()
        await produce(bootstrap, f"in-{tag}", lost)
        ingest = router(path, "ingest", sandbox_env)
        ingest.start()
        try:
            await ingest.wait_ready_async(60)
            await reader.until(lambda r: len(r.records[f"rr-{tag}"]) >= 5, 60)
        finally:
            assert await ingest.stop_async() == 0, ingest.output_tail()
        await commit_past(bootstrap, f"review-{tag}", reader.records[f"rr-{tag}"])

        # 2. A run with the audit idle: the next events end, the lost requests stay lost. The
        #    budget lets at most two reviews start; the rest are dead-lettered (ledger entries
        #    closed with no review behind them, which the audit must recognise as handled).
        write_config(
            budgets={"general": {"per_day": 2}},
            budget_fallback="dead-letter",
            audit_interval_s=3600,
        )
        await produce(bootstrap, f"in-{tag}", handled)
        await run_router(
            path, sandbox_env, reader, lambda r: set(outcome_records(r, tag)) >= set(handled_fate)
        )
        await reader.poll()
        assert not set(outcome_records(reader, tag)) & lost_reviews
        first_reviewed = sum(e["decision"] == "reviewed" for e in reader.values(f"out-{tag}"))
        assert 1 <= first_reviewed <= 2  # so three or more were dead-lettered
        assert len(reader.records[f"rr-{tag}"]) == 10

        # 3. With the audit on, the lost requests are found, re-sent once and reviewed.
        write_config(audit_interval_s=1)
        everything = set(handled_fate) | set(lost_fate)
        await run_router(
            path, sandbox_env, reader, lambda r: set(outcome_records(r, tag)) >= everything
        )
        await reader.poll()

    outcomes = outcome_records(reader, tag)
    assert set(outcomes) == everything
    assert {k: len(v) for k, v in outcomes.items() if len(v) != 1} == {}
    requests = reader.values(f"rr-{tag}")
    copies = sorted(r["event"]["event_id"] for r in requests[10:])
    assert copies == sorted(lost_reviews)  # each lost request re-sent once, nothing else
    reviewed = [e for v in outcomes.values() for e in v if e.get("decision") == "reviewed"]
    assert {e["event_id"] for e in reviewed} >= lost_reviews
    names = {e["review"]["loop_name"] for e in reviewed}
    assert len(names) == first_reviewed + len(lost_reviews)
    loops = emulator_loops(sandbox_info, names)
    assert set(loops) == names
    assert max(loops.values()) == 1
