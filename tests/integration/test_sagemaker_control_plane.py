"""SageMaker's control plane for human review, over the wire, through unmodified boto3.

Every client here is configured by the sandbox's environment alone (``AWS_ENDPOINT_URL_SAGEMAKER``
and friends, as ``stream-router sandbox env`` exports them), as a user's notebook would be. Each
operation is called, and each error the service model and the A2I docs name is provoked and
caught as the exception class boto3 raises for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from stream_router.sandbox.pytest_plugin import EmulatorFactory
from stream_router.sandbox.settings import SandboxSettings, Workteam
from stream_router.sandbox.stack import SandboxInfo
from tests.integration.test_flow_definition_check import missing_members

pytestmark = pytest.mark.integration

Names = Callable[[str], str]
WORKTEAMS = "arn:aws:sagemaker:us-east-1:123456789012:workteam"

TEMPLATE = """<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <crowd-classifier name="sentiment" categories="{{ task.input.choices | to_json | escape }}"
      header="What is the sentiment of this review?">
    <classification-target>{{ task.input.text }}</classification-target>
    <full-instructions header="Sentiment">Read the review; choose one.</full-instructions>
    <short-instructions>Choose the sentiment.</short-instructions>
  </crowd-classifier>
</crowd-form>
"""


def sagemaker() -> Any:
    return boto3.client("sagemaker")


def code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


async def call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.to_thread(getattr(client, operation), **params)
    return result


async def create_ui(client: Any, name: str, template: str = TEMPLATE) -> str:
    response = await call(
        client, "create_human_task_ui", HumanTaskUiName=name, UiTemplate={"Content": template}
    )
    return str(response["HumanTaskUiArn"])


def loop_config(info: SandboxInfo, ui_arn: str, **changes: Any) -> dict[str, Any]:
    config = {
        "WorkteamArn": f"arn:aws:sagemaker:{info.region}:123456789012:workteam/private-crowd/"
        "sandbox-reviewers",
        "HumanTaskUiArn": ui_arn,
        "TaskTitle": "Review sentiment",
        "TaskDescription": "Choose the sentiment of a product review",
        "TaskCount": 1,
        "TaskAvailabilityLifetimeInSeconds": 3600,
        "TaskTimeLimitInSeconds": 600,
    }
    return {**config, **changes}


def flow_request(info: SandboxInfo, name: str, ui_arn: str, **changes: Any) -> dict[str, Any]:
    return {
        "FlowDefinitionName": name,
        "HumanLoopConfig": loop_config(info, ui_arn, **changes),
        "OutputConfig": {"S3OutputPath": f"s3://{info.output_bucket}/notebook"},
        "RoleArn": "arn:aws:iam::123456789012:role/service-role/A2IExecutionRole",
    }


async def wait_for_status(client: Any, name: str, wanted: str, timeout_s: float = 20) -> float:
    """Describe until the flow's status is ``wanted``; the seconds it took."""
    started = time.monotonic()
    while True:
        status = (await call(client, "describe_flow_definition", FlowDefinitionName=name))[
            "FlowDefinitionStatus"
        ]
        if status == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"{name} still {status}"
        await asyncio.sleep(0.1)


async def test_human_task_uis_create_describe_list_delete(
    sandbox_env: dict[str, str], unique_name: Names
) -> None:
    client = sagemaker()
    names = [unique_name("ui") for _ in range(3)]
    arns = [await create_ui(client, name) for name in names]
    assert arns[0] == f"arn:aws:sagemaker:us-east-1:123456789012:human-task-ui/{names[0]}"

    described = await call(client, "describe_human_task_ui", HumanTaskUiName=names[0])
    assert described["HumanTaskUiArn"] == arns[0]
    assert described["HumanTaskUiStatus"] == "Active"
    assert described["UiTemplate"]["ContentSha256"] == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    url = described["UiTemplate"]["Url"]
    assert urlsplit(url).netloc == urlsplit(sandbox_env["AWS_ENDPOINT_URL_SAGEMAKER"]).netloc

    # Pages of one, newest first by default; the paginator follows NextToken.
    pages = await asyncio.to_thread(
        lambda: list(
            client.get_paginator("list_human_task_uis").paginate(PaginationConfig={"PageSize": 1})
        )
    )
    listed = [s["HumanTaskUiName"] for page in pages for s in page["HumanTaskUiSummaries"]]
    assert all(len(page["HumanTaskUiSummaries"]) <= 1 for page in pages)
    assert [n for n in listed if n in names] == names[::-1]
    ascending = await call(client, "list_human_task_uis", SortOrder="Ascending", MaxResults=100)
    order = [s["HumanTaskUiName"] for s in ascending["HumanTaskUiSummaries"]]
    assert [n for n in order if n in names] == names

    with pytest.raises(client.exceptions.ResourceInUse):
        await create_ui(client, names[0])
    await call(client, "delete_human_task_ui", HumanTaskUiName=names[0])
    with pytest.raises(client.exceptions.ResourceNotFound):
        await call(client, "describe_human_task_ui", HumanTaskUiName=names[0])
    with pytest.raises(client.exceptions.ResourceNotFound):
        await call(client, "delete_human_task_ui", HumanTaskUiName=names[0])


@pytest.mark.parametrize(
    ("name", "template", "message"),
    [
        ("Upper-Case", TEMPLATE, "regular expression pattern"),
        ("ok", "<div><crowd-classifier name='x' categories='[\"a\"]'></div>", "crowd-form"),
        ("ok", "<crowd-form>{% if %}</crowd-form>", "line 1: missing expression"),
        ("ok", "<crowd-form>" + "x" * 128_000 + "</crowd-form>", "128000"),
    ],
    ids=["bad-name", "no-crowd-form", "liquid-syntax", "too-long"],
)
async def test_task_ui_validation(
    sandbox_env: dict[str, str], unique_name: Names, name: str, template: str, message: str
) -> None:
    client = sagemaker()
    with pytest.raises(ClientError) as caught:
        await create_ui(client, unique_name("ui") if name == "ok" else name, template)
    assert code(caught.value) == "ValidationException"
    assert message.lower() in str(caught.value).lower()


async def test_flow_definition_lifecycle(
    sandbox_env: dict[str, str], sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    client = sagemaker()
    a2i = boto3.client("sagemaker-a2i-runtime")
    ui_arn = await create_ui(client, unique_name("ui"))
    name = unique_name("flow")
    created = await call(
        client, "create_flow_definition", **flow_request(sandbox_info, name, ui_arn)
    )
    arn = created["FlowDefinitionArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:flow-definition/{name}"

    described = await call(client, "describe_flow_definition", FlowDefinitionName=name)
    assert described["FlowDefinitionStatus"] == "Initializing"
    assert described["HumanLoopConfig"]["HumanTaskUiArn"] == ui_arn
    assert (
        described["OutputConfig"]["S3OutputPath"] == f"s3://{sandbox_info.output_bucket}/notebook"
    )
    loop_input = {"InputContent": json.dumps({"text": "Great kettle", "choices": ["pos", "neg"]})}
    with pytest.raises(ClientError) as caught:  # not Active yet
        await call(
            a2i,
            "start_human_loop",
            HumanLoopName=unique_name("loop"),
            FlowDefinitionArn=arn,
            HumanLoopInput=loop_input,
        )
    assert code(caught.value) == "ValidationException"
    assert "Initializing" in str(caught.value)

    waited = await wait_for_status(client, name, "Active")
    assert waited < 5
    with pytest.raises(client.exceptions.ResourceInUse):
        await call(client, "create_flow_definition", **flow_request(sandbox_info, name, ui_arn))
    summaries = (await call(client, "list_flow_definitions", MaxResults=100))[
        "FlowDefinitionSummaries"
    ]
    assert {
        "FlowDefinitionName": name,
        "FlowDefinitionArn": arn,
        "FlowDefinitionStatus": "Active",
    }.items() <= next(s for s in summaries if s["FlowDefinitionName"] == name).items()

    loop = unique_name("loop")
    await call(
        a2i,
        "start_human_loop",
        HumanLoopName=loop,
        FlowDefinitionArn=arn,
        HumanLoopInput=loop_input,
    )
    with pytest.raises(client.exceptions.ResourceInUse):  # a loop is open
        await call(client, "delete_flow_definition", FlowDefinitionName=name)
    await call(a2i, "stop_human_loop", HumanLoopName=loop)
    deadline = time.monotonic() + 20
    while (await call(a2i, "describe_human_loop", HumanLoopName=loop))["HumanLoopStatus"] in (
        "InProgress",
        "Stopping",
    ):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)

    await call(client, "delete_flow_definition", FlowDefinitionName=name)
    described = await call(client, "describe_flow_definition", FlowDefinitionName=name)
    assert described["FlowDefinitionStatus"] == "Deleting"
    with pytest.raises(ClientError) as caught:
        await call(
            a2i,
            "start_human_loop",
            HumanLoopName=unique_name("loop"),
            FlowDefinitionArn=arn,
            HumanLoopInput=loop_input,
        )
    assert "Deleting" in str(caught.value)
    deadline = time.monotonic() + 20
    while True:
        try:
            await call(client, "describe_flow_definition", FlowDefinitionName=name)
        except client.exceptions.ResourceNotFound:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    with pytest.raises(client.exceptions.ResourceNotFound):
        await call(client, "delete_flow_definition", FlowDefinitionName=name)
    with pytest.raises(a2i.exceptions.ResourceNotFoundException):
        await call(a2i, "list_human_loops", FlowDefinitionArn=arn)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"HumanTaskUiArn": "arn:aws:sagemaker:us-east-1:123456789012:human-task-ui/nope"},
            "does not exist",
        ),
        (
            {"WorkteamArn": f"{WORKTEAMS}/private-crowd/other"},
            "does not exist",
        ),
        ({"TaskCount": 4}, "taskCount"),
        ({"TaskTitle": "t" * 129}, "taskTitle"),
        ({"TaskAvailabilityLifetimeInSeconds": 864_001}, "taskAvailabilityLifetimeInSeconds"),
        ({"TaskKeywords": ["ok", "not ok!"]}, "taskKeywords"),
        (
            {"WorkteamArn": f"{WORKTEAMS}/public-crowd/default"},
            "PublicWorkforceTaskPrice",
        ),
    ],
    ids=[
        "unknown-ui",
        "unknown-workteam",
        "task-count",
        "title",
        "lifetime",
        "keywords",
        "public-price",
    ],
)
async def test_flow_definition_validation(
    sandbox_env: dict[str, str],
    sandbox_info: SandboxInfo,
    unique_name: Names,
    changes: dict[str, Any],
    message: str,
) -> None:
    client = sagemaker()
    ui_arn = await create_ui(client, unique_name("ui"))
    request = flow_request(sandbox_info, unique_name("flow"), ui_arn, **changes)
    with pytest.raises(ClientError) as caught:
        await call(client, "create_flow_definition", **request)
    assert code(caught.value) == "ValidationException"
    assert message in str(caught.value)


async def test_flow_definition_refuses_what_custom_tasks_do_not_have(
    sandbox_env: dict[str, str], sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    client = sagemaker()
    ui_arn = await create_ui(client, unique_name("ui"))
    request = flow_request(sandbox_info, unique_name("flow"), ui_arn)
    request["HumanLoopRequestSource"] = {
        "AwsManagedHumanLoopRequestSource": "AWS/Textract/AnalyzeDocument/Forms/V1"
    }
    with pytest.raises(ClientError) as caught:
        await call(client, "create_flow_definition", **request)
    assert code(caught.value) == "ValidationException"
    assert "custom task types only" in str(caught.value)
    request = flow_request(sandbox_info, unique_name("flow"), ui_arn)
    request["OutputConfig"]["S3OutputPath"] = "not-a-uri"
    with pytest.raises(ClientError) as caught:
        await call(client, "create_flow_definition", **request)
    assert "s3OutputPath" in str(caught.value)


async def test_task_count_is_checked_against_the_workteam_and_flows_survive_a_restart(
    a2i_emulator_factory: EmulatorFactory, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    settings = SandboxSettings(
        flow_definitions=[], workteam=Workteam(workers=2), flow_activation_s=0.0
    )
    emulator = await a2i_emulator_factory(settings)
    client = boto3.client(
        "sagemaker",
        endpoint_url=emulator.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    ui_arn = await create_ui(client, "sentiment")
    with pytest.raises(ClientError) as caught:
        await call(
            client,
            "create_flow_definition",
            **flow_request(sandbox_info, "three", ui_arn, TaskCount=3),
        )
    assert "more than the 2 workers" in str(caught.value)
    await call(
        client, "create_flow_definition", **flow_request(sandbox_info, "two", ui_arn, TaskCount=2)
    )
    await emulator.restart()
    described = await call(client, "describe_flow_definition", FlowDefinitionName="two")
    assert described["FlowDefinitionStatus"] == "Active"
    assert described["HumanLoopConfig"]["TaskCount"] == 2
    assert (await call(client, "describe_human_task_ui", HumanTaskUiName="sentiment"))[
        "HumanTaskUiArn"
    ] == ui_arn


async def test_settings_flows_are_the_same_objects(
    sandbox_env: dict[str, str], sandbox_info: SandboxInfo
) -> None:
    client = sagemaker()
    described = await call(client, "describe_flow_definition", FlowDefinitionName="fast")
    assert described["FlowDefinitionStatus"] == "Active"
    ui_arn = described["HumanLoopConfig"]["HumanTaskUiArn"]
    assert ui_arn.endswith(":human-task-ui/fast")
    ui = await call(client, "describe_human_task_ui", HumanTaskUiName="fast")
    assert ui["HumanTaskUiArn"] == ui_arn
    names = {
        s["FlowDefinitionName"]
        for s in (await call(client, "list_flow_definitions", MaxResults=100))[
            "FlowDefinitionSummaries"
        ]
    }
    assert {"fast", "panel", "never", "slow"} <= names
    rendered = await call(
        client,
        "render_ui_template",
        HumanTaskUiArn=ui_arn,
        Task={
            "Input": json.dumps(
                {"prediction": {"label": "cat", "confidence": 0.4}, "event": {"id": "<e1>"}}
            )
        },
        RoleArn="arn:aws:iam::123456789012:role/A2I",
    )
    assert rendered["Errors"] == []
    assert "crowd-classifier" in rendered["RenderedContent"]
    # The event went through to_json: its "<" and ">" as JSON escapes, never as markup.
    assert "\\u003ce1\\u003e" in rendered["RenderedContent"]
    assert "<e1>" not in rendered["RenderedContent"]


async def test_render_ui_template_reports_template_errors(sandbox_env: dict[str, str]) -> None:
    client = sagemaker()
    role = "arn:aws:iam::123456789012:role/A2I"
    rendered = await call(
        client,
        "render_ui_template",
        UiTemplate={"Content": TEMPLATE},
        Task={"Input": json.dumps({"text": "<b>hi</b>", "choices": ["a"]})},
        RoleArn=role,
    )
    assert rendered["Errors"] == []
    assert "&lt;b&gt;hi&lt;/b&gt;" in rendered["RenderedContent"]
    broken = await call(
        client,
        "render_ui_template",
        UiTemplate={"Content": "<crowd-form>{% for %}</crowd-form>"},
        Task={"Input": "{}"},
        RoleArn=role,
    )
    assert broken["RenderedContent"] == ""
    assert broken["Errors"]
    assert broken["Errors"][0]["Message"]
    with pytest.raises(client.exceptions.ResourceNotFound):
        await call(
            client,
            "render_ui_template",
            Task={"Input": "{}"},
            RoleArn=role,
            HumanTaskUiArn="arn:aws:sagemaker:us-east-1:123456789012:human-task-ui/none",
        )


async def test_workteams(sandbox_env: dict[str, str]) -> None:
    client = sagemaker()
    team = (await call(client, "describe_workteam", WorkteamName="sandbox-reviewers"))["Workteam"]
    assert team["WorkteamArn"] == (
        "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/sandbox-reviewers"
    )
    # The worker portal is where the team's members work: the emulator's own address.
    assert team["SubDomain"] == urlsplit(sandbox_env["AWS_ENDPOINT_URL_SAGEMAKER"]).netloc
    assert team["MemberDefinitions"][0]["CognitoMemberDefinition"]["UserGroup"]
    listed = (await call(client, "list_workteams"))["Workteams"]
    assert [t["WorkteamName"] for t in listed] == ["sandbox-reviewers"]
    assert (await call(client, "list_workteams", NameContains="nobody"))["Workteams"] == []
    with pytest.raises(ClientError) as caught:
        await call(client, "describe_workteam", WorkteamName="someone-else")
    assert code(caught.value) == "ValidationException"


async def test_every_answer_has_the_members_the_service_model_requires(
    sandbox_env: dict[str, str], sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    """Each control-plane answer carries every member botocore's output shape marks required,
    recursively (what a user's code may read unconditionally)."""
    client = sagemaker()
    model = client.meta.service_model
    ui_name, flow_name = unique_name("ui"), unique_name("flow")
    ui_arn = await create_ui(client, ui_name)
    await call(client, "create_flow_definition", **flow_request(sandbox_info, flow_name, ui_arn))
    role = "arn:aws:iam::123456789012:role/A2I"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        (
            "CreateHumanTaskUi",
            "create_human_task_ui",
            {"HumanTaskUiName": unique_name("ui"), "UiTemplate": {"Content": TEMPLATE}},
        ),
        ("DescribeHumanTaskUi", "describe_human_task_ui", {"HumanTaskUiName": ui_name}),
        ("ListHumanTaskUis", "list_human_task_uis", {}),
        (
            "CreateFlowDefinition",
            "create_flow_definition",
            flow_request(sandbox_info, unique_name("flow"), ui_arn),
        ),
        ("DescribeFlowDefinition", "describe_flow_definition", {"FlowDefinitionName": flow_name}),
        ("ListFlowDefinitions", "list_flow_definitions", {}),
        ("DescribeWorkteam", "describe_workteam", {"WorkteamName": "sandbox-reviewers"}),
        ("ListWorkteams", "list_workteams", {}),
        (
            "RenderUiTemplate",
            "render_ui_template",
            {"HumanTaskUiArn": ui_arn, "Task": {"Input": "{}"}, "RoleArn": role},
        ),
    ]
    for operation, method, params in calls:
        answer = await call(client, method, **params)
        shape = model.operation_model(operation).output_shape
        assert missing_members(shape, answer) == [], operation
