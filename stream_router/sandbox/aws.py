"""AWS emulation: moto in server mode, with the resources the router needs created on start.

Usage::

    async with MotoServer() as moto:
        resources = await provision(moto.endpoint_url, SandboxAws())
        resources.event_queue_url  # where EventBridge delivers A2I status changes

What :func:`provision` creates, mirroring ``deploy/``'s AWS infrastructure:

- the A2I output bucket, with an S3 ObjectCreated notification for keys ending in
  ``output.json`` to the output queue (S3 first sends an ``s3:TestEvent`` there);
- the SQS queues for status events and output notifications;
- an EventBridge rule with the A2I status-change pattern, targeting the event queue;
- the broker's storage bucket (used only with s3:// broker storage).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from stream_router.sandbox.process import ManagedProcess, ProcessService, free_port
from stream_router.sandbox.settings import SandboxAws

logger = logging.getLogger(__name__)

DUMMY_ACCESS_KEY = "sandbox"
DUMMY_SECRET_KEY = "sandbox"  # noqa: S105 - moto accepts any credential
A2I_EVENT_PATTERN = {
    "source": ["aws.sagemaker"],
    "detail-type": ["SageMaker A2I HumanLoop Status Change"],
}

#: The whole EventBridge envelope, as AWS delivers it to a target without an input transformer.
#: Only moto needs this spelt out: its default delivery leaves out ``account`` (which real
#: EventBridge sends, and A2I users' code reads), so the target asks for every field by name.
_ENVELOPE_FIELDS = ("version", "id", "detail-type", "source", "account", "time", "region",
                    "resources", "detail")  # fmt: skip
WHOLE_EVENT = {
    "InputPathsMap": {name: f"$.{name}" for name in _ENVELOPE_FIELDS},
    "InputTemplate": (
        '{"version": "<version>", "id": "<id>", "detail-type": "<detail-type>", '
        '"source": "<source>", "account": "<account>", "time": <time>, "region": "<region>", '
        '"resources": <resources>, "detail": <detail>}'
    ),
}


def client(service: str, endpoint_url: str, region: str) -> Any:
    """A plain boto3 client for the sandbox (dummy credentials, explicit endpoint)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=DUMMY_ACCESS_KEY,
        aws_secret_access_key=DUMMY_SECRET_KEY,
    )


class MotoServer(ProcessService):
    """moto in server mode on a free loopback port."""

    def __init__(
        self, *, port: int | None = None, log_dir: Path | None = None, ready_timeout_s: float = 60
    ) -> None:
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self.process = ManagedProcess(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            ready_pattern=r"Running on http://",
            log_path=(log_dir / "moto.log") if log_dir else None,
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class AwsResources:
    """What :func:`provision` created, as clients need it."""

    endpoint_url: str
    region: str
    output_bucket: str
    output_prefix: str
    event_queue_url: str
    output_queue_url: str
    event_rule: str
    broker_bucket: str


def provision_sync(endpoint_url: str, aws: SandboxAws) -> AwsResources:
    """Create (or find) every sandbox resource; safe to call again on the same server."""
    s3 = client("s3", endpoint_url, aws.region)
    sqs = client("sqs", endpoint_url, aws.region)
    events = client("events", endpoint_url, aws.region)

    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (aws.output_bucket, aws.broker_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)

    queue_urls: dict[str, str] = {}
    queue_arns: dict[str, str] = {}
    for name in (aws.event_queue, aws.output_queue):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_urls[name] = url
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        queue_arns[name] = attrs["Attributes"]["QueueArn"]

    events.put_rule(
        Name=aws.event_rule,
        EventPattern=json.dumps(A2I_EVENT_PATTERN),
        State="ENABLED",
        Description="A2I human loop status changes to the stream_router event queue",
    )
    events.put_targets(
        Rule=aws.event_rule,
        Targets=[
            {
                "Id": "event-queue",
                "Arn": queue_arns[aws.event_queue],
                "InputTransformer": WHOLE_EVENT,
            }
        ],
    )

    s3.put_bucket_notification_configuration(
        Bucket=aws.output_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "a2i-output-json",
                    "QueueArn": queue_arns[aws.output_queue],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "suffix", "Value": "output.json"}]}
                    },
                }
            ]
        },
    )
    return AwsResources(
        endpoint_url=endpoint_url,
        region=aws.region,
        output_bucket=aws.output_bucket,
        output_prefix=aws.output_prefix,
        event_queue_url=queue_urls[aws.event_queue],
        output_queue_url=queue_urls[aws.output_queue],
        event_rule=aws.event_rule,
        broker_bucket=aws.broker_bucket,
    )


async def provision(endpoint_url: str, aws: SandboxAws) -> AwsResources:
    """Async form of :func:`provision_sync` (boto3 runs in a worker thread)."""
    return await asyncio.to_thread(provision_sync, endpoint_url, aws)
