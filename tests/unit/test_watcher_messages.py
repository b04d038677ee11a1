"""Parsing of the SQS bodies the watchers read: EventBridge A2I events and S3 notifications."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from stream_router.aws.messages import (
    MalformedMessage,
    decode_body,
    eventbridge_event,
    s3_output_events,
)
from stream_router.review.backend import ReviewStatus
from stream_router.review.events import EventSource, LoopEvent

FLOW_ARN = "arn:aws:sagemaker:us-east-1:111122223333:flow-definition/fd-name"
OUTPUT_URI = "s3://bucket/prefix/fd-name/2019/11/14/17/37/36/loop-name/output.json"


def status_event(status: str = "Completed", **detail: Any) -> dict[str, Any]:
    """An A2I status-change event as EventBridge delivers it to SQS (AWS's documented sample)."""
    event: dict[str, Any] = {
        "version": "0",
        "id": "12345678-1111-2222-3333-12345example",
        "detail-type": "SageMaker A2I HumanLoop Status Change",
        "source": "aws.sagemaker",
        "account": "111122223333",
        "time": "2019-11-14T17:49:25Z",
        "region": "us-east-1",
        "resources": ["arn:aws:sagemaker:us-east-1:111122223333:human-loop/loop-name"],
        "detail": {
            "creationTime": "2019-11-14T17:37:36.740Z",
            "failureCode": None,
            "failureReason": None,
            "flowDefinitionArn": FLOW_ARN,
            "humanLoopArn": "arn:aws:sagemaker:us-east-1:111122223333:human-loop/loop-name",
            "humanLoopName": "loop-name",
            "humanLoopOutput": {"outputS3Uri": OUTPUT_URI},
            "humanLoopStatus": status,
        },
    }
    event["detail"].update(detail)
    return event


def s3_record(
    key: str, bucket: str = "bucket", event_name: str = "ObjectCreated:Put"
) -> dict[str, Any]:
    """One record of an S3 event notification (key URL-encoded, as S3 sends it)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2019-11-14T17:49:25.123Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "a2i-output-json",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e"},
        },
    }


# -- EventBridge ---------------------------------------------------------------------------------


def test_completed_event() -> None:
    event = eventbridge_event(status_event("Completed"), observed_at_s=123.5)
    assert event == LoopEvent(
        name="loop-name",
        source=EventSource.EVENTBRIDGE,
        status=ReviewStatus.COMPLETED,
        output_uri=OUTPUT_URI,
        flow=FLOW_ARN,
        failure_code=None,
        failure_reason=None,
        observed_at_s=123.5,
        event_time_s=1573753765.0,  # the event's "time", 2019-11-14T17:49:25Z
    )


def test_expired_event_with_null_output() -> None:
    body = status_event(
        "Failed",
        failureCode="Expired",
        failureReason="The human loop expired",
        humanLoopOutput=None,
    )
    event = eventbridge_event(body)
    assert event is not None
    assert event.status is ReviewStatus.FAILED
    assert event.failure_code == "Expired"
    assert event.failure_reason == "The human loop expired"
    assert event.output_uri is None


def test_failed_event_without_output_field() -> None:
    body = status_event("Failed", failureCode="InternalError", failureReason="boom")
    del body["detail"]["humanLoopOutput"]
    event = eventbridge_event(body)
    assert event is not None
    assert event.output_uri is None
    assert event.failure_code == "InternalError"


def test_output_object_with_null_uri() -> None:
    event = eventbridge_event(status_event("Stopped", humanLoopOutput={"outputS3Uri": None}))
    assert event is not None
    assert event.output_uri is None


@pytest.mark.parametrize(
    ("output", "expected"), [(None, None), ({"outputS3Uri": OUTPUT_URI}, OUTPUT_URI)]
)
def test_stopped_event(output: dict[str, str] | None, expected: str | None) -> None:
    """A Stopped loop may or may not have output (a worker that held the task finished it)."""
    event = eventbridge_event(status_event("Stopped", humanLoopOutput=output))
    assert event is not None
    assert event.status is ReviewStatus.STOPPED
    assert event.output_uri == expected


@pytest.mark.parametrize(
    "detail_type",
    ["SageMaker Training Job State Change", "Object Created", "", None],
)
def test_other_detail_types_are_ignored(detail_type: str | None) -> None:
    body = status_event()
    body["detail-type"] = detail_type
    assert eventbridge_event(body) is None


def test_other_detail_type_without_a2i_detail_is_ignored() -> None:
    body = {"detail-type": "EC2 Instance State-change Notification", "detail": {"state": "x"}}
    assert eventbridge_event(body) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.pop("detail"), "detail"),
        (lambda b: b.update(detail=["not", "an", "object"]), "detail"),
        (lambda b: b["detail"].pop("humanLoopName"), "humanLoopName"),
        (lambda b: b["detail"].update(humanLoopName=""), "humanLoopName"),
        (lambda b: b["detail"].update(humanLoopName=7), "humanLoopName"),
        (lambda b: b["detail"].pop("humanLoopStatus"), "humanLoopStatus"),
        (lambda b: b["detail"].update(humanLoopStatus="Exploded"), "humanLoopStatus"),
        (lambda b: b["detail"].update(humanLoopOutput="s3://x/y"), "humanLoopOutput"),
        (lambda b: b["detail"].update(humanLoopOutput={"outputS3Uri": 5}), "outputS3Uri"),
        (lambda b: b["detail"].update(failureCode=3), "failureCode"),
        (lambda b: b["detail"].update(flowDefinitionArn=[FLOW_ARN]), "flowDefinitionArn"),
    ],
)
def test_malformed_a2i_events(mutate: Any, reason: str) -> None:
    body = copy.deepcopy(status_event())
    mutate(body)
    with pytest.raises(MalformedMessage, match=reason):
        eventbridge_event(body)


# -- S3 notifications ----------------------------------------------------------------------------


def test_output_notification() -> None:
    key = "a2i/fast/2024/05/01/12/00/00/loop-1/output.json"
    events = s3_output_events({"Records": [s3_record(key)]}, observed_at_s=9.0)
    assert events == [
        LoopEvent(
            name="loop-1",
            source=EventSource.S3_OUTPUT,
            status=None,
            output_uri=f"s3://bucket/{key}",
            observed_at_s=9.0,
            event_time_s=1573753765.123,  # the record's eventTime
        )
    ]


def test_url_encoded_key_with_spaces_and_plus() -> None:
    """S3 form-encodes keys: a space arrives as '+', a literal '+' as '%2B'."""
    encoded = "my+prefix/a%2Bb/fd/2024/05/01/12/00/00/loop-2/output.json"
    [event] = s3_output_events({"Records": [s3_record(encoded)]})
    assert event.output_uri == "s3://bucket/my prefix/a+b/fd/2024/05/01/12/00/00/loop-2/output.json"
    assert event.name == "loop-2"


def test_percent_encoded_characters_are_decoded() -> None:
    encoded = "r%C3%A9sum%C3%A9%3D1/fd/2024/05/01/12/00/00/loop-3/output.json"
    [event] = s3_output_events({"Records": [s3_record(encoded)]})
    assert event.output_uri == "s3://bucket/résumé=1/fd/2024/05/01/12/00/00/loop-3/output.json"


def test_test_event_is_ignored() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-05-01T12:00:00.000Z",
        "Bucket": "bucket",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert s3_output_events(test_event) == []


@pytest.mark.parametrize(
    "key",
    [
        "a2i/fd/2024/05/01/12/00/00/loop/input.json",
        "a2i/fd/2024/05/01/12/00/00/loop/output.json.tmp",
        "a2i/fd/2024/05/01/12/00/00/loop/not-output.json",
        "a2i/fd/2024/05/01/12/00/00/loop/",
    ],
)
def test_keys_that_are_not_output_json_are_skipped(key: str) -> None:
    assert s3_output_events({"Records": [s3_record(key)]}) == []


@pytest.mark.parametrize("event_name", ["ObjectRemoved:Delete", "ObjectRestore:Completed"])
def test_non_create_records_are_skipped(event_name: str) -> None:
    record = s3_record("a2i/fd/2024/05/01/12/00/00/loop/output.json", event_name=event_name)
    assert s3_output_events({"Records": [record]}) == []


def test_multiple_records() -> None:
    records = [
        s3_record("a2i/fd/2024/05/01/12/00/00/loop-a/output.json", bucket="one"),
        s3_record("a2i/fd/2024/05/01/12/00/00/loop-b/input.json"),
        s3_record("a2i/fd/2024/05/01/12/00/01/loop-c/output.json", event_name="ObjectRemoved:*"),
        s3_record("a2i/fd/2024/05/01/12/00/02/loop-d/output.json", bucket="two"),
    ]
    events = s3_output_events({"Records": records})
    assert [(e.name, e.output_uri) for e in events] == [
        ("loop-a", "s3://one/a2i/fd/2024/05/01/12/00/00/loop-a/output.json"),
        ("loop-d", "s3://two/a2i/fd/2024/05/01/12/00/02/loop-d/output.json"),
    ]


def test_no_records_is_no_event() -> None:
    assert s3_output_events({"Records": []}) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"Type": "Notification", "Message": "{}"}, "Records"),
        ({"Records": {"not": "a list"}}, "Records"),
        ({"Records": ["string"]}, r"Records\[0\]"),
        ({"Records": [{"s3": {}}]}, "eventName"),
        ({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}, "s3.bucket.name"),
        ({"Records": [{"eventName": "ObjectCreated:Put", "s3": "x"}]}, "s3.bucket.name"),
    ],
)
def test_malformed_notifications(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        s3_output_events(body)


@pytest.mark.parametrize(
    "key",
    [
        "output.json",  # no segment before
        "a2i/fd/2024/05/01/12/00/00/Loop_Name/output.json",  # not a loop name
        "a2i/fd/2024/05/01/12/00/00/" + "x" * 64 + "/output.json",  # too long
        "a2i/fd/2024/05/01/12/00/00//output.json",  # empty segment
    ],
)
def test_output_key_without_a_loop_name_is_malformed(key: str) -> None:
    """The name comes from the documented layout; a key that breaks it is reported, not guessed."""
    with pytest.raises(MalformedMessage, match="not a human loop name"):
        s3_output_events({"Records": [s3_record(key)]})


# -- bodies --------------------------------------------------------------------------------------


def test_decode_body() -> None:
    assert decode_body(json.dumps(status_event())) == status_event()


@pytest.mark.parametrize(("body", "reason"), [("{not json", "not JSON"), ("[1, 2]", "list")])
def test_undecodable_bodies(body: str, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as caught:
        decode_body(body)
    assert body not in str(caught.value)  # the reason never quotes the body
