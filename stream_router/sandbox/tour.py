"""A scripted tour of the sandbox, run by ``stream-router demo`` until the router exists.

It walks the path a prediction will take, with plain clients and no router in between:
predictions produced to Kafka and consumed back in a consumer group; the unsure ones sent to A2I
with StartHumanLoop (aioboto3); completion seen as EventBridge events arriving in SQS and as S3
notifications; the simulated reviewers' answers read from output.json. It exits 0 only when
every loop it started ended and its answers were read.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_router.aws.clients import AwsClients, AwsEndpoints
from stream_router.sandbox.settings import SandboxSettings
from stream_router.sandbox.stack import Sandbox, SandboxInfo

TOPIC = "predictions"
LABELS = ("cat", "dog", "bird", "other")
Echo = Callable[[str], None]


@dataclass
class TourResult:
    produced: int
    consumed: int
    loops_started: int
    loops_completed: int
    corrected: int
    startup_s: float
    resident_mb: float

    @property
    def ok(self) -> bool:
        return self.consumed == self.produced and self.loops_completed == self.loops_started


def synthetic_predictions(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Predictions with a ground-truth field; about a third are unsure (confidence < 0.7)."""
    rng = random.Random(seed)
    events = []
    for index in range(count):
        truth = rng.choice(LABELS)
        right = rng.random() < 0.8
        label = truth if right else rng.choice([x for x in LABELS if x != truth])
        confidence = (
            rng.uniform(0.85, 0.99) if right and rng.random() < 0.7 else rng.uniform(0.3, 0.69)
        )
        events.append(
            {
                "event_id": f"evt-{index:04d}",
                "model": "demo-classifier",
                "label": label,
                "confidence": round(confidence, 3),
                "ground_truth": truth,
                "ts": time.time(),
            }
        )
    return events


async def _produce_and_consume(info: SandboxInfo, events: list[dict[str, Any]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=info.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send(TOPIC, json.dumps(event).encode(), key=event["event_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=info.bootstrap_servers,
        group_id=f"tour-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while seen < len(events) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()
    return seen


async def _review(
    info: SandboxInfo, unsure: list[dict[str, Any]], echo: Echo, timeout_s: float
) -> tuple[int, int]:
    clients = AwsClients(
        AwsEndpoints(
            region=info.region,
            endpoint_urls={
                "sagemaker-a2i-runtime": info.a2i_endpoint_url,
                "s3": info.aws_endpoint_url,
                "sqs": info.aws_endpoint_url,
            },
            access_key_id=info.env()["AWS_ACCESS_KEY_ID"],
            secret_access_key=info.env()["AWS_SECRET_ACCESS_KEY"],
        )
    )
    flows = list(info.flow_definition_arns.values())
    by_loop = {f"tour-{event['event_id']}": event for event in unsure}
    async with (
        clients.client("sagemaker-a2i-runtime") as a2i,
        clients.client("sqs") as sqs,
        clients.client("s3") as s3,
    ):
        for index, (name, event) in enumerate(by_loop.items()):
            await a2i.start_human_loop(
                HumanLoopName=name,
                FlowDefinitionArn=flows[index % len(flows)],
                HumanLoopInput={"InputContent": json.dumps(event)},
                DataAttributes={"ContentClassifiers": ["FreeOfPersonallyIdentifiableInformation"]},
            )
        echo(f"  started {len(by_loop)} human loops on {len(flows)} flow definitions")

        finished: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(finished) < len(by_loop) and time.monotonic() < deadline:
            reply = await sqs.receive_message(
                QueueUrl=info.event_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in reply.get("Messages", []):
                detail = json.loads(message["Body"])["detail"]
                if detail["humanLoopName"] in by_loop:
                    finished[detail["humanLoopName"]] = detail
                await sqs.delete_message(
                    QueueUrl=info.event_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

        corrected = 0
        completed = 0
        for name, detail in sorted(finished.items()):
            event = by_loop[name]
            if detail["humanLoopStatus"] != "Completed":
                echo(f"  {name}: {detail['humanLoopStatus']} {detail.get('failureCode') or ''}")
                continue
            uri = detail["humanLoopOutput"]["outputS3Uri"]
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
            output = json.loads(body)
            answers = [a["answerContent"]["label"]["label"] for a in output["humanAnswers"]]
            majority = max(set(answers), key=answers.count)
            completed += 1
            corrected += majority != event["label"]
            echo(
                f"  {name}: model {event['label']:<5} conf {event['confidence']:.2f} -> "
                f"reviewers {', '.join(answers)}"
            )
        return completed, corrected


async def run_tour(
    settings: SandboxSettings | None = None,
    *,
    events: int = 24,
    review_below: float = 0.7,
    timeout_s: float = 60.0,
    echo: Echo = print,
) -> TourResult:
    settings = settings or SandboxSettings()
    settings = settings.model_copy(update={"topics": sorted({*settings.topics, TOPIC})})
    echo("starting the sandbox: Kafka-protocol broker, moto (S3/SQS/EventBridge), A2I emulator")
    async with Sandbox(settings) as sandbox:
        info = sandbox.info()
        echo(
            f"  ready in {sandbox.startup_s:.2f} s; Kafka at {info.bootstrap_servers}, "
            f"A2I at {info.a2i_endpoint_url}"
        )
        predictions = synthetic_predictions(events)
        consumed = await _produce_and_consume(info, predictions)
        echo(f"  produced {len(predictions)} predictions to '{TOPIC}', consumed {consumed} back")
        unsure = [p for p in predictions if p["confidence"] < review_below]
        echo(f"  {len(unsure)} below confidence {review_below}: sending them to human review")
        completed, corrected = await _review(info, unsure, echo, timeout_s)
        resident_mb = sandbox.resident_bytes() / 1e6
        result = TourResult(
            produced=len(predictions),
            consumed=consumed,
            loops_started=len(unsure),
            loops_completed=completed,
            corrected=corrected,
            startup_s=sandbox.startup_s or 0.0,
            resident_mb=resident_mb,
        )
    echo(
        f"summary: {result.loops_completed}/{result.loops_started} loops completed, reviewers "
        f"corrected the model {result.corrected} times; sandbox started in "
        f"{result.startup_s:.2f} s, {result.resident_mb:.0f} MB resident"
    )
    return result


def main(events: int = 24) -> int:
    result = asyncio.run(run_tour(events=events))
    return 0 if result.ok else 1
