"""The review-backend interface: what the review path needs from a human-review service.

A2I (``stream_router.aws.a2i.A2IReviewBackend``) is the first implementation; others (a
self-hosted queue, Label Studio) slot in behind the same four capabilities without touching ingest
or the ledger. Backend specifics (ARNs, S3 URIs, error codes) stay behind this interface: the
review path sees names, flows, states, results and the errors below.

Errors (``stream_router.errors``) a backend raises:

- ``ReviewThrottled``: slow down and retry (A2I 429, 5xx after the SDK's own retries);
- ``ReviewCapacityExceeded``: too many reviews open; pause starting until some end (A2I 402);
- ``ReviewRejected``: this request can never succeed (A2I 400); dead-letter it with the reason;
- ``ReviewNameConflict``: the name belongs to another review (A2I 409 whose existing loop is not
  the requested one); never retried blindly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class ReviewStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        return self in (ReviewStatus.COMPLETED, ReviewStatus.FAILED, ReviewStatus.STOPPED)


@dataclass(frozen=True)
class StartOutcome:
    """A started (or already running) review."""

    name: str
    backend_id: str  #: for A2I, the human loop ARN
    already_started: bool  #: the name existed: a redelivered request, no new (paid) review


@dataclass(frozen=True)
class ReviewState:
    """What the backend says about one review now."""

    name: str
    status: ReviewStatus
    flow: str
    created_at_s: float | None = None
    failure_code: str | None = None  #: for A2I: ValidationError, Expired, InternalError
    failure_reason: str | None = None
    output_uri: str | None = None  #: where the result is, once there is one
    ended_at_s: float | None = None  #: when it ended, if the backend says (A2I does not)


@dataclass(frozen=True)
class WorkerAnswer:
    """One reviewer's answer, as the backend recorded it."""

    worker_id: str
    content: Mapping[str, Any]  #: for A2I: answerContent (keys are the template's element names)
    accepted_at_s: float | None
    submitted_at_s: float | None
    time_spent_s: float | None


@dataclass(frozen=True)
class ReviewResult:
    """The outcome of a finished review: every worker's answer and the input they saw."""

    name: str
    flow: str
    answers: tuple[WorkerAnswer, ...]
    input_content: Mapping[str, Any] = field(default_factory=dict)


class ReviewBackend(Protocol):
    """Start, describe, fetch the result of, and list human reviews.

    ``max_input_chars`` is the longest InputContent (characters of its JSON) the backend takes;
    the starter refuses longer content without a call (``OVERSIZE``).

    ``start_settle_s`` is how long a start that got no answer may still take effect at the
    backend (a request the backend applies after its sender died or gave up). A backend whose
    starts are idempotent per name (A2I: a name exists once) has 0; one whose are not (Label
    Studio's import) has the time after which a look-up is sure to see such a start. The
    scheduler starts no review that may repeat one cut short sooner than this after (rule 3 of
    ``review/scheduler.py``).
    """

    max_input_chars: int
    start_settle_s: float

    async def start(self, name: str, flow: str, content: Mapping[str, Any]) -> StartOutcome:
        """Start review ``name`` on ``flow`` showing ``content``; idempotent per name."""
        ...

    async def describe(self, name: str) -> ReviewState | None:
        """The review's state, or None when the backend does not know the name."""
        ...

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        """The answers of a review whose state has an ``output_uri``."""
        ...

    def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        """Reviews of ``flow`` created since ``since_s`` that are not finished."""
        ...
