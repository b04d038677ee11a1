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

from stream_router.review.backend import ReviewStatus


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
    def from_json(cls, raw: bytes) -> LoopEvent:
        data: dict[str, Any] = orjson.loads(raw)
        status = data.get("status")
        event_time = data.get("event_time_s")
        return cls(
            name=data["name"],
            source=EventSource(data["source"]),
            status=ReviewStatus(status) if status else None,
            output_uri=data.get("output_uri"),
            flow=data.get("flow"),
            failure_code=data.get("failure_code"),
            failure_reason=data.get("failure_reason"),
            observed_at_s=float(data.get("observed_at_s", 0.0)),
            event_time_s=None if event_time is None else float(event_time),
        )
