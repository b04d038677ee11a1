"""Clients for the contract tests: every A2I test runs once with boto3 and once with aioboto3."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import aioboto3
import boto3
import pytest
import pytest_asyncio
from botocore.config import Config

from stream_router.labelstudio.client import LabelStudioClient
from stream_router.sandbox.stack import SandboxInfo

pytestmark = pytest.mark.integration

CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}


class A2IClient:
    """One calling convention over a boto3 or an aioboto3 client: ``await a2i.call(op, ...)``."""

    def __init__(self, kind: str, client: Any) -> None:
        self.kind = kind
        self.client = client
        self.exceptions = client.exceptions

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self.client, operation)
        if self.kind == "boto3":
            result: dict[str, Any] = await asyncio.to_thread(method, **params)
        else:
            result = await method(**params)
        return result

    async def paginate(self, operation: str, **params: Any) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator(operation)
        if self.kind == "boto3":
            return await asyncio.to_thread(lambda: list(paginator.paginate(**params)))
        return [page async for page in paginator.paginate(**params)]


def boto3_client(service: str, info: SandboxInfo, endpoint: str | None = None) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint or info.aws_endpoint_url,
        region_name=info.region,
        **CREDENTIALS,
    )


@pytest_asyncio.fixture(params=["boto3", "aioboto3"])
async def a2i(
    request: pytest.FixtureRequest, sandbox_info: SandboxInfo
) -> AsyncIterator[A2IClient]:
    if request.param == "boto3":
        client = boto3_client("sagemaker-a2i-runtime", sandbox_info, sandbox_info.a2i_endpoint_url)
        yield A2IClient("boto3", client)
        client.close()
        return
    session = aioboto3.Session(region_name=sandbox_info.region, **CREDENTIALS)
    async with session.client(
        "sagemaker-a2i-runtime", endpoint_url=sandbox_info.a2i_endpoint_url
    ) as client:
        yield A2IClient("aioboto3", client)


@pytest.fixture
def clients(sandbox_info: SandboxInfo) -> Iterator[Callable[..., Any]]:
    """``clients("sqs")``, ``clients("sagemaker-a2i-runtime", endpoint, retries=1)``: boto3
    clients for the sandbox, closed after the test."""
    made: list[Any] = []

    def make(service: str, endpoint: str | None = None, *, retries: int | None = None) -> Any:
        config = Config(retries={"mode": "standard", "max_attempts": retries}) if retries else None
        client = boto3.client(
            service,
            endpoint_url=endpoint or sandbox_info.aws_endpoint_url,
            region_name=sandbox_info.region,
            config=config,
            **CREDENTIALS,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def s3(clients: Callable[..., Any]) -> Any:
    return clients("s3")


@pytest.fixture
def sqs(clients: Callable[..., Any]) -> Any:
    return clients("sqs")


@pytest.fixture
def fast_arn(sandbox_info: SandboxInfo) -> str:
    return sandbox_info.flow_definition_arns["fast"]


def drain_messages(
    sqs: Any,
    queue_url: str,
    wanted: Iterable[str],
    key: Any,
    *,
    timeout_s: float = 30.0,
) -> dict[str, list[dict[str, Any]]]:
    """Read (and delete) messages until ``key(body)`` has named every wanted item.

    Messages of other tests are deleted too: each test waits only for its own names.
    """
    wanted = set(wanted)
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout_s
    while not wanted <= found.keys() and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            body = json.loads(message["Body"])
            name = key(body)
            if name in wanted:
                found.setdefault(name, []).append(body)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    missing = wanted - found.keys()
    assert not missing, f"no message for {sorted(missing)} within {timeout_s} s"
    return found


def event_loop_name(body: dict[str, Any]) -> str | None:
    detail = body.get("detail")
    return detail.get("humanLoopName") if isinstance(detail, dict) else None


async def wait_for_events(
    sqs: Any, queue_url: str, names: Iterable[str], timeout_s: float = 30.0
) -> dict[str, list[dict[str, Any]]]:
    return await asyncio.to_thread(
        drain_messages, sqs, queue_url, names, event_loop_name, timeout_s=timeout_s
    )


@pytest_asyncio.fixture
async def admin(label_studio_info: SandboxInfo) -> AsyncIterator[LabelStudioClient]:
    """A client of the sandbox's Label Studio as its admin, for the Label Studio tests."""
    assert label_studio_info.label_studio_url
    assert label_studio_info.label_studio_token
    async with LabelStudioClient(
        label_studio_info.label_studio_url, label_studio_info.label_studio_token
    ) as client:
        yield client
