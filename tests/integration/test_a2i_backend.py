"""A2IReviewBackend against the sandbox's A2I emulator and moto's S3."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest
import pytest_asyncio

from stream_router.aws.a2i import MAX_INPUT_CHARS, A2IReviewBackend
from stream_router.aws.clients import AwsClients, AwsEndpoints
from stream_router.errors import (
    ConfigError,
    ReviewCapacityExceeded,
    ReviewNameConflict,
    ReviewRejected,
    ReviewThrottled,
)
from stream_router.review.backend import ReviewState, ReviewStatus, StartOutcome
from stream_router.sandbox.a2i.launcher import A2IEmulator
from stream_router.sandbox.stack import SandboxInfo

pytestmark = pytest.mark.integration

Names = Callable[[str], str]
CONTENT = {"label": "cat", "confidence": 0.41, "event_id": "e-1"}


def aws_endpoints(info: SandboxInfo, *, max_attempts: int = 3) -> AwsEndpoints:
    env = info.env()
    return AwsEndpoints(
        region=info.region,
        endpoint_urls={
            "sagemaker-a2i-runtime": info.a2i_endpoint_url,
            "s3": info.aws_endpoint_url,
            "sqs": info.aws_endpoint_url,
        },
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        max_attempts=max_attempts,
    )


@pytest_asyncio.fixture
async def backend(sandbox_info: SandboxInfo) -> AsyncIterator[A2IReviewBackend]:
    async with A2IReviewBackend(AwsClients(aws_endpoints(sandbox_info))) as opened:
        yield opened


@pytest_asyncio.fixture
async def backend_without_retries(sandbox_info: SandboxInfo) -> AsyncIterator[A2IReviewBackend]:
    """botocore makes one attempt: the emulator's 429 and 500 reach the backend."""
    clients = AwsClients(aws_endpoints(sandbox_info, max_attempts=1))
    async with A2IReviewBackend(clients) as opened:
        yield opened


@pytest.fixture
def flows(sandbox_info: SandboxInfo) -> dict[str, str]:
    return sandbox_info.flow_definition_arns


async def settled(backend: A2IReviewBackend, name: str, timeout_s: float = 30.0) -> ReviewState:
    """Describe the loop until it has ended (the emulator ends loops on its own timers)."""

    async def poll() -> ReviewState:
        while True:
            state = await backend.describe(name)
            assert state is not None, f"loop {name} vanished"
            if state.status.terminal:
                return state
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout_s)


async def request_count(emulator: A2IEmulator, operation: str, outcome: str | None = None) -> int:
    counts: dict[str, int] = (await emulator.stats())["requests"].get(operation, {})
    return counts.get(outcome, 0) if outcome else sum(counts.values())


# -- start and describe --------------------------------------------------------------------------


async def test_start_then_describe(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    name = unique_name("start")
    before = time.time()
    outcome = await backend.start(name, flows["slow"], CONTENT)
    assert outcome == StartOutcome(
        name=name,
        backend_id=f"arn:aws:sagemaker:us-east-1:123456789012:human-loop/{name}",
        already_started=False,
    )
    state = await backend.describe(name)
    assert state is not None
    assert state.name == name
    assert state.status is ReviewStatus.IN_PROGRESS
    assert state.flow == flows["slow"]
    assert state.created_at_s is not None
    assert before - 1 <= state.created_at_s <= time.time()
    # As A2I does, an open loop names where its output.json will be written.
    assert state.output_uri is not None
    assert state.output_uri.startswith("s3://")
    assert state.output_uri.endswith(f"/{name}/output.json")
    assert state.failure_code is None


async def test_describe_unknown_loop_is_none(backend: A2IReviewBackend) -> None:
    assert await backend.describe("no-such-loop-anywhere") is None


async def test_identical_resend_is_accepted_as_new(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    """The emulator answers an identical re-send 200 with the existing ARN (an assumption)."""
    name = unique_name("again")
    first = await backend.start(name, flows["slow"], CONTENT)
    again = await backend.start(name, flows["slow"], dict(CONTENT))
    assert again == first
    assert again.already_started is False


async def test_conflict_on_the_same_flow_is_already_started(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    name = unique_name("conflict")
    first = await backend.start(name, flows["slow"], CONTENT)
    again = await backend.start(name, flows["slow"], {**CONTENT, "label": "dog"})
    assert again == StartOutcome(name=name, backend_id=first.backend_id, already_started=True)


async def test_conflict_with_another_flow_is_a_name_conflict(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    name = unique_name("taken")
    await backend.start(name, flows["slow"], CONTENT)
    with pytest.raises(ReviewNameConflict, match=name) as caught:
        await backend.start(name, flows["fast"], CONTENT)
    assert flows["slow"] in str(caught.value)
    assert caught.value.retriable is False


async def test_nested_mappings_are_serialized(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    name = unique_name("proxy")
    content = MappingProxyType({"label": "cat", "extra": MappingProxyType({"a": [1, 2]})})
    outcome = await backend.start(name, flows["slow"], content)
    assert outcome.already_started is False
    # The same content as plain dicts is the same InputContent: the emulator answers 200.
    assert await backend.start(name, flows["slow"], {"label": "cat", "extra": {"a": [1, 2]}})


async def test_content_classifiers(
    sandbox_info: SandboxInfo, flows: dict[str, str], unique_name: Names
) -> None:
    clients = AwsClients(aws_endpoints(sandbox_info))
    classifiers = ["FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent"]
    async with A2IReviewBackend(clients, content_classifiers=classifiers) as backend:
        outcome = await backend.start(unique_name("classified"), flows["slow"], CONTENT)
    assert outcome.already_started is False
    with pytest.raises(ConfigError, match="FreeOfEverything"):
        A2IReviewBackend(clients, content_classifiers=["FreeOfEverything"])


async def test_calls_before_open_say_what_to_do(sandbox_info: SandboxInfo) -> None:
    backend = A2IReviewBackend(AwsClients(aws_endpoints(sandbox_info)))
    with pytest.raises(RuntimeError, match="open"):
        await backend.describe("any-loop")


# -- errors ------------------------------------------------------------------------------------


async def test_throttling_is_review_throttled(
    backend_without_retries: A2IReviewBackend,
    a2i_faults: A2IEmulator,
    flows: dict[str, str],
    unique_name: Names,
) -> None:
    await a2i_faults.set_faults(quota_rps=0.1, quota_burst=1)
    await backend_without_retries.start(unique_name("quota"), flows["slow"], CONTENT)
    with pytest.raises(ReviewThrottled, match="ThrottlingException") as caught:
        await backend_without_retries.start(unique_name("quota"), flows["slow"], CONTENT)
    assert caught.value.retriable is True


async def test_internal_errors_are_review_throttled(
    backend_without_retries: A2IReviewBackend,
    a2i_faults: A2IEmulator,
    flows: dict[str, str],
    unique_name: Names,
) -> None:
    await a2i_faults.set_faults(internal_error_rate=1.0)
    with pytest.raises(ReviewThrottled, match="InternalServerException"):
        await backend_without_retries.start(unique_name("boom"), flows["slow"], CONTENT)
    with pytest.raises(ReviewThrottled, match="InternalServerException"):
        await backend_without_retries.describe(unique_name("boom"))


async def test_active_loop_quota_is_capacity_exceeded(
    backend: A2IReviewBackend, a2i_faults: A2IEmulator, flows: dict[str, str], unique_name: Names
) -> None:
    await a2i_faults.set_faults(max_active_loops=0)
    with pytest.raises(ReviewCapacityExceeded, match="ServiceQuotaExceededException") as caught:
        await backend.start(unique_name("full"), flows["slow"], CONTENT)
    assert caught.value.retriable is True


@pytest.mark.parametrize(
    ("name", "flow", "fragment"),
    [
        ("Not_A_Loop_Name", "slow", "humanLoopName"),
        (None, "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/nope", "does not exist"),
    ],
)
async def test_validation_is_rejected(
    backend: A2IReviewBackend,
    flows: dict[str, str],
    unique_name: Names,
    *,
    name: str | None,
    flow: str,
    fragment: str,
) -> None:
    with pytest.raises(ReviewRejected, match="ValidationException") as caught:
        await backend.start(name or unique_name("bad"), flows.get(flow, flow), CONTENT)
    assert fragment in str(caught.value)
    assert caught.value.retriable is False


async def test_content_at_the_limit_starts_and_beyond_it_a2i_rejects(
    backend: A2IReviewBackend, a2i_faults: A2IEmulator, flows: dict[str, str], unique_name: Names
) -> None:
    """The starter refuses oversize content without a call (``tests/unit/review/
    test_starter.py``); the backend itself sends it, and A2I's ValidationException is a
    rejection. Content that is not JSON is rejected without a request."""
    padding = MAX_INPUT_CHARS - len('{"x":""}')
    starts = await request_count(a2i_faults, "StartHumanLoop")
    at_limit = await backend.start(unique_name("limit"), flows["slow"], {"x": "y" * padding})
    assert at_limit.already_started is False
    assert await request_count(a2i_faults, "StartHumanLoop") == starts + 1

    with pytest.raises(ReviewRejected, match="ValidationException"):
        await backend.start(unique_name("over"), flows["slow"], {"x": "y" * (padding + 1)})
    assert await request_count(a2i_faults, "StartHumanLoop") == starts + 2
    with pytest.raises(ReviewRejected, match="not JSON"):
        await backend.start(unique_name("odd"), flows["slow"], {"x": {1, 2}})
    assert await request_count(a2i_faults, "StartHumanLoop") == starts + 2


# -- stop and delete -----------------------------------------------------------------------------


async def test_stop_then_delete(
    backend: A2IReviewBackend, a2i_faults: A2IEmulator, flows: dict[str, str], unique_name: Names
) -> None:
    name = unique_name("stop")
    await backend.start(name, flows["slow"], CONTENT)
    with pytest.raises(ReviewRejected, match="InProgress"):
        await backend.delete(name)

    await backend.stop(name)
    state = await backend.describe(name)
    assert state is not None
    assert state.status in {ReviewStatus.STOPPING, ReviewStatus.STOPPED}
    ended = await settled(backend, name)
    assert ended.status is ReviewStatus.STOPPED
    assert ended.output_uri is None  # nobody held the task

    refused = await request_count(a2i_faults, "StopHumanLoop", "ValidationException")
    await backend.stop(name)  # A2I refuses to stop a Stopped loop: not an error for us
    assert await request_count(a2i_faults, "StopHumanLoop", "ValidationException") == refused + 1

    await backend.delete(name)
    assert await backend.describe(name) is None
    await backend.delete(name)  # already gone
    await backend.stop(name)  # unknown


async def test_stop_with_a_bad_name_is_rejected(backend: A2IReviewBackend) -> None:
    with pytest.raises(ReviewRejected, match="ValidationException"):
        await backend.stop("Bad_Name")


# -- results ---------------------------------------------------------------------------------------


async def test_fetch_result_of_a_panel(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    name = unique_name("panel")
    content = {"label": "cat", "confidence": 0.41, "ground_truth": "dog", "nested": {"a": [1]}}
    await backend.start(name, flows["panel"], content)
    state = await settled(backend, name)
    assert state.status is ReviewStatus.COMPLETED
    assert state.output_uri is not None
    assert state.output_uri.endswith(f"/{name}/output.json")

    result = await backend.fetch_result(state)
    assert result.name == name
    assert result.flow == flows["panel"]
    assert result.input_content == content
    assert len(result.answers) == 3
    assert len({answer.worker_id for answer in result.answers}) == 3
    assert state.created_at_s is not None
    for answer in result.answers:
        assert set(answer.content) == {"label"}
        assert answer.content["label"]["label"] in {"cat", "dog", "bird", "other"}
        assert answer.accepted_at_s is not None
        assert answer.submitted_at_s is not None
        assert state.created_at_s - 0.001 <= answer.accepted_at_s <= answer.submitted_at_s
        assert answer.submitted_at_s <= time.time()
        assert answer.time_spent_s == pytest.approx(
            answer.submitted_at_s - answer.accepted_at_s, abs=0.002
        )


def bad_answer(**changes: Any) -> dict[str, Any]:
    answer = {
        "answerContent": {"label": {"label": "cat"}},
        "acceptanceTime": "2020-12-28T18:59:15.191Z",
        "submissionTime": "2020-12-28T18:59:58.321Z",
        "timeSpentInSeconds": 43.13,
        "workerId": "a12b3cdefg4h5i67",
    }
    answer.update(changes)
    return {"humanAnswers": [answer]}


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not an object"),
        (json.dumps({"humanAnswers": "none"}).encode(), "humanAnswers"),
        (json.dumps({"inputContent": []}).encode(), "humanAnswers"),
        (json.dumps({"humanAnswers": [], "inputContent": [1]}).encode(), "inputContent"),
        (json.dumps({"humanAnswers": [], "humanLoopName": "other"}).encode(), "other"),
        (json.dumps({"humanAnswers": [7]}).encode(), r"humanAnswers\[0\]"),
        (json.dumps(bad_answer(answerContent=None)).encode(), "answerContent"),
        (json.dumps(bad_answer(workerId=None)).encode(), "workerId"),
        (json.dumps(bad_answer(acceptanceTime="yesterday")).encode(), "ISO 8601"),
        (json.dumps(bad_answer(submissionTime=17)).encode(), "not a string"),
        (json.dumps(bad_answer(timeSpentInSeconds="43")).encode(), "timeSpentInSeconds"),
    ],
)
async def test_malformed_output_is_rejected(
    backend: A2IReviewBackend,
    s3: Any,
    sandbox_info: SandboxInfo,
    *,
    flows: dict[str, str],
    unique_name: Names,
    document: bytes,
    reason: str,
) -> None:
    name = unique_name("malformed")
    key = f"tests/{name}/result.json"  # not output.json: no S3 notification for the watchers
    bucket = sandbox_info.output_bucket
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key, Body=document)
    state = ReviewState(
        name, ReviewStatus.COMPLETED, flows["fast"], output_uri=f"s3://{bucket}/{key}"
    )
    with pytest.raises(ReviewRejected, match=reason) as caught:
        await backend.fetch_result(state)
    assert "malformed" in str(caught.value)


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 5 hours off UTC, so that reading naive times as local time shows."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_not_utc")
async def test_well_formed_output_written_by_hand(
    backend: A2IReviewBackend, s3: Any, sandbox_info: SandboxInfo, flows: dict[str, str]
) -> None:
    """The documented sample parses; naive times are UTC; optional fields may be absent."""
    document = bad_answer()  # valid as given
    document["humanAnswers"].append(
        {"answerContent": {}, "workerId": "w2", "acceptanceTime": "2020-12-28T19:00:00"}
    )
    key = "tests/by-hand/result.json"
    bucket = sandbox_info.output_bucket
    await asyncio.to_thread(
        s3.put_object, Bucket=bucket, Key=key, Body=json.dumps(document).encode()
    )
    state = ReviewState(
        "by-hand", ReviewStatus.COMPLETED, flows["fast"], output_uri=f"s3://{bucket}/{key}"
    )
    result = await backend.fetch_result(state)
    assert result.flow == flows["fast"]  # no flowDefinitionArn in the document
    assert result.input_content == {}
    first, second = result.answers
    assert first.accepted_at_s == pytest.approx(1609181955.191)
    assert first.submitted_at_s == pytest.approx(1609181998.321)
    assert first.time_spent_s == 43.13
    assert second.accepted_at_s == 1609182000.0
    assert second.submitted_at_s is None
    assert second.time_spent_s is None


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (None, "no output_uri"),
        ("https://example.com/output.json", "not s3://bucket/key"),
        ("s3://bucket-only", "not s3://bucket/key"),
        ("s3://stream-router-a2i-output/tests/absent/output.json", "does not exist"),
    ],
)
async def test_unreadable_output_is_rejected(
    backend: A2IReviewBackend, flows: dict[str, str], uri: str | None, reason: str
) -> None:
    state = ReviewState("absent", ReviewStatus.COMPLETED, flows["fast"], output_uri=uri)
    with pytest.raises(ReviewRejected, match=reason):
        await backend.fetch_result(state)


# -- pending -------------------------------------------------------------------------------------


async def test_pending_lists_unfinished_loops_page_by_page(
    sandbox_info: SandboxInfo, a2i_faults: A2IEmulator, flows: dict[str, str], unique_name: Names
) -> None:
    clients = AwsClients(aws_endpoints(sandbox_info))
    async with A2IReviewBackend(clients, page_size=2) as backend:
        since = time.time()
        names = [unique_name("pending") for _ in range(5)]
        for name in names:
            await backend.start(name, flows["slow"], CONTENT)
        for name in (names[1], names[3]):
            await backend.stop(name)
        for name in (names[1], names[3]):
            assert (await settled(backend, name)).status is ReviewStatus.STOPPED

        pages_before = await request_count(a2i_faults, "ListHumanLoops", "OK")
        pending = [state async for state in backend.pending(flows["slow"], since)]
        pages = await request_count(a2i_faults, "ListHumanLoops", "OK") - pages_before

        assert [state.name for state in pending] == [names[0], names[2], names[4]]
        assert pages == 3  # five loops, two per page
        assert all(state.status is ReviewStatus.IN_PROGRESS for state in pending)
        assert all(state.flow == flows["slow"] for state in pending)
        created = [state.created_at_s or 0.0 for state in pending]
        assert created == sorted(created)
        assert created[0] >= since - 0.001

        everything = {state.name async for state in backend.pending(flows["slow"])}
        assert {names[0], names[2], names[4]} <= everything
        assert not {names[1], names[3]} & everything
        assert [s async for s in backend.pending(flows["slow"], time.time() + 3600)] == []


async def test_pending_skips_failed_loops(
    backend: A2IReviewBackend, flows: dict[str, str], unique_name: Names
) -> None:
    since = time.time()
    name = unique_name("expires")
    await backend.start(name, flows["never"], CONTENT)
    state = await settled(backend, name)
    assert state.status is ReviewStatus.FAILED
    assert state.failure_code == "Expired"
    assert state.failure_reason is not None
    assert state.output_uri is None
    assert name not in {s.name async for s in backend.pending(flows["never"], since)}


async def test_pending_of_an_unknown_flow_is_rejected(backend: A2IReviewBackend) -> None:
    flow = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/nope"
    with pytest.raises(ReviewRejected, match="ResourceNotFoundException"):
        _ = [state async for state in backend.pending(flow)]
