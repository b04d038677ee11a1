"""Watchers: how the router learns that a review ended.

- ``sqs``: :class:`EventBridgeSqsWatcher` (A2I status-change events) and
  :class:`S3OutputSqsWatcher` (output.json notifications), both long-polling SQS and handing
  :class:`~stream_router.review.events.LoopEvent` s to an async ``emit`` (at-least-once);
- ``messages``: the pure parsing of those message bodies.

The reconciler (DescribeHumanLoop / ListHumanLoops through the review backend) needs the
ledger, so it is a timer of the review application (``stream_router/review_role.py``).
"""

from __future__ import annotations

from stream_router.watchers.messages import MalformedMessage
from stream_router.watchers.sqs import (
    Emit,
    EventBridgeSqsWatcher,
    PollErrors,
    S3OutputSqsWatcher,
    SqsWatcher,
    WatcherCounts,
)

__all__ = [
    "Emit",
    "EventBridgeSqsWatcher",
    "MalformedMessage",
    "PollErrors",
    "S3OutputSqsWatcher",
    "SqsWatcher",
    "WatcherCounts",
]
