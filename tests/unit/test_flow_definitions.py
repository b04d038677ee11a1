"""The start-up check of flow definitions (``aws/flows.py``) on a scripted SageMaker client.

The emulator always answers Active (``tests/integration/test_flow_definition_check.py`` covers
the wire); the statuses, refusals and outages it never shows are scripted here.
"""

from __future__ import annotations

import logging
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from stream_router.aws.flows import FlowUse, check_flow_definitions, flow_uses
from stream_router.errors import ConfigError
from stream_router.settings import Settings

ENDPOINT = "http://127.0.0.1:9"
PREFIX = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/"
GENERAL = FlowUse("policies.routes.0.review_flow (route general)", PREFIX + "general")


class ScriptedSageMaker:
    """Answers DescribeFlowDefinition from a script: a dict is returned, an exception raised."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.meta = SimpleNamespace(endpoint_url=ENDPOINT, region_name="us-east-1")
        self.answers: deque[dict[str, Any] | Exception] = deque(answers)
        self.asked: list[str] = []

    async def describe_flow_definition(self, *, FlowDefinitionName: str) -> dict[str, Any]:
        self.asked.append(FlowDefinitionName)
        answer = self.answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer


def flow(name: str = "general", status: str = "Active", **more: Any) -> dict[str, Any]:
    return {
        "FlowDefinitionArn": PREFIX + name,
        "FlowDefinitionName": name,
        "FlowDefinitionStatus": status,
        **more,
    }


def error(code: str, status: int = 400, message: str = "no") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "DescribeFlowDefinition")


def test_flow_uses_name_every_route_and_escalation() -> None:
    settings = Settings.model_validate(
        {
            "policies": {"routes": [
                {"name": "general", "review_flow": PREFIX + "a", "policy": {"type": "always"}},
                {"name": "experts", "review_flow": PREFIX + "b", "policy": {"type": "always"},
                 "shadow": True},
            ]},
            "review": {"escalation_flows": {"general": PREFIX + "b"}},
        }
    )  # fmt: skip
    assert flow_uses(settings) == [
        FlowUse("policies.routes.0.review_flow (route general)", PREFIX + "a"),
        FlowUse("policies.routes.1.review_flow (route experts)", PREFIX + "b"),
        FlowUse("review.escalation_flows.general", PREFIX + "b"),
    ]


async def test_active_flows_pass_each_asked_once() -> None:
    uses = [
        GENERAL,
        FlowUse("review.escalation_flows.general", PREFIX + "general"),
        FlowUse("policies.routes.1.review_flow (route experts)", PREFIX + "experts"),
    ]
    sagemaker = ScriptedSageMaker(flow("general"), flow("experts"))
    await check_flow_definitions(sagemaker, uses)
    assert sagemaker.asked == ["general", "experts"]


async def test_a_missing_flow_names_every_setting_that_uses_it() -> None:
    uses = [GENERAL, FlowUse("review.escalation_flows.experts", PREFIX + "general")]
    sagemaker = ScriptedSageMaker(error("ResourceNotFound", message="Could not find it"))
    with pytest.raises(ConfigError) as caught:
        await check_flow_definitions(sagemaker, uses)
    assert str(caught.value).startswith(
        "policies.routes.0.review_flow (route general), review.escalation_flows.experts: "
        f"flow definition 'general' does not exist (arn {PREFIX}general"
    )


async def test_a_malformed_arn_fails_before_any_call() -> None:
    uses = [GENERAL, FlowUse("review.escalation_flows.general", "general")]
    sagemaker = ScriptedSageMaker()
    with pytest.raises(ConfigError, match=r"review\.escalation_flows\.general: 'general' is not"):
        await check_flow_definitions(sagemaker, uses)
    assert sagemaker.asked == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (flow(status="Failed", FailureReason="the role cannot be assumed"),
         r"flow definition 'general' is Failed, not Active \(the role cannot be assumed\)"),
        (flow(status="Deleting"), r"flow definition 'general' is Deleting, not Active"),
        (error("AccessDeniedException", message="not authorized to perform"),
         rf"grant sagemaker:DescribeFlowDefinition on {PREFIX}general"),
        (error("UnrecognizedClientException"), r"refused the router's AWS credentials"),
        (NoCredentialsError(), r"Unable to locate credentials"),
        (error("ValidationException", message="bad name"), r"ValidationException \(bad name\)"),
    ],
)  # fmt: skip
async def test_final_answers_fail_at_once(answer: Any, message: str) -> None:
    sagemaker = ScriptedSageMaker(answer)
    with pytest.raises(ConfigError, match=message):
        await check_flow_definitions(sagemaker, [GENERAL], wait_s=30)
    assert sagemaker.asked == ["general"]  # not asked again


async def test_throttling_and_initializing_are_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sagemaker = ScriptedSageMaker(
        error("ThrottlingException", status=400, message="Rate exceeded"),
        flow(status="Initializing"),
        flow(),
    )
    with caplog.at_level(logging.WARNING, "stream_router.aws.flows"):
        await check_flow_definitions(sagemaker, [GENERAL], wait_s=30)
    assert sagemaker.asked == ["general"] * 3
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2
    assert "ThrottlingException" in retries[0]
    assert "Initializing" in retries[1]


@pytest.mark.parametrize(
    "outage",
    [error("InternalFailure", status=500), EndpointConnectionError(endpoint_url=ENDPOINT)],
)
async def test_an_outage_past_the_wait_fails_naming_the_endpoint(outage: Exception) -> None:
    sagemaker = ScriptedSageMaker(outage)
    with pytest.raises(ConfigError, match=rf"cannot check flow definition 'general' at {ENDPOINT}"):
        await check_flow_definitions(sagemaker, [GENERAL], wait_s=0)


async def test_a_flow_of_another_region_is_not_the_one_found() -> None:
    elsewhere = FlowUse(GENERAL.where, GENERAL.arn.replace("us-east-1", "eu-west-1"))
    sagemaker = ScriptedSageMaker(flow())
    with pytest.raises(ConfigError, match=rf"that one is {PREFIX}general"):
        await check_flow_definitions(sagemaker, [elsewhere])
