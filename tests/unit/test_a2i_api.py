"""The emulator's operations without HTTP: validation, idempotency, states, pagination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_router.sandbox.a2i.api import ApiError, HumanLoopApi, output_key, parse_timestamp
from stream_router.sandbox.a2i.control import ControlPlaneApi
from stream_router.sandbox.a2i.resources import ResourceStore
from stream_router.sandbox.a2i.store import LoopStore
from stream_router.sandbox.settings import FlowDefinition, SandboxSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(tmp_path: Path, clock: Clock) -> HumanLoopApi:
    settings = SandboxSettings(flow_definitions=[FlowDefinition(name="fd")])
    scheduled: list[tuple[float, str]] = []
    limit: list[int | None] = [None]
    control = ControlPlaneApi(settings, ResourceStore(tmp_path / "a2i.sqlite3"), clock=clock)
    made = HumanLoopApi(
        settings,
        LoopStore(tmp_path / "a2i.sqlite3"),
        clock=clock,
        schedule=lambda at, name: scheduled.append((at, name)),
        flow=control.flow,
        max_active_loops=lambda: limit[0],
    )
    made.scheduled = scheduled  # type: ignore[attr-defined]
    made.limit = limit  # type: ignore[attr-defined]
    return made


ARN = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/fd"


def body(name: str = "loop", content: object = None, **extra: object) -> dict[str, object]:
    text = json.dumps(content if content is not None else {"label": "cat"})
    return {
        "HumanLoopName": name,
        "FlowDefinitionArn": ARN,
        "HumanLoopInput": {"InputContent": text},
        **extra,
    }


def code_of(call: object) -> str:
    with pytest.raises(ApiError) as caught:
        call()  # type: ignore[operator]
    return caught.value.kind.code


def test_start_schedules_the_planned_end(api: HumanLoopApi) -> None:
    arn = api.start_human_loop(body())["HumanLoopArn"]
    assert arn.endswith(":human-loop/loop")
    assert api.scheduled == [(api.store.get("loop").due_at, "loop")]  # type: ignore[attr-defined,union-attr]


def test_idempotent_start_and_conflict(api: HumanLoopApi) -> None:
    api.start_human_loop(body(content={"a": 1, "b": 2}))
    # Same JSON, other key order and spacing: the same input.
    again = body()
    again["HumanLoopInput"] = {"InputContent": '{"b": 2,   "a": 1}'}
    api.start_human_loop(again)
    assert code_of(lambda: api.start_human_loop(body(content={"a": 2}))) == "ConflictException"


@pytest.mark.parametrize(
    "request_body",
    [
        [],
        {"FlowDefinitionArn": ARN, "HumanLoopInput": {"InputContent": "{}"}},
        body(name=""),
        body(name="a" * 64),
        body(name="a--"),
        body(content=[1]),
        {**body(), "HumanLoopInput": {}},
        {**body(), "HumanLoopInput": {"InputContent": 5}},
        {**body(), "FlowDefinitionArn": ARN + "x"},
        {**body(), "FlowDefinitionArn": "arn:aws:sagemaker:us-east-1:12:flow-definition/fd"},
        body(DataAttributes={"ContentClassifiers": "FreeOfAdultContent"}),
        body(DataAttributes={"ContentClassifiers": ["FreeOfAdultContent"] * 257}),
    ],
)
def test_start_validation(api: HumanLoopApi, request_body: object) -> None:
    assert code_of(lambda: api.start_human_loop(request_body)) == "ValidationException"


def test_quota_counts_active_loops_only(api: HumanLoopApi, clock: Clock) -> None:
    api.limit[0] = 1  # type: ignore[attr-defined]
    api.start_human_loop(body("one"))
    assert code_of(lambda: api.start_human_loop(body("two"))) == "ServiceQuotaExceededException"
    api.start_human_loop(body("one"))  # existing loop: no new quota needed


def test_stop_and_delete_rules(api: HumanLoopApi, clock: Clock) -> None:
    api.start_human_loop(body())
    assert code_of(lambda: api.delete_human_loop("loop")) == "ValidationException"
    api.stop_human_loop({"HumanLoopName": "loop"})
    assert api.describe_human_loop("loop")["HumanLoopStatus"] == "Stopping"
    api.stop_human_loop({"HumanLoopName": "loop"})  # no-op while Stopping
    loop = api.store.get("loop")
    assert loop is not None
    api.store.put(loop.evolve(status="Stopped", due_at=None))
    assert code_of(lambda: api.stop_human_loop({"HumanLoopName": "loop"})) == "ValidationException"
    api.delete_human_loop("loop")
    assert code_of(lambda: api.describe_human_loop("loop")) == "ResourceNotFoundException"
    api.start_human_loop(body(content={"other": True}))  # a deleted name can be used again


def test_stop_after_workers_accepted_keeps_their_answers(api: HumanLoopApi, clock: Clock) -> None:
    api.start_human_loop(body())
    loop = api.store.get("loop")
    assert loop is not None
    clock.now = loop.plan.answers[0].accepted_at + 0.001
    api.stop_human_loop({"HumanLoopName": "loop"})
    stopped = api.store.get("loop")
    assert stopped is not None
    assert stopped.plan.answers == loop.plan.answers
    assert stopped.due_at == max(loop.plan.ends_at, clock.now + api.settings.stop_settle_s)


def test_list_pages_in_creation_order(api: HumanLoopApi, clock: Clock) -> None:
    for index in range(5):
        clock.now += 1
        api.start_human_loop(body(f"loop-{index}"))
    names: list[str] = []
    token = None
    while True:
        query = {"FlowDefinitionArn": ARN, "SortOrder": "Ascending", "MaxResults": "2"}
        if token:
            query["NextToken"] = token
        page = api.list_human_loops(query)
        names += [s["HumanLoopName"] for s in page["HumanLoopSummaries"]]
        token = page.get("NextToken")
        if not token:
            break
    assert names == [f"loop-{i}" for i in range(5)]
    descending = api.list_human_loops({"FlowDefinitionArn": ARN})
    listed = [s["HumanLoopName"] for s in descending["HumanLoopSummaries"]]
    assert listed == [f"loop-{i}" for i in reversed(range(5))]
    # A token belongs to its query: reusing it with another sort order is refused.
    first_page = api.list_human_loops({"FlowDefinitionArn": ARN, "MaxResults": "1"})
    mismatched = {
        "FlowDefinitionArn": ARN,
        "SortOrder": "Ascending",
        "NextToken": first_page["NextToken"],
    }
    assert code_of(lambda: api.list_human_loops(mismatched)) == "ValidationException"


def test_output_key_layout() -> None:
    assert (
        output_key("a2i/", "fd", "loop", 1_609_181_955.5)
        == "a2i/fd/2020/12/28/18/59/15/loop/output.json"
    )
    assert output_key("", "fd", "loop", 0) == "fd/1970/01/01/00/00/00/loop/output.json"


def test_parse_timestamp_forms() -> None:
    assert parse_timestamp("2020-12-28T18:59:15Z", "t") == 1_609_181_955.0
    assert parse_timestamp("2020-12-28T18:59:15.500000Z", "t") == 1_609_181_955.5
    assert parse_timestamp("1609181955", "t") == 1_609_181_955.0
    with pytest.raises(ApiError):
        parse_timestamp("yesterday", "t")
