"""The sliver of SageMaker's control plane the sandbox serves: DescribeFlowDefinition.

SageMaker (``sagemaker`` 2017-07-24) speaks JSON 1.1: every call is ``POST /`` with the header
``X-Amz-Target: SageMaker.<Operation>`` and a JSON body. The router asks DescribeFlowDefinition
at start-up whether its flow definitions exist (``stream_router/aws/flows.py``); this module
answers for the flow definitions of the sandbox settings, shaped as botocore's model says, so an
unmodified ``boto3.client("sagemaker").describe_flow_definition(...)`` works against the
emulator. Every other operation answers 400 ``UnknownOperationException``.

What the sandbox has no real value for is derived from its settings (assumed, plausible):

- every flow definition is ``Active`` and was created when the emulator started;
- the work team is ``workteam/private-crowd/sandbox-reviewers`` (``public-crowd/default`` for a
  flow whose reviewers are ``public``), the task UI ``human-task-ui/stream-router-review-task``
  and the role ``role/stream-router-sandbox-a2i``, all in the sandbox's account and Region;
- lifetimes are the flow's, rounded up to whole seconds within the model's minimums.

Errors carry their code in the body's ``__type``, as JSON 1.1 services do: ``ResourceNotFound``
(400, the model's only error of the operation) for an unknown name, ``ValidationException``
(400) for a missing or malformed one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from stream_router.sandbox.a2i.api import VALIDATION, ApiError, ErrorKind, validate_name
from stream_router.sandbox.settings import FlowDefinition, SandboxSettings

TARGET_PREFIX = "SageMaker."
CONTENT_TYPE = "application/x-amz-json-1.1"
RESOURCE_NOT_FOUND = ErrorKind("ResourceNotFound", 400)
UNKNOWN_OPERATION = ErrorKind("UnknownOperationException", 400)


class ControlPlaneApi:
    """SageMaker's control plane for the flow definitions of ``settings`` (see module doc)."""

    def __init__(self, settings: SandboxSettings, *, created_at: float) -> None:
        self.settings = settings
        self.created_at = created_at
        self.flows: dict[str, FlowDefinition] = {fd.name: fd for fd in settings.flow_definitions}
        self._operations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "DescribeFlowDefinition": self.describe_flow_definition,
        }

    @staticmethod
    def operation(target: str | None) -> str:
        """The operation an ``X-Amz-Target`` header names (for counting requests)."""
        if not target:
            return "(no X-Amz-Target)"
        return target.removeprefix(TARGET_PREFIX)

    def call(self, target: str | None, body: Any) -> dict[str, Any]:
        """Serve one request: the operation ``target`` names, with the parsed JSON ``body``."""
        handler = None
        if target and target.startswith(TARGET_PREFIX):
            handler = self._operations.get(target.removeprefix(TARGET_PREFIX))
        if handler is None:
            raise ApiError(
                UNKNOWN_OPERATION,
                f"The sandbox's SageMaker serves only {sorted(self._operations)}; "
                f"X-Amz-Target {target!r} is not one of them",
            )
        if not isinstance(body, dict):
            raise ApiError(VALIDATION, "The request body must be a JSON object")
        return handler(body)

    def describe_flow_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("FlowDefinitionName") is None:
            raise ApiError(
                VALIDATION,
                "1 validation error detected: Value null at 'flowDefinitionName' failed to "
                "satisfy constraint: Member must not be null",
            )
        name = validate_name(body["FlowDefinitionName"], "flowDefinitionName")
        flow = self.flows.get(name)
        if flow is None:
            raise ApiError(RESOURCE_NOT_FOUND, f"Could not find flow definition {name!r}")
        return self._description(flow)

    def _description(self, flow: FlowDefinition) -> dict[str, Any]:
        aws = self.settings.aws
        prefix = f"arn:aws:sagemaker:{aws.region}:{aws.account_id}"
        crowd = (
            "public-crowd/default"
            if flow.reviewers.workforce == "public"
            else "private-crowd/sandbox-reviewers"
        )
        return {
            "FlowDefinitionArn": self.settings.flow_arn(flow.name),
            "FlowDefinitionName": flow.name,
            "FlowDefinitionStatus": "Active",
            "CreationTime": self.created_at,  # JSON 1.1 timestamps are epoch seconds
            "HumanLoopConfig": {
                "WorkteamArn": f"{prefix}:workteam/{crowd}",
                "HumanTaskUiArn": f"{prefix}:human-task-ui/stream-router-review-task",
                "TaskTitle": f"Check a model's prediction ({flow.name})",
                "TaskDescription": "Choose the right label for an event the model was unsure "
                "about (simulated reviewers of the stream_router sandbox).",
                "TaskCount": flow.task_count,
                "TaskAvailabilityLifetimeInSeconds": max(
                    1, math.ceil(flow.task_availability_lifetime_s)
                ),
                "TaskTimeLimitInSeconds": max(30, math.ceil(flow.task_time_limit_s)),
            },
            "OutputConfig": {"S3OutputPath": self.settings.output_path(flow)},
            "RoleArn": f"arn:aws:iam::{aws.account_id}:role/stream-router-sandbox-a2i",
        }
