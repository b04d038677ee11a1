"""Closed ledger entries are deleted after their retention, over the wire (the changelog shows it).

The ledger topic is what a restarted worker reads its entries from, so the deletions must reach
it as tombstones; a run after the deletions still ends each event exactly once.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader, produce
from tests.integration.review_backends import Backend
from tests.integration.test_review_e2e import (
    PARTITIONS,
    check_exactly_once,
    config,
    create_topics,
    events,
    outcome_records,
    run_router,
)

pytestmark = pytest.mark.integration


async def test_closed_entries_are_deleted_after_the_retention(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    bootstrap = sandbox.broker.bootstrap_servers
    # Requests may not outlive their ledger entries: the topic keeps them no longer (start-up
    # checks it). Kafka deletes only closed segments, so the test's records stay readable.
    await sandbox.broker.create_topics(
        [f"rr-{tag}"], partitions=PARTITIONS, configs={"retention.ms": "1000"}
    )
    outputs = await create_topics(sandbox, tag)
    path = tmp_path / "router.yaml"
    settings = config(Backend("a2i", sandbox_info), tag, tmp_path, ledger_retention_s=1)
    settings["topics"] = {"review_requests_retention_s": 1}
    path.write_text(yaml.safe_dump(settings))

    first, first_fate = events(30, f"{tag}a")
    second, second_fate = events(30, f"{tag}b")
    fate = {**first_fate, **second_fate}
    async with TopicReader(bootstrap, outputs) as reader:
        await produce(bootstrap, f"in-{tag}", first)
        await run_router(
            path, sandbox_env, reader, lambda r: set(outcome_records(r, tag)) >= set(first_fate)
        )
        # The second run recovers the ledger, then each event it handles deletes what expired.
        await produce(bootstrap, f"in-{tag}", second)
        await run_router(
            path, sandbox_env, reader, lambda r: set(outcome_records(r, tag)) >= set(fate)
        )
        await reader.poll()
    await check_exactly_once(reader, fate, tag, Backend("a2i", sandbox_info))

    first_reviews = {e for e, f in first_fate.items() if f == "review"}
    reviewed_names = {
        e["review"]["loop_name"]
        for e in reader.values(f"out-{tag}")
        if e["decision"] == "reviewed" and e["event_id"] in first_reviews
    }
    assert len(reviewed_names) == len(first_reviews)
    changelog = f"review-{tag}-ledger"
    async with TopicReader(bootstrap, {changelog: PARTITIONS}) as ledger:
        await ledger.until(
            lambda r: (
                reviewed_names
                <= {rec.key.decode() for rec in r.records[changelog] if rec.value is None}
            ),
            30,
        )
