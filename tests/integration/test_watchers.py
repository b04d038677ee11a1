"""The SQS watchers against moto's SQS, fed by the A2I emulator, moto's EventBridge and S3.

The sandbox's event and output queues are shared by every test: watchers there wait for their
own loop names and ignore (but delete) the rest. At-least-once behaviour is checked on private
queues, where every message is the test's own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from stream_router.aws.clients import AwsClients, AwsEndpoints
from stream_router.aws.watchers import (
    EventBridgeSqsWatcher,
    S3OutputSqsWatcher,
    SqsWatcher,
    WatcherCounts,
)
from stream_router.review.backend import ReviewStatus
from stream_router.review.events import EventSource, LoopEvent
from stream_router.sandbox.stack import SandboxInfo

pytestmark = pytest.mark.integration

Names = Callable[[str], str]
DETAIL_TYPE = "SageMaker A2I HumanLoop Status Change"


@pytest.fixture
def clients(sandbox_info: SandboxInfo) -> AwsClients:
    env = sandbox_info.env()
    return AwsClients(
        AwsEndpoints(
            region=sandbox_info.region,
            endpoint_urls={
                "sagemaker-a2i-runtime": sandbox_info.a2i_endpoint_url,
                "s3": sandbox_info.aws_endpoint_url,
                "sqs": sandbox_info.aws_endpoint_url,
            },
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
    )


@pytest_asyncio.fixture
async def private_queue(clients: AwsClients) -> AsyncIterator[str]:
    async with clients.client("sqs") as sqs:
        url: str = (await sqs.create_queue(QueueName=f"watcher-{uuid.uuid4().hex[:12]}"))[
            "QueueUrl"
        ]
        yield url
        await sqs.delete_queue(QueueUrl=url)


class Recorder:
    """An ``emit`` that records every event and signals when ``wanted`` arrives ``times`` times.

    ``fail_first`` makes the first emit of ``wanted`` raise, as a broken downstream would.
    """

    def __init__(self, wanted: str, *, times: int = 1, fail_first: bool = False) -> None:
        self.wanted = wanted
        self.times = times
        self.fail_first = fail_first
        self.events: list[LoopEvent] = []
        self.calls: list[float] = []  #: monotonic time of each emit of ``wanted``
        self.arrived = asyncio.Event()

    async def __call__(self, event: LoopEvent) -> None:
        if event.name == self.wanted:
            self.calls.append(time.monotonic())
            if self.fail_first and len(self.calls) == 1:
                raise RuntimeError("downstream unavailable")
            self.events.append(event)
            if len(self.calls) >= self.times:
                self.arrived.set()
        else:
            self.events.append(event)

    def mine(self) -> list[LoopEvent]:
        return [event for event in self.events if event.name == self.wanted]


async def run_until(watcher: SqsWatcher, recorder: Recorder, timeout_s: float = 30.0) -> float:
    """Run ``watcher`` until ``recorder`` got its events; returns how long ``run`` took to end."""
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(recorder.arrived.wait(), timeout_s)
    finally:
        stop.set()
        stopping = time.monotonic()
        await asyncio.wait_for(task, 10)
    return time.monotonic() - stopping


class CountsReached:
    """An ``on_poll`` hook: ``reached`` is set once the watcher's counters satisfy ``condition``."""

    def __init__(self, condition: Callable[[WatcherCounts], bool]) -> None:
        self.condition = condition
        self.reached = asyncio.Event()

    def __call__(self, counts: WatcherCounts) -> None:
        if self.condition(counts):
            self.reached.set()


async def run_until_counts(
    watcher: SqsWatcher, reached: CountsReached, timeout_s: float = 10.0
) -> float:
    """Run ``watcher`` until its counters reach ``reached``; returns how long stopping took."""
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(reached.reached.wait(), timeout_s)
    finally:
        stop.set()
        stopping = time.monotonic()
        await asyncio.wait_for(task, 10)
    return time.monotonic() - stopping


async def start_loop(clients: AwsClients, name: str, flow_arn: str) -> None:
    async with clients.client("sagemaker-a2i-runtime") as a2i:
        await a2i.start_human_loop(
            HumanLoopName=name,
            FlowDefinitionArn=flow_arn,
            HumanLoopInput={"InputContent": json.dumps({"label": "cat", "confidence": 0.4})},
        )


async def queue_depth(clients: AwsClients, url: str) -> int:
    """Visible plus in-flight messages of a queue."""
    async with clients.client("sqs") as sqs:
        attributes = (
            await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
    return sum(int(value) for value in attributes.values())


def status_event(name: str, status: str = "Completed") -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": DETAIL_TYPE,
            "source": "aws.sagemaker",
            "account": "123456789012",
            "time": "2024-05-01T12:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:sagemaker:us-east-1:123456789012:human-loop/{name}"],
            "detail": {
                "creationTime": "2024-05-01T11:59:00.000Z",
                "failureCode": None,
                "failureReason": None,
                "flowDefinitionArn": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/x",
                "humanLoopArn": f"arn:aws:sagemaker:us-east-1:123456789012:human-loop/{name}",
                "humanLoopName": name,
                "humanLoopOutput": {
                    "outputS3Uri": f"s3://b/x/2024/05/01/11/59/00/{name}/output.json"
                },
                "humanLoopStatus": status,
            },
        }
    )


# -- the sandbox's queues ------------------------------------------------------------------------


async def test_eventbridge_watcher_reports_a_completed_loop(
    clients: AwsClients, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    name = unique_name("eb-done")
    arn = sandbox_info.flow_definition_arns["fast"]
    await start_loop(clients, name, arn)
    recorder = Recorder(name)
    watcher = EventBridgeSqsWatcher(clients, sandbox_info.event_queue_url, recorder, wait_time_s=1)
    stopped_in = await run_until(watcher, recorder)

    [event] = recorder.mine()
    assert event.source is EventSource.EVENTBRIDGE
    assert event.status is ReviewStatus.COMPLETED
    assert event.flow == arn
    assert event.failure_code is None
    assert event.output_uri is not None
    assert event.output_uri.startswith(f"s3://{sandbox_info.output_bucket}/a2i/fast/")
    assert event.output_uri.endswith(f"/{name}/output.json")
    assert abs(event.observed_at_s - time.time()) < 30
    assert watcher.counts.emitted >= 1
    assert watcher.counts.deleted >= 1
    assert stopped_in < 1 + 2  # at most the poll in progress (wait_time_s=1), plus slack


async def test_eventbridge_watcher_reports_an_expired_loop(
    clients: AwsClients, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    name = unique_name("eb-expired")
    await start_loop(clients, name, sandbox_info.flow_definition_arns["never"])
    recorder = Recorder(name)
    watcher = EventBridgeSqsWatcher(clients, sandbox_info.event_queue_url, recorder, wait_time_s=1)
    await run_until(watcher, recorder)

    [event] = recorder.mine()
    assert event.status is ReviewStatus.FAILED
    assert event.failure_code == "Expired"
    assert event.failure_reason
    assert event.output_uri is None


async def test_s3_watcher_reports_the_output_of_a_loop(
    clients: AwsClients, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    name = unique_name("s3-done")
    await start_loop(clients, name, sandbox_info.flow_definition_arns["fast"])
    recorder = Recorder(name)
    watcher = S3OutputSqsWatcher(clients, sandbox_info.output_queue_url, recorder, wait_time_s=1)
    await run_until(watcher, recorder)

    [event] = recorder.mine()
    assert event.source is EventSource.S3_OUTPUT
    assert event.status is None
    assert event.flow is None
    async with clients.client("sagemaker-a2i-runtime") as a2i:
        described = await a2i.describe_human_loop(HumanLoopName=name)
    assert event.output_uri == described["HumanLoopOutput"]["OutputS3Uri"]


async def test_s3_watcher_decodes_keys(
    clients: AwsClients, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    """moto URL-encodes the key of the notification; the event carries the real key."""
    name = unique_name("s3-encoded")
    key = f"watcher tests/a+b=c/fast/2024/05/01/12/00/00/{name}/output.json"
    recorder = Recorder(name)
    watcher = S3OutputSqsWatcher(clients, sandbox_info.output_queue_url, recorder, wait_time_s=1)
    async with clients.client("s3") as s3:
        await s3.put_object(Bucket=sandbox_info.output_bucket, Key=key, Body=b"{}")
    await run_until(watcher, recorder)
    [event] = recorder.mine()
    assert event.output_uri == f"s3://{sandbox_info.output_bucket}/{key}"


# -- at-least-once, on a private queue -------------------------------------------------------------


async def test_message_is_deleted_only_after_emit_returned(
    clients: AwsClients, private_queue: str, unique_name: Names
) -> None:
    name = unique_name("redeliver")
    async with clients.client("sqs") as sqs:
        await sqs.send_message(QueueUrl=private_queue, MessageBody=status_event(name))
    recorder = Recorder(name, times=2, fail_first=True)
    watcher = EventBridgeSqsWatcher(
        clients,
        private_queue,
        recorder,
        wait_time_s=1,
        visibility_timeout_s=1,
        backoff_initial_s=0.05,
    )
    await run_until(watcher, recorder)

    assert len(recorder.calls) == 2  # failed once, redelivered, emitted once
    assert recorder.calls[1] - recorder.calls[0] >= 0.9  # back only after the visibility timeout
    [event] = recorder.mine()
    assert event.status is ReviewStatus.COMPLETED
    counts = watcher.counts
    assert (counts.received, counts.emit_failures, counts.emitted, counts.deleted) == (2, 1, 1, 1)
    assert await queue_depth(clients, private_queue) == 0


async def test_bad_and_foreign_messages_are_deleted_and_counted(
    clients: AwsClients, private_queue: str, unique_name: Names
) -> None:
    name = unique_name("sentinel")
    other_type = json.loads(status_event("someone-else"))
    other_type["detail-type"] = "SageMaker Training Job State Change"
    bodies = [
        "not json at all",
        json.dumps([1, 2, 3]),
        json.dumps({"detail-type": DETAIL_TYPE, "detail": {"humanLoopStatus": "Completed"}}),
        json.dumps(other_type),
        status_event(name, "Stopped"),
    ]
    async with clients.client("sqs") as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=private_queue, MessageBody=body)
    recorder = Recorder(name)
    all_deleted = CountsReached(lambda counts: counts.deleted == len(bodies))
    watcher = EventBridgeSqsWatcher(
        clients, private_queue, recorder, wait_time_s=1, on_poll=all_deleted
    )
    await run_until_counts(watcher, all_deleted)

    assert [(e.name, e.status) for e in recorder.events] == [(name, ReviewStatus.STOPPED)]
    assert watcher.counts.unparseable == 3
    assert watcher.counts.ignored == 1
    assert watcher.counts.emitted == 1
    assert await queue_depth(clients, private_queue) == 0


async def test_s3_test_event_is_ignored(clients: AwsClients, private_queue: str) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    async with clients.client("sqs") as sqs:
        await sqs.send_message(QueueUrl=private_queue, MessageBody=json.dumps(test_event))
    recorder = Recorder("nobody")
    deleted = CountsReached(lambda counts: counts.deleted == 1)
    watcher = S3OutputSqsWatcher(clients, private_queue, recorder, wait_time_s=1, on_poll=deleted)
    await run_until_counts(watcher, deleted)
    assert recorder.events == []
    assert watcher.counts.ignored == 1
    assert watcher.counts.unparseable == 0


async def test_sqs_errors_back_off_and_stop_interrupts_the_back_off(
    clients: AwsClients, sandbox_info: SandboxInfo
) -> None:
    missing = f"{sandbox_info.aws_endpoint_url}/123456789012/no-such-queue-{uuid.uuid4().hex}"
    failed = CountsReached(lambda counts: counts.sqs_errors >= 1)
    watcher = EventBridgeSqsWatcher(
        clients, missing, Recorder("nobody"), wait_time_s=1, backoff_initial_s=60.0, on_poll=failed
    )
    stopped_in = await run_until_counts(watcher, failed)
    assert stopped_in < 5  # not the 60 s back-off
    assert watcher.counts.sqs_errors == 1  # backing off, not retrying in a busy loop
    assert watcher.counts.received == 0


class Ceiling(random.Random):
    """A random source whose ``uniform(a, b)`` is always ``b``."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_sqs_errors_back_off_exponentially_up_to_the_cap(
    clients: AwsClients, sandbox_info: SandboxInfo
) -> None:
    missing = f"{sandbox_info.aws_endpoint_url}/123456789012/no-such-queue-{uuid.uuid4().hex}"
    failed_at: list[float] = []
    four_failures = CountsReached(lambda counts: counts.sqs_errors >= 4)

    def on_poll(counts: WatcherCounts) -> None:
        failed_at.append(time.monotonic())
        four_failures(counts)

    watcher = EventBridgeSqsWatcher(
        clients,
        missing,
        Recorder("nobody"),
        wait_time_s=1,
        backoff_initial_s=0.2,
        backoff_max_s=0.4,
        rng=Ceiling(),  # each delay at the top of its jitter range, to measure the growth
        on_poll=on_poll,
    )
    await run_until_counts(watcher, four_failures)
    gaps = [later - earlier for earlier, later in itertools.pairwise(failed_at)]
    assert gaps[0] >= 0.19  # 0.2 s after the first failure
    assert gaps[1] >= 0.39  # doubled
    assert 0.39 <= gaps[2] < 0.75  # capped at 0.4 s, not 0.8 s
