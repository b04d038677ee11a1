"""What a loop event means for its review: publish a result, escalate, dead-letter, or wait.

Given an ENDED ledger entry (its ``end`` is what a watcher reported),
:meth:`Completer.complete` decides:

- Completed, an S3 output notification, or Stopped with output → fetch the answers, consolidate
  them and publish a ``reviewed`` envelope; but when the workers agree less than the route's
  ``review.escalate_below_agreement`` (say 2 of 3) and attempts remain, escalate to the route's
  escalation flow instead (the disagreeing answers are not published; the last attempt
  publishes whatever agreement it reached);
- still InProgress or Stopping (the reconciler asked) → wait;
- Failed (Expired included) or Stopped without output → the configured ``on_failure``:
  ``escalate`` starts the event again on the route's escalation flow while attempts remain
  (then falls back to accept-unreviewed), ``accept-unreviewed`` publishes the model's decision
  marked unreviewed, ``dead-letter`` sends the request to the dead-letter topic.

Deduplication is the caller's: only the scheduler calls this, once per ENDED entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from stream_router.envelope import review_dead_letter
from stream_router.review.backend import ReviewBackend, ReviewState, ReviewStatus
from stream_router.review.consolidate import consolidate
from stream_router.review.ledger import Entry
from stream_router.review.outcome import (
    ReviewerData,
    UnreviewedCode,
    reviewed_envelope,
    unreviewed_envelope,
)
from stream_router.settings import ReviewSettings

logger = logging.getLogger(__name__)


class Action(StrEnum):
    PUBLISH = "publish"  #: ``record`` goes to the output topic; the review is closed
    DEAD_LETTER = "dead-letter"  #: ``record`` goes to the dead-letter topic; closed
    ESCALATE = "escalate"  #: start again on ``next_flow``; this attempt is closed
    WAIT = "wait"  #: the review is still open


@dataclass(frozen=True)
class Completion:
    action: Action
    outcome: str  #: for metrics: reviewed, unreviewed, dead-lettered, escalated, open
    record: bytes | None = None
    next_flow: str | None = None


class Completer:
    def __init__(
        self,
        backend: ReviewBackend,
        settings: ReviewSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.clock = clock
        key = settings.pseudonym_key
        self.reviewers = ReviewerData(
            settings.reviewer_data,
            key.get_secret_value().encode() if key else settings.app_id.encode(),
        )

    async def complete(self, entry: Entry) -> Completion:
        end, request = entry.end, entry.request
        if end is None or request is None:
            raise ValueError(f"entry {entry.first_name} is {entry.state}, not ended")
        status = ReviewStatus(end.status) if end.status else None
        now = self.clock()
        if status in (ReviewStatus.IN_PROGRESS, ReviewStatus.STOPPING):
            return Completion(Action.WAIT, "open")
        if (
            status is None
            or status is ReviewStatus.COMPLETED
            or (status is ReviewStatus.STOPPED and end.output_uri)
        ):
            if not end.output_uri:
                return await self._failed(entry, status, "NoOutput", "the review has no output")
            state = ReviewState(
                entry.name, status or ReviewStatus.COMPLETED, entry.flow, output_uri=end.output_uri
            )
            result = await self.backend.fetch_result(state)
            consolidation = consolidate(result, self.settings.answer_path)
            if self._disagree(entry, consolidation.agreement):
                logger.info("review %s: agreement %.2f below the route's least: escalating",
                            entry.name, consolidation.agreement)  # fmt: skip
                next_flow = self.settings.escalation_flows[request.route]
                return Completion(Action.ESCALATE, "escalated", next_flow=next_flow)
            record = reviewed_envelope(
                request,
                consolidation,
                observed_s=now,
                started_s=entry.started_s,
                status=state.status,
                backend=self.settings.backend.name,
                reviewers=self.reviewers,
            )
            return Completion(Action.PUBLISH, "reviewed", record)
        return await self._failed(
            entry,
            status,
            end.failure_code or UnreviewedCode.NO_OUTPUT.value,
            end.failure_reason or f"the review ended {status.value} without output",
        )

    def _disagree(self, entry: Entry, agreement: float) -> bool:
        """Whether a reviewed result escalates for its workers' disagreement."""
        settings, request = self.settings, entry.request
        assert request is not None  # an ended entry keeps its request
        least = settings.escalate_below_agreement.get(request.route)
        return (
            least is not None
            and agreement < least
            and request.route in settings.escalation_flows
            and entry.attempt < settings.max_attempts
        )

    async def _failed(
        self, entry: Entry, status: ReviewStatus | None, code: str, reason: str
    ) -> Completion:
        settings, request = self.settings, entry.request
        assert request is not None  # an ended entry keeps its request
        if settings.on_failure == "escalate":
            next_flow = settings.escalation_flows.get(request.route)
            if next_flow and entry.attempt < settings.max_attempts:
                logger.info("review %s %s (%s): escalating", entry.name, status, code)
                return Completion(Action.ESCALATE, "escalated", next_flow=next_flow)
        if settings.on_failure == "dead-letter":
            logger.warning(
                "review %s (route %s) ended %s, dead-lettered: %s: %s",
                entry.name, request.route, status or "unknown", code, reason,
            )  # fmt: skip
            record = review_dead_letter(request.fields, code, reason, self.clock())
            return Completion(Action.DEAD_LETTER, "dead-lettered", record)
        record = unreviewed_envelope(
            request,
            failure_code=code,
            reason=reason,
            status=status,
            ended_s=self.clock(),
            loop_name=entry.name,
            review_flow=entry.flow,
            backend=settings.backend.name,
        )
        return Completion(Action.PUBLISH, "unreviewed", record)
