"""The start-up check of A2I flow definitions, over the wire (issue 18, a typo in a flow ARN).

The emulator's DescribeFlowDefinition through unmodified boto3 and the AWS CLI, configured only
by the sandbox's environment; the A2I backend opening on known flows and refusing, naming the
setting, an unknown one; and ``stream-router run`` exiting 2 with that message.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.model import Shape, StructureShape

from stream_router.aws.a2i import A2IReviewBackend
from stream_router.aws.clients import AwsClients, AwsEndpoints
from stream_router.aws.flows import FlowUse, flow_uses
from stream_router.errors import ConfigError
from stream_router.sandbox.a2i.launcher import A2IEmulator
from stream_router.sandbox.process import free_port
from stream_router.sandbox.settings import SandboxSettings
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from stream_router.settings import Settings
from tests.integration import test_review_e2e
from tests.integration.review_backends import Backend

pytestmark = pytest.mark.integration


def missing_members(shape: Shape, value: Any, path: str = "") -> list[str]:
    """Required members of botocore's output shape absent from ``value``, recursively."""
    if not isinstance(shape, StructureShape):
        return []
    missing = [f"{path}{name}" for name in shape.required_members if name not in value]
    for name, member in shape.members.items():
        if name in value:
            missing += missing_members(member, value[name], f"{path}{name}.")
    return missing


def test_describe_flow_definition_answers_unmodified_boto3(
    sandbox_env: dict[str, str], sandbox_settings: SandboxSettings, sandbox_info: SandboxInfo
) -> None:
    assert sandbox_env["AWS_ENDPOINT_URL_SAGEMAKER"] == sandbox_info.a2i_endpoint_url
    sagemaker = boto3.client("sagemaker")  # region, endpoint and credentials from the env
    try:
        described = sagemaker.describe_flow_definition(FlowDefinitionName="panel")
        with pytest.raises(sagemaker.exceptions.ResourceNotFound) as unknown:
            sagemaker.describe_flow_definition(FlowDefinitionName="sandbox-genral")
        with pytest.raises(ClientError) as malformed:
            sagemaker.describe_flow_definition(FlowDefinitionName="Not_A_Name")
        with pytest.raises(ClientError) as other:
            sagemaker.list_training_jobs()
    finally:
        sagemaker.close()
    output = botocore.session.get_session().get_service_model("sagemaker")
    shape = output.operation_model("DescribeFlowDefinition").output_shape
    assert missing_members(shape, described) == []
    assert described["FlowDefinitionArn"] == sandbox_info.flow_definition_arns["panel"]
    assert described["FlowDefinitionName"] == "panel"
    assert described["FlowDefinitionStatus"] == "Active"
    assert isinstance(described["CreationTime"], datetime)
    config = described["HumanLoopConfig"]
    panel = next(fd for fd in sandbox_settings.flow_definitions if fd.name == "panel")
    assert config["TaskCount"] == panel.task_count == 3
    assert config["TaskAvailabilityLifetimeInSeconds"] == panel.task_availability_lifetime_s
    assert config["WorkteamArn"].startswith("arn:aws:sagemaker:us-east-1:123456789012:workteam/")
    assert described["OutputConfig"]["S3OutputPath"] == (
        f"s3://{sandbox_info.output_bucket}/{sandbox_info.output_prefix}"
    )
    assert described["RoleArn"].startswith("arn:aws:iam::123456789012:role/")

    error = unknown.value.response
    assert error["Error"]["Code"] == "ResourceNotFound"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "sandbox-genral" in error["Error"]["Message"]
    assert malformed.value.response["Error"]["Code"] == "ValidationException"
    assert other.value.response["Error"]["Code"] == "UnknownOperationException"


def test_the_aws_cli_describes_a_flow_definition(sandbox_info: SandboxInfo, tmp_path: Path) -> None:
    """What deploy/aws/README.md runs to wait for Active, against the sandbox's environment."""
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    assert aws, "the AWS CLI is part of the dev extra"
    env = {**os.environ, **sandbox_info.env(), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    described = subprocess.run(
        [aws, "sagemaker", "describe-flow-definition", "--flow-definition-name", "fast"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(described.stdout)["FlowDefinitionStatus"] == "Active"


async def test_runtime_faults_leave_the_control_plane_alone(
    a2i_faults: A2IEmulator, sandbox_info: SandboxInfo, clients: Any
) -> None:
    """Every runtime call fails, yet the flow check answers: faults are the runtime's only."""
    await a2i_faults.set_faults(internal_error_rate=1.0)
    runtime = clients("sagemaker-a2i-runtime", sandbox_info.a2i_endpoint_url, retries=1)
    sagemaker = clients("sagemaker", sandbox_info.sagemaker_endpoint_url, retries=1)
    arn = sandbox_info.flow_definition_arns["fast"]
    with pytest.raises(runtime.exceptions.InternalServerException):
        await asyncio.to_thread(runtime.list_human_loops, FlowDefinitionArn=arn)
    described = await asyncio.to_thread(
        sagemaker.describe_flow_definition, FlowDefinitionName="fast"
    )
    assert described["FlowDefinitionStatus"] == "Active"


# -- the backend ----------------------------------------------------------------------------------


def aws_clients(info: SandboxInfo, sagemaker_url: str | None = None) -> AwsClients:
    env = info.env()
    return AwsClients(
        AwsEndpoints(
            region=info.region,
            endpoint_urls={
                "sagemaker-a2i-runtime": info.a2i_endpoint_url,
                "sagemaker": sagemaker_url or info.sagemaker_endpoint_url,
                "s3": info.aws_endpoint_url,
            },
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            max_attempts=1,
        )
    )


def settings_naming(info: SandboxInfo, general: str, experts: str, escalation: str) -> Settings:
    """Two routes and an escalation; a bare name is that flow's ARN in the sandbox's account."""
    prefix = info.flow_definition_arns["fast"].rsplit("/", 1)[0]

    def arn(flow: str) -> str:
        return flow if flow.startswith("arn:") else f"{prefix}/{flow}"

    return Settings.model_validate(
        {
            "policies": {
                "routes": [
                    {"name": "general", "review_flow": arn(general),
                     "policy": {"type": "confidence", "below": 0.7}},
                    {"name": "experts", "review_flow": arn(experts),
                     "policy": {"type": "confidence", "below": 0.3}},
                ]
            },
            "review": {"on_failure": "escalate", "escalation_flows": {"general": arn(escalation)}},
        }
    )  # fmt: skip


async def described(sandbox: Sandbox) -> int:
    stats = await sandbox.a2i.stats()
    return int(stats["requests"].get("DescribeFlowDefinition", {}).get("OK", 0))


async def test_the_backend_opens_when_every_flow_exists(
    sandbox: Sandbox, sandbox_info: SandboxInfo
) -> None:
    settings = settings_naming(sandbox_info, "fast", "panel", "panel")
    before = await described(sandbox)
    async with A2IReviewBackend(aws_clients(sandbox_info), flows=flow_uses(settings)) as backend:
        assert await backend.describe("never-started") is None  # open: the runtime answers
    assert await described(sandbox) - before == 2  # fast and panel, each asked once


@pytest.mark.parametrize(
    ("general", "experts", "escalation", "message"),
    [
        ("fast", "sandbox-genral", "panel",
         r"policies\.routes\.1\.review_flow \(route experts\): flow definition 'sandbox-genral' "
         r"does not exist \(arn arn:aws:sagemaker:us-east-1:123456789012:flow-definition/"
         r"sandbox-genral"),
        ("fast", "panel", "pannel",
         r"review\.escalation_flows\.general: flow definition 'pannel' does not exist"),
        ("fast", "panel", "arn:aws:sagemaker:us-east-1:123456789012:flowdefinition/panel",
         r"review\.escalation_flows\.general: .* is not an A2I flow definition ARN"),
        ("fast", "arn:aws:sagemaker:eu-west-1:123456789012:flow-definition/panel", "panel",
         r"policies\.routes\.1\.review_flow \(route experts\): arn:aws:sagemaker:eu-west-1:"
         r".* is not the flow definition 'panel' the router reaches: that one is "
         r"arn:aws:sagemaker:us-east-1:"),
    ],
)  # fmt: skip
async def test_the_backend_refuses_to_open_naming_the_setting(
    sandbox_info: SandboxInfo, general: str, experts: str, escalation: str, message: str
) -> None:
    settings = settings_naming(sandbox_info, general, experts, escalation)
    backend = A2IReviewBackend(aws_clients(sandbox_info), flows=flow_uses(settings))
    with pytest.raises(ConfigError, match=message):
        await backend.open()
    with pytest.raises(RuntimeError, match="not open"):
        await backend.describe("any-loop")  # nothing was opened
    await backend.aclose()


async def test_an_unreachable_control_plane_fails_naming_the_endpoint(
    sandbox_info: SandboxInfo,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    flows = [FlowUse("policies.routes.0.review_flow (route general)",
                     sandbox_info.flow_definition_arns["fast"])]  # fmt: skip
    clients = aws_clients(sandbox_info, sagemaker_url=nobody)
    backend = A2IReviewBackend(clients, flows=flows, startup_wait_s=0.0)
    with pytest.raises(ConfigError, match=rf"cannot check flow definition 'fast' at {nobody}"):
        await backend.open()


# -- the router -----------------------------------------------------------------------------------


async def test_the_review_role_exits_2_naming_the_route_of_an_unknown_flow(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """``stream-router run`` with a misspelt flow ARN: exit 2 before a review is started."""
    tag = uuid.uuid4().hex[:8]
    info = sandbox.info()
    await test_review_e2e.create_topics(sandbox, tag)
    data = test_review_e2e.config(Backend("a2i", info), tag, tmp_path)
    typo = info.flow_definition_arns["fast"].replace("/fast", "/fsat")
    data["policies"]["routes"].append(
        {"name": "experts", "review_flow": typo, "policy": {"type": "confidence", "below": 0.3}}
    )
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(data))
    argv = [sys.executable, "-m", "stream_router.cli", "run", "--role", "review",
            "--config", str(config)]  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **sandbox_env},
    )
    _, err = await asyncio.wait_for(child.communicate(), 120)
    stderr = err.decode(errors="replace")
    assert child.returncode == 2, stderr[-3000:]
    assert (
        "policies.routes.1.review_flow (route experts): flow definition 'fsat' does not exist "
        f"(arn {typo}" in stderr
    ), stderr[-3000:]
