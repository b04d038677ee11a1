"""The review-backend interface: what the review path needs from a human-review service.

:class:`ReviewBackend` is the one base class of backends. It owns the lifecycle (:meth:`open`,
:meth:`aclose`, ``async with`` written once); a backend implements the four review operations
(start, describe, fetch the result, list the pending) and, where it has them, :meth:`delete` and
its own completion signals (:meth:`signals`; A2I: its SQS watchers; Label Studio: its
webhook). The reconciler serves every backend and is no backend's signal. Backends are built by
name from one table, outside this package (``stream_router/backends.py``): the review core
imports none of them. A2I (``stream_router.aws.a2i``), Label Studio (``stream_router.labelstudio``)
and the in-memory fake (``review/fake.py``) are the implementations. Backend specifics (ARNs, S3
URIs, task ids, error codes) stay behind this interface: the review path sees names, flows,
states, results and the errors below.

Errors (``stream_router.errors``) a backend raises:

- ``ReviewThrottled``: slow down and retry (A2I 429, 5xx after the SDK's own retries);
- ``ReviewCapacityExceeded``: too many reviews open; pause starting until some end (A2I 402);
- ``ReviewRejected``: this request can never succeed (A2I 400); dead-letter it with the reason;
- ``ReviewNameConflict``: the name belongs to another review (A2I 409 whose existing loop is not
  the requested one); never retried blindly.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from stream_router.lifecycle import AsyncResource

if TYPE_CHECKING:
    from stream_router.review.events import EventSource, LoopEvent


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


@dataclass(frozen=True)
class SignalHooks:
    """What a backend's completion signals report to (the review role provides them)."""

    emit: Callable[[LoopEvent], Awaitable[None]]  #: forward a loop event; returns once acked
    #: Describe review ``name`` now and emit its end, if it has ended (the reconciler's check).
    check: Callable[[str, EventSource], Awaitable[None]]
    beat: Callable[[str], None]  #: the signal of this ``kind`` made progress (readiness)


class Signal(ABC):
    """One of a backend's own completion signals: it learns that reviews ended sooner than the
    reconciler's sweep would, and reports through :class:`SignalHooks`. A lost signal costs
    latency, never a review: the reconciler finds every ended review anyway.

    The review role runs each one as a supervised task: :meth:`start` before the backend opens,
    :meth:`run` once it is open, :meth:`stop` at shutdown.
    """

    kind: str  #: its name in logs, supervision and ``watchers.enabled``
    #: It proves progress (``hooks.beat``) at least this often, else it is stalled (not
    #: ready); None: it is not watched for stalls (it waits for posts that may never come).
    beat_s: float | None = None

    async def start(self) -> None:  # noqa: B027 - optional: a default that does nothing
        """Bind or connect (a port taken fails start-up here, before the backend opens)."""

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Report what it learns until ``stop`` is set."""

    async def stop(self) -> None:  # noqa: B027 - optional: a default that does nothing
        """Release what :meth:`start` took."""


class ReviewBackend(AsyncResource, ABC):
    """Start, describe, fetch the result of, and list human reviews.

    Lifecycle (:class:`~stream_router.lifecycle.AsyncResource`): ``async with backend:``, or
    :meth:`open` then :meth:`aclose`. A backend opens once; what it checks against the service
    at :meth:`open` (its projects, its flow definitions) fails start-up with a ``ConfigError``
    naming the setting.

    ``max_input_chars`` is the longest input (characters of its JSON) the backend takes; the
    starter (``review/starter.py``), the one owner of that check, refuses longer content
    without a call (``OVERSIZE``).

    ``start_settle_s`` is how long a start that got no answer may still take effect at the
    backend (a request the backend applies after its sender died or gave up). A backend whose
    starts are idempotent per name (A2I: a name exists once) has 0; one whose are not (Label
    Studio's import) has the time after which a look-up is sure to see such a start. The
    scheduler starts no review that may repeat one cut short sooner than this after (rule 3 of
    ``review/scheduler.py``).
    """

    max_input_chars: int
    start_settle_s: float = 0.0

    # -- the review operations -------------------------------------------------------------------

    @abstractmethod
    async def start(
        self,
        name: str,
        flow: str,
        content: Mapping[str, Any],
        *,
        fresh: bool = False,
        not_before_s: float | None = None,
    ) -> StartOutcome:
        """Start review ``name`` on ``flow`` showing ``content``; idempotent per name (an
        existing review of that name and flow answers ``already_started=True``).

        ``fresh`` is the ledger's word that no start of ``name`` can have been sent before (its
        entry is not marked sent: every start is marked before it is sent, rule 3 of
        ``review/scheduler.py``): a backend whose starts are not idempotent may then skip
        looking the name up. When in doubt the caller passes False.

        ``not_before_s`` (epoch seconds, the backend's clock give or take its skew) is the
        ledger's word that no start of ``name`` was sent before then (the request's recording):
        a backend that must look a name up may look only at what was created since."""

    @abstractmethod
    async def describe(self, name: str) -> ReviewState | None:
        """The review's state, or None when the backend does not know the name."""

    @abstractmethod
    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        """The answers of a review whose state has an ``output_uri``."""

    @abstractmethod
    def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        """Reviews of ``flow`` created since ``since_s`` that are not finished."""

    async def delete(self, name: str) -> None:
        """Delete a finished review's data at the backend (``review.delete_finished``); an
        unknown name is not an error. Default: the backend keeps nothing to delete."""

    def signals(self, hooks: SignalHooks) -> Sequence[Signal]:
        """The backend's own completion signals that ``watchers.enabled`` allows, made once
        by the review role. Default: none (the reconciler alone)."""
        return ()
