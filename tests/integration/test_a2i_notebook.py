"""An A2I user's own code, unchanged, against the sandbox: the sample notebooks' sequence.

AWS's A2I sample notebooks all walk the same steps with boto3: create a human task UI from a
worker template, create a flow definition on a private workteam, wait until it is Active, start
human loops, watch their status (reading ``HumanLoopOutput.OutputS3Uri`` while they run), read
each output.json from S3 once Completed, parse ``humanAnswers``, and clean up. This test is that
sequence, written as such a notebook would be (clients configured only by the environment that
``stream-router sandbox env`` prints, the output bucket the user's own), with the answers'
shape checked against the template: the simulated reviewers read it and answer what it asks.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

pytestmark = pytest.mark.integration

# A template as a user writes one: categories from the loop's input, a free-text reason and a
# checkbox, inside the crowd-form A2I requires.
SENTIMENT_TEMPLATE = """<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <crowd-classifier name="sentiment" categories="{{ task.input.categories | to_json | escape }}"
      header="What sentiment does the review express?">
    <classification-target>
      <p>{{ task.input.taskObject }}</p>
    </classification-target>
    <full-instructions header="Sentiment Analysis Instructions">
      <p><strong>Positive</strong> sentiment praises the product.</p>
    </full-instructions>
    <short-instructions>Choose the primary sentiment of the review.</short-instructions>
  </crowd-classifier>
  <crowd-text-area name="reason" label="Why?"></crowd-text-area>
  <crowd-checkbox name="sarcastic" value="yes">The review is sarcastic</crowd-checkbox>
</crowd-form>
"""

REVIEWS = [
    "I love this kettle, it boils in a minute.",
    "Broke after two days.",
    "It is a kettle.",
]
CATEGORIES = ["Positive", "Negative", "Neutral"]


def wait(predicate: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Ask ``predicate()`` until it returns something true, as a notebook's polling cell does."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


async def test_the_sample_notebook_sequence_runs_unchanged(sandbox_env: dict[str, str]) -> None:
    # A notebook blocks; the sandbox's own tasks share this test's event loop, so it runs aside.
    await asyncio.to_thread(notebook)


def notebook() -> None:
    # -- set-up cell: clients from the environment alone ------------------------------------------
    sagemaker = boto3.client("sagemaker")
    a2i = boto3.client("sagemaker-a2i-runtime")
    s3 = boto3.client("s3")
    assert urlsplit(sagemaker.meta.endpoint_url).hostname == "127.0.0.1"
    assert urlsplit(a2i.meta.endpoint_url).hostname == "127.0.0.1"
    suffix = uuid.uuid4().hex[:8]
    bucket = f"notebook-output-{suffix}"
    s3.create_bucket(Bucket=bucket)
    output_path = f"s3://{bucket}/a2i-results"
    workteam_arn = sagemaker.list_workteams()["Workteams"][0]["WorkteamArn"]
    role = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole"

    # -- create the worker task template ----------------------------------------------------------
    ui_name = f"ui-sentiment-{suffix}"
    ui_arn = sagemaker.create_human_task_ui(
        HumanTaskUiName=ui_name, UiTemplate={"Content": SENTIMENT_TEMPLATE}
    )["HumanTaskUiArn"]

    # -- create the flow definition and wait for it -----------------------------------------------
    flow_name = f"fd-sentiment-{suffix}"
    flow_arn = sagemaker.create_flow_definition(
        FlowDefinitionName=flow_name,
        RoleArn=role,
        HumanLoopConfig={
            "WorkteamArn": workteam_arn,
            "HumanTaskUiArn": ui_arn,
            "TaskCount": 1,
            "TaskDescription": "Identify the sentiment of the provided text",
            "TaskTitle": "Sentiment analysis",
        },
        OutputConfig={"S3OutputPath": output_path},
    )["FlowDefinitionArn"]
    statuses = []

    def active() -> bool:
        status = sagemaker.describe_flow_definition(FlowDefinitionName=flow_name)[
            "FlowDefinitionStatus"
        ]
        statuses.append(status)
        return status == "Active"

    wait(active, "the flow definition to be Active")
    assert statuses[0] == "Initializing"

    # -- start a human loop per review ------------------------------------------------------------
    loops = []
    for text in REVIEWS:
        name = f"loop-{uuid.uuid4()}"
        a2i.start_human_loop(
            HumanLoopName=name,
            FlowDefinitionArn=flow_arn,
            HumanLoopInput={
                "InputContent": json.dumps({"taskObject": text, "categories": CATEGORIES})
            },
            DataAttributes={"ContentClassifiers": ["FreeOfPersonallyIdentifiableInformation"]},
        )
        loops.append(name)

    # -- the status cell: reads the output location unconditionally -------------------------------
    for name in loops:
        described = a2i.describe_human_loop(HumanLoopName=name)
        assert described["HumanLoopStatus"] in ("InProgress", "Completed")
        assert described["HumanLoopOutput"]["OutputS3Uri"].startswith(output_path + "/")

    def completed() -> list[dict[str, Any]] | None:
        described = [a2i.describe_human_loop(HumanLoopName=name) for name in loops]
        if all(d["HumanLoopStatus"] == "Completed" for d in described):
            return described
        return None

    finished = wait(completed, "the loops to complete")
    listed = a2i.list_human_loops(FlowDefinitionArn=flow_arn)["HumanLoopSummaries"]
    assert sorted(s["HumanLoopName"] for s in listed) == sorted(loops)

    # -- the results cell -------------------------------------------------------------------------
    for text, described in zip(REVIEWS, finished, strict=True):
        uri = described["HumanLoopOutput"]["OutputS3Uri"]
        key_bucket, _, key = uri.removeprefix("s3://").partition("/")
        assert key_bucket == bucket
        output = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert output["flowDefinitionArn"] == flow_arn
        assert output["inputContent"]["taskObject"] == text
        (answer,) = output["humanAnswers"]
        content = answer["answerContent"]
        assert content["sentiment"]["label"] in CATEGORIES
        assert set(content) <= {"sentiment", "reason", "sarcastic"}
        assert isinstance(content.get("reason", ""), str)
        if "sarcastic" in content:
            assert set(content["sarcastic"]) == {"yes"}
            assert isinstance(content["sarcastic"]["yes"], bool)
        assert answer["workerMetadata"]["identityData"]["identityProviderType"] == "Cognito"

    # -- clean up ---------------------------------------------------------------------------------
    for name in loops:
        a2i.delete_human_loop(HumanLoopName=name)
    sagemaker.delete_flow_definition(FlowDefinitionName=flow_name)

    def gone() -> bool:
        try:
            sagemaker.describe_flow_definition(FlowDefinitionName=flow_name)
        except sagemaker.exceptions.ResourceNotFound:
            return True
        return False

    wait(gone, "the flow definition to be deleted")
    sagemaker.delete_human_task_ui(HumanTaskUiName=ui_name)
    assert ui_name not in {
        s["HumanTaskUiName"]
        for s in sagemaker.list_human_task_uis(MaxResults=100)["HumanTaskUiSummaries"]
    }
