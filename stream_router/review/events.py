"""Loop events: what a watcher learned about a review, on the loop-events topic.

Every watcher (for A2I EventBridge via SQS and S3 output notifications via SQS, for Label
Studio its webhook posts, and the reconciler) turns what it sees into a :class:`LoopEvent`
keyed by the review (human loop) name. Several events for one review are normal (each watcher,
redeliveries); completion dedupes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from stream_router.naming import is_valid_loop_name
from stream_router.review.backend import ReviewStatus
from stream_router.review.untrusted import finite_number, json_object


def epoch_s(timestamp: object) -> float | None:
    """An ISO 8601 timestamp (``2019-11-14T17:49:25Z``) in epoch seconds; None if it is not one.

    A zone-less timestamp is taken as UTC (AWS writes UTC).
    """
    if not isinstance(timestamp, str):
        return None
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class MalformedLoopEvent(ValueError):
    """A loop-events record that is not a loop event (the reason is the message)."""


_TEXTS = ("output_uri", "flow", "failure_code", "failure_reason")
MAX_TEXT_CHARS = 4096  #: the longest text member of an event (an S3 URI, a failure reason)


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedLoopEvent(f"{key} is a {type(value).__name__}, not a string")
    if len(value) > MAX_TEXT_CHARS:
        raise MalformedLoopEvent(f"{key} has {len(value)} characters; at most {MAX_TEXT_CHARS}")
    return value


def _seconds(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not finite_number(value):
        raise MalformedLoopEvent(f"{key} is not a number of seconds")
    return float(value)


class EventSource(StrEnum):
    EVENTBRIDGE = "eventbridge"
    S3_OUTPUT = "s3-output"
    WEBHOOK = "webhook"  #: Label Studio's webhook post, checked with a describe
    RECONCILER = "reconciler"


@dataclass(frozen=True)
class LoopEvent:
    """A review's status as one watcher saw it.

    ``status`` is None when the source cannot tell it: an S3 notification only says the output
    exists (the review is Completed, or Stopped with output). ``event_time_s`` is the event's
    own time (epoch seconds): EventBridge's ``time``, S3's ``eventTime``, or the review's end
    when the backend reports one (A2I's DescribeHumanLoop does not); None when unknown.
    """

    name: str
    source: EventSource
    status: ReviewStatus | None
    output_uri: str | None = None
    flow: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    observed_at_s: float = 0.0
    event_time_s: float | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "name": self.name,
                "source": self.source.value,
                "status": self.status.value if self.status else None,
                "output_uri": self.output_uri,
                "flow": self.flow,
                "failure_code": self.failure_code,
                "failure_reason": self.failure_reason,
                "observed_at_s": self.observed_at_s,
                "event_time_s": self.event_time_s,
            }
        )

    @classmethod
    def parse(cls, raw: bytes | None) -> LoopEvent:
        """A loop-events record as an event; :class:`MalformedLoopEvent`, with the reason, for
        anything else. Anything that can write the topic can write anything, so every member is
        checked for its type and size (the event reaches the ledger when it ends a review)."""
        data = json_object(raw, MalformedLoopEvent)
        name = data.get("name")
        if not isinstance(name, str) or not is_valid_loop_name(name):
            raise MalformedLoopEvent("name is not a review name")
        try:
            source = EventSource(str(data.get("source")))
        except ValueError:
            raise MalformedLoopEvent(
                f"source is not one of {[s.value for s in EventSource]}"
            ) from None
        status = data.get("status")
        try:
            status = None if status is None else ReviewStatus(status)
        except ValueError:
            raise MalformedLoopEvent(
                f"status is not one of {[s.value for s in ReviewStatus]}"
            ) from None
        text = {key: _text(data, key) for key in _TEXTS}
        event_time = _seconds(data, "event_time_s")
        return cls(
            name=name,
            source=source,
            status=status,
            observed_at_s=_seconds(data, "observed_at_s") or 0.0,
            event_time_s=event_time,
            **text,
        )
