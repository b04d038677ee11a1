"""Fault injection, persistence across restarts, raw HTTP shapes and the AWS CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_router.sandbox.a2i.launcher import A2IEmulator, SandboxAdminError
from stream_router.sandbox.pytest_plugin import EmulatorFactory
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.conftest import A2IClient, wait_for_events

pytestmark = pytest.mark.integration

Names = Callable[[str], str]


def start_kwargs(name: str, arn: str, label: str = "cat") -> dict[str, Any]:
    return {
        "HumanLoopName": name,
        "FlowDefinitionArn": arn,
        "HumanLoopInput": {"InputContent": json.dumps({"label": label})},
    }


async def test_throttling_beyond_the_quota(
    a2i_faults: A2IEmulator, sandbox_info: SandboxInfo, clients: Any, unique_name: Names
) -> None:
    # One request per 10 s with a burst of one: the second back-to-back call is throttled
    # however slow the machine is.
    faults = await a2i_faults.set_faults(quota_rps=0.1, quota_burst=1)
    assert faults.quota_rps == 0.1
    client = clients("sagemaker-a2i-runtime", sandbox_info.a2i_endpoint_url, retries=1)
    arn = sandbox_info.flow_definition_arns["slow"]
    await asyncio.to_thread(client.start_human_loop, **start_kwargs(unique_name("t"), arn))
    with pytest.raises(client.exceptions.ThrottlingException) as caught:
        await asyncio.to_thread(client.start_human_loop, **start_kwargs(unique_name("t"), arn))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    # Other operations have their own quota: the first List still passes.
    await asyncio.to_thread(client.list_human_loops, FlowDefinitionArn=arn, MaxResults=1)


async def test_max_active_loops_quota(
    a2i_faults: A2IEmulator, sandbox_info: SandboxInfo, sqs: Any, clients: Any, unique_name: Names
) -> None:
    stats = await a2i_faults.stats()
    active = stats["active_loops"]
    await a2i_faults.set_faults(max_active_loops=active + 1)
    client = clients("sagemaker-a2i-runtime", sandbox_info.a2i_endpoint_url, retries=1)
    arn = sandbox_info.flow_definition_arns["slow"]
    first = unique_name("q")
    await asyncio.to_thread(client.start_human_loop, **start_kwargs(first, arn))
    with pytest.raises(client.exceptions.ServiceQuotaExceededException) as caught:
        await asyncio.to_thread(client.start_human_loop, **start_kwargs(unique_name("q"), arn))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    # The same request for an existing loop is not a new loop: no quota needed.
    await asyncio.to_thread(client.start_human_loop, **start_kwargs(first, arn))
    # Stopping frees a place once the loop is Stopped.
    await asyncio.to_thread(client.stop_human_loop, HumanLoopName=first)
    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [first])
    assert events[first][0]["detail"]["humanLoopStatus"] == "Stopped"
    await asyncio.to_thread(client.start_human_loop, **start_kwargs(unique_name("q"), arn))


async def test_internal_errors_and_botocore_retries(
    a2i_faults: A2IEmulator, sandbox_info: SandboxInfo, clients: Any, unique_name: Names
) -> None:
    await a2i_faults.set_faults(internal_error_rate=1.0)
    client = clients("sagemaker-a2i-runtime", sandbox_info.a2i_endpoint_url, retries=1)
    with pytest.raises(client.exceptions.InternalServerException) as caught:
        await asyncio.to_thread(client.describe_human_loop, HumanLoopName=unique_name("whatever"))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    await a2i_faults.set_faults(internal_error_rate=0.0)
    stats = await a2i_faults.stats()
    assert stats["requests"]["DescribeHumanLoop"]["InternalServerException"] >= 1


async def test_extra_latency(
    a2i_faults: A2IEmulator, sandbox_info: SandboxInfo, clients: Any
) -> None:
    import time  # noqa: PLC0415

    await a2i_faults.set_faults(extra_latency_s=0.3)
    client = clients("sagemaker-a2i-runtime", sandbox_info.a2i_endpoint_url, retries=1)
    began = time.monotonic()
    await asyncio.to_thread(
        client.list_human_loops, FlowDefinitionArn=sandbox_info.flow_definition_arns["fast"]
    )
    assert time.monotonic() - began >= 0.3


async def test_bad_fault_settings_are_refused(a2i_faults: A2IEmulator) -> None:
    with pytest.raises(SandboxAdminError, match="internal_error_rate"):
        await a2i_faults.set_faults(internal_error_rate=2.0)


async def test_state_survives_restart(
    a2i_emulator_factory: EmulatorFactory,
    sandbox_info: SandboxInfo,
    sqs: Any,
    clients: Any,
    unique_name: Names,
) -> None:
    emulator = await a2i_emulator_factory()
    client = clients("sagemaker-a2i-runtime", emulator.endpoint_url)
    slow, fast = (sandbox_info.flow_definition_arns[n] for n in ("slow", "fast"))
    waiting, finishing, done = unique_name("wait"), unique_name("finish"), unique_name("done")
    client.start_human_loop(**start_kwargs(done, fast))
    await wait_for_events(sqs, sandbox_info.event_queue_url, [done])
    client.start_human_loop(**start_kwargs(waiting, slow))
    client.start_human_loop(**start_kwargs(finishing, fast))

    emulator.process.kill()  # as a crash would
    await emulator.start()

    assert client.describe_human_loop(HumanLoopName=done)["HumanLoopStatus"] == "Completed"
    assert client.describe_human_loop(HumanLoopName=waiting)["HumanLoopStatus"] == "InProgress"
    with pytest.raises(client.exceptions.ConflictException):
        client.start_human_loop(**start_kwargs(waiting, slow, label="dog"))
    # The loop that was due while the emulator was down still finishes, with its event.
    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [finishing])
    assert events[finishing][0]["detail"]["humanLoopStatus"] == "Completed"
    listed = client.list_human_loops(FlowDefinitionArn=slow)["HumanLoopSummaries"]
    assert waiting in {s["HumanLoopName"] for s in listed}


async def test_a_stop_does_not_wait_for_an_aws_call_that_gets_no_answer(
    a2i_emulator_factory: EmulatorFactory,
    sandbox: Sandbox,
    sandbox_info: SandboxInfo,
    sqs: Any,
    clients: Any,
    unique_name: Names,
) -> None:
    """SIGTERM stops the emulator while its output.json write waits on a frozen moto (it used
    to wait for the call, until it was killed), and the next start writes the effect again."""
    emulator = await a2i_emulator_factory()
    client = clients("sagemaker-a2i-runtime", emulator.endpoint_url)
    name = unique_name("frozen")
    moto = sandbox.moto.process.pid
    assert moto is not None
    client.start_human_loop(**start_kwargs(name, sandbox_info.flow_definition_arns["fast"]))
    os.kill(moto, signal.SIGSTOP)
    try:
        async with asyncio.timeout(30):  # the loop's end: its write to S3 waits now
            while (await emulator.stats())["aws_calls_under_way"] == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the emulator's stats are only read by asking
        code = await emulator.process.stop_async()
    finally:
        os.kill(moto, signal.SIGCONT)
    assert code == 0  # -9: it outlived the grace period and was killed
    assert "AWS call(s) under way" in (emulator.state_dir / "a2i-emulator.log").read_text()

    await emulator.start()
    events = await wait_for_events(sqs, sandbox_info.event_queue_url, [name])
    assert events[name][0]["detail"]["humanLoopStatus"] == "Completed"


async def test_raw_http_error_shape(sandbox_info: SandboxInfo) -> None:
    """What botocore relies on: status, x-amzn-ErrorType header, Message in the body."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        sandbox_info.a2i_endpoint_url + "/human-loops",
        data=json.dumps({"HumanLoopName": "x"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    error = caught.value
    with error:
        body = json.loads(error.read())
    assert error.code == 400
    assert error.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "FlowDefinitionArn" in body["Message"]

    not_json = urllib.request.Request(  # noqa: S310 - loopback
        sandbox_info.a2i_endpoint_url + "/human-loops", data=b"{oops", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        await asyncio.to_thread(urllib.request.urlopen, not_json, timeout=10)
    caught.value.close()
    assert caught.value.code == 400

    # botocore refuses MaxResults=0 before sending; the service must refuse it too.
    query = urllib.parse.urlencode(
        {"FlowDefinitionArn": sandbox_info.flow_definition_arns["fast"], "MaxResults": "0"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        await asyncio.to_thread(
            urllib.request.urlopen, f"{sandbox_info.a2i_endpoint_url}/human-loops?{query}"
        )
    caught.value.close()
    assert caught.value.code == 400
    assert caught.value.headers["x-amzn-ErrorType"] == "ValidationException"


def test_aws_cli_against_the_sandbox(
    sandbox_info: SandboxInfo, unique_name: Names, tmp_path: Path
) -> None:
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    assert aws, "the AWS CLI is part of the dev extra"
    env = {**os.environ, **sandbox_info.env(), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    name = unique_name("cli")
    arn = sandbox_info.flow_definition_arns["slow"]
    input_arg = json.dumps({"InputContent": json.dumps({"label": "cat"})})
    started = subprocess.run(
        [aws, "sagemaker-a2i-runtime", "start-human-loop", "--human-loop-name", name,
         "--flow-definition-arn", arn, "--human-loop-input", input_arg],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(started.stdout)["HumanLoopArn"].endswith(f"human-loop/{name}")
    described = subprocess.run(
        [aws, "sagemaker-a2i-runtime", "describe-human-loop", "--human-loop-name", name],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(described.stdout)["HumanLoopStatus"] == "InProgress"
    missing = subprocess.run(
        [aws, "sagemaker-a2i-runtime", "describe-human-loop", "--human-loop-name", "nope"],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr


async def test_conflict_is_not_retried_by_botocore(
    a2i: A2IClient, fast_arn: str, unique_name: Names
) -> None:
    name = unique_name("once")
    await a2i.call("start_human_loop", **start_kwargs(name, fast_arn))
    with pytest.raises(a2i.exceptions.ConflictException) as caught:
        await a2i.call("start_human_loop", **start_kwargs(name, fast_arn, label="dog"))
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
