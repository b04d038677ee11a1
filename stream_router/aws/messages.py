"""Pure parsing of the SQS message bodies the watchers read: a decoded JSON body in, events out.

- :func:`eventbridge_event`: an EventBridge "SageMaker A2I HumanLoop Status Change" event (the
  body SQS receives from an EventBridge rule target) → one :class:`LoopEvent`, or None for other
  detail-types.
- :func:`s3_output_events`: an S3 event notification → one :class:`LoopEvent` per ObjectCreated
  record whose key's last segment is ``output.json``; none for ``s3:TestEvent`` and other keys.

Both raise :class:`MalformedMessage` when the body does not have the documented shape; the
watcher logs it (without the body), counts it and deletes the message.

The loop name of an S3 notification comes from the key: the path segment just before
``output.json``. That relies on A2I's documented output layout,
``<S3OutputPath>/<flow-definition-name>/YYYY/MM/DD/hh/mm/ss/<human-loop-name>/output.json``,
which AWS changed once before. A segment that is not a valid loop name is reported as malformed
(the layout changed, or the object is not A2I's) rather than guessed at; the output URI itself
is always the notified key, never rebuilt.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_plus

from stream_router.errors import StreamRouterError
from stream_router.review.backend import ReviewStatus
from stream_router.review.events import EventSource, LoopEvent, epoch_s

DETAIL_TYPE = "SageMaker A2I HumanLoop Status Change"
S3_TEST_EVENT = "s3:TestEvent"
OUTPUT_FILE = "output.json"
LOOP_NAME = re.compile(r"[a-z0-9](-*[a-z0-9])*")
MAX_LOOP_NAME = 63


class MalformedMessage(StreamRouterError, ValueError):
    """A message body that is not the event it should be; the reason never quotes the body."""


def decode_body(body: str) -> dict[str, Any]:
    """An SQS message body as a JSON object."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise MalformedMessage(f"body is not JSON ({type(exc).__name__})") from exc
    if not isinstance(document, dict):
        raise MalformedMessage(f"body is a JSON {type(document).__name__}, not an object")
    return document


def eventbridge_event(message: dict[str, Any], *, observed_at_s: float = 0.0) -> LoopEvent | None:
    """A status-change event as a :class:`LoopEvent`; None when the detail-type is another."""
    if message.get("detail-type") != DETAIL_TYPE:
        return None
    detail = message.get("detail")
    if not isinstance(detail, dict):
        raise MalformedMessage("detail is missing or not an object")
    name = _required_text(detail, "humanLoopName")
    raw_status = _required_text(detail, "humanLoopStatus")
    try:
        status = ReviewStatus(raw_status)
    except ValueError as exc:
        raise MalformedMessage(f"humanLoopStatus {raw_status[:32]!r} is not a loop status") from exc
    output = detail.get("humanLoopOutput")
    if output is not None and not isinstance(output, dict):
        raise MalformedMessage("humanLoopOutput is not an object or null")
    output_uri = _text(output, "outputS3Uri") if output else None
    return LoopEvent(
        name=name,
        source=EventSource.EVENTBRIDGE,
        status=status,
        output_uri=output_uri,
        flow=_text(detail, "flowDefinitionArn"),
        failure_code=_text(detail, "failureCode"),
        failure_reason=_text(detail, "failureReason"),
        observed_at_s=observed_at_s,
        event_time_s=epoch_s(message.get("time")),
    )


def s3_output_events(message: dict[str, Any], *, observed_at_s: float = 0.0) -> list[LoopEvent]:
    """The output.json objects an S3 notification announces, as :class:`LoopEvent` s."""
    if message.get("Event") == S3_TEST_EVENT:
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise MalformedMessage("Records is missing or not a list")
    events = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise MalformedMessage(f"Records[{index}] is not an object")
        event_name = record.get("eventName")
        if not isinstance(event_name, str):
            raise MalformedMessage(f"Records[{index}].eventName is missing")
        if not event_name.removeprefix("s3:").startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3")
        bucket = s3.get("bucket") if isinstance(s3, dict) else None
        obj = s3.get("object") if isinstance(s3, dict) else None
        bucket_name = bucket.get("name") if isinstance(bucket, dict) else None
        raw_key = obj.get("key") if isinstance(obj, dict) else None
        if not isinstance(bucket_name, str) or not bucket_name or not isinstance(raw_key, str):
            raise MalformedMessage(f"Records[{index}] has no s3.bucket.name or s3.object.key")
        key = unquote_plus(raw_key)
        segments = key.split("/")
        if segments[-1] != OUTPUT_FILE:
            continue
        name = segments[-2] if len(segments) >= 2 else ""
        if len(name) > MAX_LOOP_NAME or not LOOP_NAME.fullmatch(name):
            raise MalformedMessage(
                f"Records[{index}]: the segment before {OUTPUT_FILE} is not a human loop name "
                "(output key layout not as documented)"
            )
        events.append(
            LoopEvent(
                name=name,
                source=EventSource.S3_OUTPUT,
                status=None,
                output_uri=f"s3://{bucket_name}/{key}",
                observed_at_s=observed_at_s,
                event_time_s=epoch_s(record.get("eventTime")),
            )
        )
    return events


def _text(document: dict[str, Any], field: str) -> str | None:
    """An optional string field (absent or null → None)."""
    value = document.get(field)
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"{field} is not a string or null")
    return value


def _required_text(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"{field} is missing or not a non-empty string")
    return value
