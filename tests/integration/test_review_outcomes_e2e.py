"""Review outcomes over the wire: escalation, rejected starts, oversize input, the loop quota.

Each test runs ``stream-router run --role all`` on the sandbox as a child process and reads every
outcome back from the topics; the emulator is asked which human loops exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream_router.aws.a2i import MAX_INPUT_CHARS
from stream_router.sandbox.aws import client as sandbox_client
from stream_router.sandbox.settings import FlowDefinition, SandboxSettings
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import (
    PARTITIONS,
    config,
    create_topics,
    events,
    run_router,
)
from tests.integration.test_review_e2e import outcome_records as outcomes

pytestmark = pytest.mark.integration

Settings = dict[str, Any]


def describe(info: SandboxInfo, name: str) -> dict[str, Any] | None:
    """DescribeHumanLoop on the emulator; None when no such loop exists."""
    a2i = sandbox_client("sagemaker-a2i-runtime", info.a2i_endpoint_url, info.region)
    try:
        reply: dict[str, Any] = a2i.describe_human_loop(HumanLoopName=name)
        return reply
    except a2i.exceptions.ResourceNotFoundException:
        return None
    finally:
        a2i.close()


async def run(
    sandbox: Sandbox,
    env: dict[str, str],
    tmp_path: Path,
    count: int,
    change: Callable[[Settings, SandboxInfo], None],
    *,
    timeout_s: float = 120,
) -> tuple[TopicReader, dict[str, str], str]:
    """Run the router on ``count`` events until each has an outcome; ``change`` edits the
    configuration first. Returns the reader, each event's expected fate and the tag."""
    tag = uuid.uuid4().hex[:8]
    info = sandbox.info()
    outputs = await create_topics(sandbox, tag)
    settings = config(Backend("a2i", info), tag, tmp_path)
    change(settings, info)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    records, fate = events(count, tag)
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", records)
    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
        done = lambda r: set(outcomes(r, tag)) >= set(fate)  # noqa: E731
        await run_router(path, env, reader, done, timeout_s)
        await reader.poll()
    return reader, fate, tag


def single(reader: TopicReader, tag: str, fate: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each event's one record (fails if an event has none or several)."""
    found = outcomes(reader, tag)
    assert set(found) == set(fate)
    assert all(len(records) == 1 for records in found.values()), found
    return {event_id: records[0] for event_id, records in found.items()}


def reviewed_events(fate: dict[str, str]) -> set[str]:
    return {event_id for event_id, f in fate.items() if f == "review"}


async def test_expired_reviews_escalate_to_the_second_flow(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Nobody takes tasks on ``never``: each review expires, then the ``fast`` flow reviews it."""

    def change(settings: Settings, info: SandboxInfo) -> None:
        settings["policies"]["routes"][0]["review_flow"] = info.flow_definition_arns["never"]
        settings["review"].update(
            on_failure="escalate",
            escalation_flows={"general": info.flow_definition_arns["fast"]},
            max_attempts=2,
        )

    reader, fate, tag = await run(sandbox, sandbox_env, tmp_path, 15, change)
    info = sandbox.info()
    records = single(reader, tag, fate)
    for event_id in reviewed_events(fate):
        envelope = records[event_id]
        assert envelope["decision"] == "reviewed", envelope
        second = envelope["review"]["loop_name"]
        first = second.removesuffix("-a2")
        assert second == f"{first}-a2"
        expired = describe(info, first)
        assert expired is not None
        assert expired["HumanLoopStatus"] == "Failed"
        assert expired["FailureCode"] == "Expired"
        assert expired["FlowDefinitionArn"] == info.flow_definition_arns["never"]
        done = describe(info, second)
        assert done is not None
        assert done["HumanLoopStatus"] == "Completed"
        assert done["FlowDefinitionArn"] == info.flow_definition_arns["fast"]


async def test_escalation_stops_after_max_attempts(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Escalating to a flow that also expires ends unreviewed after ``max_attempts`` loops."""

    def change(settings: Settings, info: SandboxInfo) -> None:
        never = info.flow_definition_arns["never"]
        settings["policies"]["routes"][0]["review_flow"] = never
        settings["review"].update(
            on_failure="escalate", escalation_flows={"general": never}, max_attempts=2
        )

    reader, fate, tag = await run(sandbox, sandbox_env, tmp_path, 9, change)
    info = sandbox.info()
    records = single(reader, tag, fate)
    for event_id in reviewed_events(fate):
        envelope = records[event_id]
        assert envelope["decision"] == "unreviewed", envelope
        assert envelope["review"]["failure_code"] == "Expired"
        last = envelope["review"]["loop_name"]
        first = last.removesuffix("-a2")
        assert last == f"{first}-a2"
        for name in (first, last):
            loop = describe(info, name)
            assert loop is not None
            assert loop["FailureCode"] == "Expired"
        assert describe(info, f"{first}-a3") is None  # bounded: no third attempt


async def test_a_rejected_start_is_dead_lettered_with_the_reason(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, a2i_emulator_factory: Any
) -> None:
    """StartHumanLoop answers 400 ValidationException (an unknown flow definition). The
    start-up check passes: it asks another emulator, which has the flow (as if the flow
    definition were deleted after the router started)."""
    control = await a2i_emulator_factory(
        SandboxSettings(flow_definitions=[FlowDefinition(name="no-such-flow")])
    )
    env = {**sandbox_env, "AWS_ENDPOINT_URL_SAGEMAKER": control.endpoint_url}

    def change(settings: Settings, info: SandboxInfo) -> None:
        arn = info.flow_definition_arns["fast"].rsplit("/", 1)[0] + "/no-such-flow"
        settings["policies"]["routes"][0]["review_flow"] = arn

    reader, fate, tag = await run(sandbox, env, tmp_path, 9, change)
    records = single(reader, tag, fate)
    for event_id in reviewed_events(fate):
        record = records[event_id]
        assert "review_request" in record, record  # a dead letter, not a result
        assert record["reason_class"] == "rejected"
        assert "ValidationException" in record["reason"]
        assert describe(sandbox.info(), record["review_request"]["loop_name"]) is None


async def test_the_open_loop_quota_pauses_starts_and_loses_nothing(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, a2i_faults: Any
) -> None:
    """402 ServiceQuotaExceeded: starts wait for reviews to end; every request is reviewed."""
    stats = await a2i_faults.stats()
    await a2i_faults.set_faults(max_active_loops=stats["active_loops"] + 2)

    reader, fate, tag = await run(sandbox, sandbox_env, tmp_path, 30, lambda s, i: None)
    records = single(reader, tag, fate)
    assert {records[e]["decision"] for e in reviewed_events(fate)} == {"reviewed"}
    starts = (await a2i_faults.stats())["requests"]["StartHumanLoop"]
    assert starts.get("ServiceQuotaExceededException", 0) > 0


async def test_oversize_input_is_published_unreviewed(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """A review request whose InputContent would exceed 3,145,728 characters is published
    unreviewed with failure code InputTooLarge; no review is started, the process lives on."""
    tag = uuid.uuid4().hex[:8]
    info = sandbox.info()
    bootstrap = sandbox.broker.bootstrap_servers
    # Requests this large exist only where the topic allows them (Kafka's default is 1 MB).
    await sandbox.broker.create_topics(
        [f"rr-{tag}"], partitions=PARTITIONS, configs={"max.message.bytes": str(8 << 20)}
    )
    outputs = await create_topics(sandbox, tag)
    settings = config(Backend("a2i", info), tag, tmp_path)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    records, fate = events(3, tag)  # one review request, to copy
    await produce(bootstrap, f"in-{tag}", records)
    process = router(path, "all", sandbox_env)
    process.start()
    try:
        await process.wait_ready_async(60)
        async with TopicReader(bootstrap, outputs) as reader:
            await reader.until(lambda r: set(outcomes(r, tag)) >= set(fate), 60)
            request = reader.values(f"rr-{tag}")[0]
            big = {**request, "event_id": f"{tag}-big", "loop_name": f"{tag}-big-{tag}"}
            big["event"] = {**request["event"], "blob": "x" * MAX_INPUT_CHARS}
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20)
            await producer.start()
            try:
                key = big["loop_name"].encode()
                await producer.send_and_wait(f"rr-{tag}", orjson.dumps(big), key=key)
            finally:
                await producer.stop()
            await reader.until(lambda r: f"{tag}-big" in outcomes(r, tag), 60)
            records_after, _ = events(6, f"{tag}y")  # the process still works afterwards
            await produce(bootstrap, f"in-{tag}", records_after)
            await reader.until(lambda r: sum(e.startswith(f"{tag}y") for e in outcomes(r, tag))
                               >= 6, 60)  # fmt: skip
    finally:
        code = await process.stop_async()
    assert code == 0, process.output_tail()
    [envelope] = outcomes(reader, tag)[f"{tag}-big"]
    assert envelope["decision"] == "unreviewed"
    assert envelope["review"]["failure_code"] == "InputTooLarge"
    assert envelope["event"] == {}  # left out: Kafka would refuse it; source locates it
    assert envelope["source"] == request["source"]
    assert describe(info, big["loop_name"]) is None
