"""Contract tests: unmodified boto3 and aioboto3 clients against the A2I runtime emulator."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest

from stream_router.sandbox.stack import SandboxInfo
from tests.integration.conftest import A2IClient, wait_for_events
from tests.integration.test_flow_definition_check import missing_members

pytestmark = pytest.mark.integration

Names = Callable[[str], str]


def loop_input(**fields: Any) -> dict[str, str]:
    return {"InputContent": json.dumps({"label": "cat", "confidence": 0.4, **fields})}


async def start(a2i: A2IClient, name: str, arn: str, **fields: Any) -> dict[str, Any]:
    return await a2i.call(
        "start_human_loop",
        HumanLoopName=name,
        FlowDefinitionArn=arn,
        HumanLoopInput=loop_input(**fields),
    )


async def test_start_and_describe(
    a2i: A2IClient, fast_arn: str, unique_name: Names, sandbox_info: SandboxInfo
) -> None:
    name = unique_name("loop")
    response = await a2i.call(
        "start_human_loop",
        HumanLoopName=name,
        FlowDefinitionArn=fast_arn,
        HumanLoopInput=loop_input(),
        DataAttributes={"ContentClassifiers": ["FreeOfPersonallyIdentifiableInformation"]},
    )
    assert response["HumanLoopArn"] == f"arn:aws:sagemaker:us-east-1:123456789012:human-loop/{name}"

    described = await a2i.call("describe_human_loop", HumanLoopName=name)
    assert described["HumanLoopName"] == name
    assert described["HumanLoopArn"] == response["HumanLoopArn"]
    assert described["FlowDefinitionArn"] == fast_arn
    assert described["HumanLoopStatus"] == "InProgress"
    assert isinstance(described["CreationTime"], datetime)
    assert abs(described["CreationTime"] - datetime.now(UTC)) < timedelta(seconds=30)
    # As A2I does, an open loop already names where its output.json will be written.
    created, flow = described["CreationTime"], fast_arn.rsplit("/", 1)[1]
    assert described["HumanLoopOutput"]["OutputS3Uri"] == (
        f"s3://{sandbox_info.output_bucket}/a2i/{flow}/{created:%Y/%m/%d/%H/%M/%S}/{name}/output.json"
    )


async def test_same_name_same_input_returns_existing_loop(
    a2i: A2IClient, fast_arn: str, unique_name: Names
) -> None:
    name = unique_name("loop")
    first = await start(a2i, name, fast_arn)
    again = await start(a2i, name, fast_arn)
    assert again["HumanLoopArn"] == first["HumanLoopArn"]


async def test_same_name_other_input_conflicts(
    a2i: A2IClient, fast_arn: str, unique_name: Names
) -> None:
    name = unique_name("loop")
    await start(a2i, name, fast_arn, label="cat")
    with pytest.raises(a2i.exceptions.ConflictException) as caught:
        await start(a2i, name, fast_arn, label="dog")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert name in caught.value.response["Error"]["Message"]


async def test_same_name_other_flow_conflicts(
    a2i: A2IClient, sandbox_info: SandboxInfo, fast_arn: str, unique_name: Names
) -> None:
    name = unique_name("loop")
    await start(a2i, name, fast_arn)
    with pytest.raises(a2i.exceptions.ConflictException):
        await start(a2i, name, sandbox_info.flow_definition_arns["panel"])


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("Upper-Case", "humanLoopName"),
        ("ends-with-hyphen-", "humanLoopName"),
        ("-starts-with-hyphen", "humanLoopName"),
        ("under_score", "humanLoopName"),
        ("a" * 64, "humanLoopName"),
    ],
)
async def test_start_rejects_bad_names(
    a2i: A2IClient, fast_arn: str, name: str, member: str
) -> None:
    with pytest.raises(a2i.exceptions.ValidationException) as caught:
        await start(a2i, name, fast_arn)
    assert member in caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


async def test_name_of_63_chars_is_accepted(a2i: A2IClient, fast_arn: str) -> None:
    name = f"{a2i.kind.lower()}-" + "x" * (63 - len(a2i.kind) - 1)
    assert len(name) == 63
    await start(a2i, name, fast_arn)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"FlowDefinitionArn": "not-an-arn"}, "flowDefinitionArn"),
        (
            {"FlowDefinitionArn": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/nope"},
            "does not exist",
        ),
        ({"HumanLoopInput": {"InputContent": "{not json"}}, "not valid JSON"),
        ({"HumanLoopInput": {"InputContent": "[1, 2]"}}, "JSON object"),
        (
            {"HumanLoopInput": {"InputContent": json.dumps({"x": "y" * 3_145_728})}},
            "3145728",
        ),
        ({"DataAttributes": {"ContentClassifiers": ["FreeOfEverything"]}}, "enum value set"),
    ],
)
async def test_start_validation(
    a2i: A2IClient, fast_arn: str, unique_name: Names, params: dict[str, Any], fragment: str
) -> None:
    request: dict[str, Any] = {
        "HumanLoopName": unique_name("bad"),
        "FlowDefinitionArn": fast_arn,
        "HumanLoopInput": loop_input(),
        **params,
    }
    with pytest.raises(a2i.exceptions.ValidationException) as caught:
        await a2i.call("start_human_loop", **request)
    assert fragment in caught.value.response["Error"]["Message"]


async def test_input_of_exactly_the_limit_is_accepted(
    a2i: A2IClient, fast_arn: str, unique_name: Names
) -> None:
    padding = 3_145_728 - len(json.dumps({"x": ""}))
    content = json.dumps({"x": "y" * padding})
    assert len(content) == 3_145_728
    await a2i.call(
        "start_human_loop",
        HumanLoopName=unique_name("big"),
        FlowDefinitionArn=fast_arn,
        HumanLoopInput={"InputContent": content},
    )


@pytest.mark.parametrize("operation", ["describe_human_loop", "delete_human_loop"])
async def test_unknown_loop_is_not_found(a2i: A2IClient, operation: str) -> None:
    with pytest.raises(a2i.exceptions.ResourceNotFoundException) as caught:
        await a2i.call(operation, HumanLoopName="no-such-loop")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_stop_unknown_loop_is_not_found(a2i: A2IClient) -> None:
    with pytest.raises(a2i.exceptions.ResourceNotFoundException):
        await a2i.call("stop_human_loop", HumanLoopName="no-such-loop")


async def test_describe_rejects_bad_name(a2i: A2IClient) -> None:
    with pytest.raises(a2i.exceptions.ValidationException):
        await a2i.call("describe_human_loop", HumanLoopName="Bad_Name")


async def test_completed_loop_output_event_and_notification(
    a2i: A2IClient,
    sandbox_info: SandboxInfo,
    s3: Any,
    sqs: Any,
    unique_name: Names,
) -> None:
    """The loop completes; output.json, the EventBridge event and the S3 notification agree."""
    arn = sandbox_info.flow_definition_arns["panel"]
    name = unique_name("done")
    content = {"label": "cat", "confidence": 0.41, "ground_truth": "dog", "event_id": "e-1"}
    started = await a2i.call(
        "start_human_loop",
        HumanLoopName=name,
        FlowDefinitionArn=arn,
        HumanLoopInput={"InputContent": json.dumps(content)},
    )
    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [name])
    assert len(events[name]) == 1
    event = events[name][0]
    # The whole EventBridge envelope, as AWS delivers it to an SQS target.
    assert set(event) == {
        "version", "id", "detail-type", "source", "account", "time", "region", "resources",
        "detail",
    }  # fmt: skip
    assert event["version"] == "0"
    assert event["account"] == "123456789012"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert event["source"] == "aws.sagemaker"
    assert event["detail-type"] == "SageMaker A2I HumanLoop Status Change"
    assert event["resources"] == [started["HumanLoopArn"]]
    assert event["region"] == "us-east-1"
    detail = event["detail"]
    assert set(detail) == {
        "creationTime",
        "failureCode",
        "failureReason",
        "flowDefinitionArn",
        "humanLoopArn",
        "humanLoopName",
        "humanLoopOutput",
        "humanLoopStatus",
    }
    assert detail["humanLoopStatus"] == "Completed"
    assert detail["failureCode"] is None
    assert detail["humanLoopArn"] == started["HumanLoopArn"]
    assert detail["flowDefinitionArn"] == arn
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", detail["creationTime"])
    uri = detail["humanLoopOutput"]["outputS3Uri"]

    described = await a2i.call("describe_human_loop", HumanLoopName=name)
    assert described["HumanLoopStatus"] == "Completed"
    assert described["HumanLoopOutput"]["OutputS3Uri"] == uri

    created = datetime.fromisoformat(detail["creationTime"])
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    assert bucket == sandbox_info.output_bucket
    assert key == f"a2i/panel/{created:%Y/%m/%d/%H/%M/%S}/{name}/output.json"

    output = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert set(output) == {"flowDefinitionArn", "humanAnswers", "humanLoopName", "inputContent"}
    assert output["flowDefinitionArn"] == arn
    assert output["humanLoopName"] == name
    assert output["inputContent"] == content
    assert len(output["humanAnswers"]) == 3  # TaskCount 3: one entry per worker
    worker_ids = set()
    for answer in output["humanAnswers"]:
        assert set(answer) == {
            "answerContent",
            "acceptanceTime",
            "submissionTime",
            "timeSpentInSeconds",
            "workerId",
            "workerMetadata",
        }
        assert set(answer["answerContent"]) == {"label"}
        assert answer["answerContent"]["label"]["label"] in {"cat", "dog", "bird", "other"}
        accepted = datetime.fromisoformat(answer["acceptanceTime"])
        submitted = datetime.fromisoformat(answer["submissionTime"])
        assert created <= accepted <= submitted
        assert answer["timeSpentInSeconds"] == pytest.approx(
            (submitted - accepted).total_seconds(), abs=0.002
        )
        assert re.fullmatch(r"[0-9a-f]{16}", answer["workerId"])
        identity = answer["workerMetadata"]["identityData"]
        assert identity["identityProviderType"] == "Cognito"
        worker_ids.add(answer["workerId"])
    assert len(worker_ids) == 3


async def test_s3_notification_arrives_url_encoded(
    a2i: A2IClient, sandbox_info: SandboxInfo, sqs: Any, unique_name: Names
) -> None:
    from urllib.parse import unquote_plus  # noqa: PLC0415

    from tests.integration.conftest import drain_messages  # noqa: PLC0415

    name = unique_name("notified")
    await start(a2i, name, sandbox_info.flow_definition_arns["fast"])
    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [name])
    key_of = events[name][0]["detail"]["humanLoopOutput"]["outputS3Uri"].partition(
        f"s3://{sandbox_info.output_bucket}/"
    )[2]

    def notified_key(body: dict[str, Any]) -> str | None:
        records = body.get("Records") or []
        keys = [unquote_plus(r["s3"]["object"]["key"]) for r in records]
        return name if key_of in keys else None

    found = drain_messages(sqs, sandbox_info.output_queue_url, [name], notified_key)
    record = found[name][0]["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == sandbox_info.output_bucket


async def test_expired_loop_fails_with_event(
    a2i: A2IClient, sandbox_info: SandboxInfo, sqs: Any, unique_name: Names
) -> None:
    name = unique_name("expired")
    await start(a2i, name, sandbox_info.flow_definition_arns["never"])
    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [name])
    detail = events[name][0]["detail"]
    assert detail["humanLoopStatus"] == "Failed"
    assert detail["failureCode"] == "Expired"
    assert detail["humanLoopOutput"] is None
    described = await a2i.call("describe_human_loop", HumanLoopName=name)
    assert described["HumanLoopStatus"] == "Failed"
    assert described["FailureCode"] == "Expired"
    assert "availability lifetime" in described["FailureReason"]
    assert "HumanLoopOutput" not in described


async def test_stop_then_delete(
    a2i: A2IClient, sandbox_info: SandboxInfo, sqs: Any, unique_name: Names
) -> None:
    name = unique_name("stopped")
    await start(a2i, name, sandbox_info.flow_definition_arns["slow"])
    with pytest.raises(a2i.exceptions.ValidationException, match="InProgress"):
        await a2i.call("delete_human_loop", HumanLoopName=name)

    await a2i.call("stop_human_loop", HumanLoopName=name)
    described = await a2i.call("describe_human_loop", HumanLoopName=name)
    assert described["HumanLoopStatus"] in {"Stopping", "Stopped"}

    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [name])
    detail = events[name][0]["detail"]
    assert detail["humanLoopStatus"] == "Stopped"
    assert detail["humanLoopOutput"] is None  # no worker held the task
    assert (await a2i.call("describe_human_loop", HumanLoopName=name))[
        "HumanLoopStatus"
    ] == "Stopped"
    with pytest.raises(a2i.exceptions.ValidationException, match="Stopped"):
        await a2i.call("stop_human_loop", HumanLoopName=name)

    await a2i.call("delete_human_loop", HumanLoopName=name)
    with pytest.raises(a2i.exceptions.ResourceNotFoundException):
        await a2i.call("describe_human_loop", HumanLoopName=name)
    listed = await a2i.paginate(
        "list_human_loops", FlowDefinitionArn=sandbox_info.flow_definition_arns["slow"]
    )
    assert name not in {s["HumanLoopName"] for page in listed for s in page["HumanLoopSummaries"]}


async def test_list_pagination_sort_and_filters(
    a2i: A2IClient, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    arn = sandbox_info.flow_definition_arns["slow"]
    before_all = datetime.now(UTC)
    names = [unique_name("page") for _ in range(7)]
    for name in names:
        await start(a2i, name, arn)

    pages = await a2i.paginate(
        "list_human_loops",
        FlowDefinitionArn=arn,
        SortOrder="Ascending",
        CreationTimeAfter=before_all,
        PaginationConfig={"PageSize": 3},
    )
    assert [len(p["HumanLoopSummaries"]) for p in pages] == [3, 3, 1]
    listed = [s["HumanLoopName"] for p in pages for s in p["HumanLoopSummaries"]]
    assert listed == names  # ascending creation order, nothing older than the filter
    summary = pages[0]["HumanLoopSummaries"][0]
    assert set(summary) >= {"HumanLoopName", "HumanLoopStatus", "CreationTime", "FlowDefinitionArn"}

    descending = await a2i.call(
        "list_human_loops", FlowDefinitionArn=arn, SortOrder="Descending", MaxResults=100
    )
    mine = [
        s["HumanLoopName"] for s in descending["HumanLoopSummaries"] if s["HumanLoopName"] in names
    ]
    assert mine == list(reversed(names))

    future = await a2i.call(
        "list_human_loops",
        FlowDefinitionArn=arn,
        CreationTimeAfter=datetime.now(UTC) + timedelta(hours=1),
    )
    assert future["HumanLoopSummaries"] == []
    past = await a2i.call("list_human_loops", FlowDefinitionArn=arn, CreationTimeBefore=before_all)
    assert not {s["HumanLoopName"] for s in past["HumanLoopSummaries"]} & set(names)


async def test_list_first_page_has_next_token(
    a2i: A2IClient, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    arn = sandbox_info.flow_definition_arns["slow"]
    for _ in range(3):
        await start(a2i, unique_name("tok"), arn)
    first = await a2i.call("list_human_loops", FlowDefinitionArn=arn, MaxResults=2)
    assert len(first["HumanLoopSummaries"]) == 2
    second = await a2i.call(
        "list_human_loops", FlowDefinitionArn=arn, MaxResults=2, NextToken=first["NextToken"]
    )
    assert {s["HumanLoopName"] for s in first["HumanLoopSummaries"]}.isdisjoint(
        s["HumanLoopName"] for s in second["HumanLoopSummaries"]
    )


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"MaxResults": 101}, "ValidationException"),
        ({"SortOrder": "Sideways"}, "ValidationException"),
        ({"NextToken": "garbage"}, "ValidationException"),
        ({"FlowDefinitionArn": "not-an-arn"}, "ValidationException"),
        (
            {"FlowDefinitionArn": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/nope"},
            "ResourceNotFoundException",
        ),
    ],
)
async def test_list_validation(
    a2i: A2IClient, fast_arn: str, params: dict[str, Any], error: str
) -> None:
    with pytest.raises(getattr(a2i.exceptions, error)):
        await a2i.call("list_human_loops", **{"FlowDefinitionArn": fast_arn, **params})


async def test_every_runtime_answer_has_the_members_the_service_model_requires(
    a2i: A2IClient, fast_arn: str, unique_name: Names
) -> None:
    """What a user's code may read unconditionally, by botocore's model, is there: in the
    answers of each operation, for an open loop and for a finished one."""
    model = botocore.session.get_session().get_service_model("sagemaker-a2i-runtime")
    name = unique_name("loop")

    def check(operation: str, answer: dict[str, Any]) -> None:
        shape = model.operation_model(operation).output_shape
        assert missing_members(shape, answer) == [], operation

    check("StartHumanLoop", await start(a2i, name, fast_arn))
    check("DescribeHumanLoop", await a2i.call("describe_human_loop", HumanLoopName=name))
    listed = await a2i.call("list_human_loops", FlowDefinitionArn=fast_arn, MaxResults=100)
    check("ListHumanLoops", listed)
    await a2i.call("stop_human_loop", HumanLoopName=name)
    deadline = time.monotonic() + 30
    while (described := await a2i.call("describe_human_loop", HumanLoopName=name))[
        "HumanLoopStatus"
    ] == "Stopping":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    check("DescribeHumanLoop", described)
