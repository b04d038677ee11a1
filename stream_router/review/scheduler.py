"""The review scheduler: the one owner of review state, and of the review path's promise.

**The invariant.** Every review request that reaches review-requests ends in exactly one
outcome (reviewed, unreviewed, or dead-lettered), and no attempt of an event is ever started
twice as a new, paid review, nor at all on a route or flow the configuration does not have. The
scheduler keeps it in four rules, and nothing else in the review path changes review state:

1. *Nothing is passed before it is recorded.* The intake (``review/intake.py``) reads
   review-requests from where each partition's ledger says recording stopped and hands the
   records to :meth:`ReviewScheduler.take_requests`, which writes their ledger entries (PENDING)
   and waits for the broker's acknowledgements; only then does it write the partition's intake
   position (:data:`~stream_router.review.ledger.INTAKE_KEY`) past them
   (:meth:`_save_position`), and a new owner resumes from that position. A record that is not
   a review request is dead-lettered (``malformed_request``) instead. A partition's offsets are
   contiguous: the scheduler keeps the next offset it expects, and a record past it means some
   were not delivered: the range is re-read directly and recorded first. A monitor
   (:meth:`catch_up`) records whatever waits above that offset for too long, so records the
   intake never delivers are recorded too.
2. *Only configured reviews are recorded or started.* Anything that can write review-requests
   can name any route and flow, so a request is a claim, checked against the configuration
   (:class:`~stream_router.review.request.ReviewRoutes`): its route must be a review route
   (configured, not shadow) and its flow that route's ``review_flow``. A request that fails is
   dead-lettered as the record it was (``unknown_route`` or ``unknown_flow``, with its
   review-requests offset; never as an outcome of the event it names), counted, logged at
   WARNING, and never recorded, started or billed. The check is made again before every start,
   for later attempts against the route's ``review.escalation_flows`` entry: an entry recorded
   under an earlier configuration that no longer routes it is dead-lettered the same way, as
   its event's outcome. Metric labels name a route only if the configuration has it.
3. *Every entry is driven from the ledger only.* Each owned partition has a worker that moves its
   entries through their states by the ledger's table (``review/ledger.py``; any other move
   raises), taking each state's step: start (budget, rate limit, the backend call;
   ``review/starter.py``), hold, fetch the result and publish, escalate. A transition is written
   to the ledger, acknowledged, before the next step; an outcome is published before the entry
   is closed. What the step is and when it is due is decided here; whether it may begin then
   (the concurrency of each kind of step, room in flight) is ``review/steps.py``'s plumbing.
   After a crash or a rebalance the new owner reads the partition's ledger
   whole and carries on from the last written state: an attempt whose start was cut short is
   started again under the same name, which the backend answers with "already started" (no
   second review), and an outcome published but not yet closed is published again, identical
   but for its observation time (consumers dedupe by ``event_id``). Such a start is made no
   sooner than the backend's ``start_settle_s`` after the one it may repeat could have been
   sent (after a partition's read; after a failure that is not a sure refusal,
   :meth:`ReviewScheduler._start_not_before`): a backend that may apply a start after its
   sender gave up or died, and whose starts are not idempotent (Label Studio), has applied it
   by then, and answers "already started" instead of opening a second, paid review. The wait
   is kept per entry (``_Partition.settling``) and checked as the start step begins
   (:meth:`ReviewScheduler._settling`), so no queued copy of the entry starts it sooner.
   Every start is marked in the ledger before it is sent: the attempt's entry is written
   ``sent`` (with the budget counters it spent, one acknowledged write) before the backend is
   called (:meth:`ReviewScheduler._mark_sent`). So an entry the ledger holds unmarked was never
   sent by anyone, whichever instance recorded it: its start is ``fresh`` (a backend whose
   look-up of a name is costly skips it; a spent budget refuses it without asking the backend
   whether it exists), and after a partition's read it need not wait to settle.
4. *Upstream failures retry, never drop.* A retriable error (throttling, 5xx, an unreachable
   backend or S3) leaves the entry in its state and schedules it again after the one retry
   policy's delay (``review/retry.py``); only a typed, final answer (rejected, conflict, over
   budget, an unreadable output) gives an outcome other than the review.
5. *No answer stops a partition.* What a backend says about one review (a malformed Label
   Studio task, an annotation of any shape, a label outside the route's classes, an output.json
   that does not parse, a describe the backend rejects) is that review's outcome (its output
   unreadable: dead-lettered ``OutputUnreadable`` with the reason; or ``review.on_failure``),
   never an exception that leaves a step, a worker or the reconciler. Backends read their
   answers through one validating reader (``aws/a2i_output.py``, ``labelstudio/stored.py``)
   and raise only the error tree's types; a listing leaves out what it cannot read and goes on.
   Only what no review can cause (credentials refused, a ledger record that does not decode, a
   bug) stops the process.

Counts are derived from the ledger: reviews in flight (STARTED and ENDED entries, bounded by
``review.max_in_flight``), budget use (each partition's counters live in its ledger), the
backlog and the age of the oldest pending entry (:meth:`stats`), and the audit monitor's counts
of audited reviews and errors: each counted exactly once, by the write that closes its entry
(:meth:`_close`; the invariant and why it holds are in ``review/audit.py``).

``tests/unit/review/test_scheduler.py`` proves the invariant under combined faults (kills at
every step, throttling, errors, forged requests and malformed answers mixed in) on the
in-memory backend (and ``test_transitions.py`` that every move it makes is one of the ledger's
table); ``tests/chaos`` proves it over the wire, and
``tests/integration/test_review_forged_requests_e2e.py`` rule 2 with forged records on a real
broker and the A2I emulator, and ``tests/integration/test_label_studio_untrusted.py`` rule 5
with poisoned tasks in a real Label Studio under the running review role.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from stream_router.envelope import (
    UNDECODABLE,
    Omit,
    dead_letter,
    review_dead_letter,
    undecodable_dead_letter,
)
from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewRejected,
    ReviewThrottled,
    UpstreamError,
)
from stream_router.metrics import ReviewMetrics
from stream_router.models import SourceRef
from stream_router.naming import first_name_of
from stream_router.review.audit import Auditor, AuditTally, AuditUnsure, recover
from stream_router.review.backend import ReviewBackend, ReviewStatus
from stream_router.review.budget import Budget
from stream_router.review.completion import Action, Completer, Completion
from stream_router.review.events import LoopEvent, MalformedLoopEvent
from stream_router.review.ledger import (
    AUDIT_KEY,
    BUDGET_KEY,
    INTAKE_KEY,
    End,
    Entry,
    LedgerLog,
    PartitionLedger,
    State,
    Step,
    encode,
    encode_position,
    pending,
)
from stream_router.review.limiter import RateLimiter
from stream_router.review.outcome import UnreviewedCode, unreviewed_envelope
from stream_router.review.request import (
    MalformedRequest,
    ReviewRequest,
    ReviewRoutes,
    UnconfiguredRequest,
)
from stream_router.review.retry import RetryPolicy
from stream_router.review.shares import BudgetShares, remaining
from stream_router.review.starter import StartDecision, Starter, StartResult
from stream_router.review.steps import Gate, Lanes, step_of
from stream_router.settings import ReviewSettings

logger = logging.getLogger(__name__)


def _refusal(exc: BaseException) -> bool:
    """Whether a start's failure is a sure refusal: a 429 or the backend's capacity (402)."""
    return isinstance(exc, ReviewCapacityExceeded) or (
        isinstance(exc, ReviewThrottled) and not exc.maybe_started
    )


INTAKE_BATCH = 1000  #: review-requests records recorded together, at most (a re-read's batch)


class RequestRecord(Protocol):
    """A review-requests record as handed over (by the intake, or read directly)."""

    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...


class Delivered(NamedTuple):
    """A review-requests record (as a test or a caller builds one)."""

    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  #: milliseconds


class Skipped(NamedTuple):
    """Offsets ``first`` up to ``next`` of a review-requests partition: a record batch the
    Kafka client cannot decode, stepped over (``review_topics.RequestFeed.fetch``)."""

    first: int
    next: int
    reason: str


class _Pending(NamedTuple):
    entry: Entry
    value: bytes  #: the entry encoded


class _Letter(NamedTuple):
    letter: tuple[bytes | None, SourceRef, str, str]  #: value, source, reason class, reason
    counted: Callable[[], None]  #: adds it to its metric, once written


class _Oversize(NamedTuple):
    entry: Entry
    request: ReviewRequest
    result: StartResult


CAPACITY_PAUSE_S = 5.0  #: starts pause this long after the backend's open-reviews quota is met
PRUNE_BATCH = 100  #: closed entries deleted at most per pass of a partition's worker
OUTPUT_UNREADABLE = "OutputUnreadable"  #: dead-letter reason: the review's output cannot be read
MALFORMED_REQUEST = "malformed_request"  #: dead-letter reason: not a review request
MALFORMED_LOOP_EVENT = "malformed_loop_event"  #: dead-letter reason: not a loop event

Send = Callable[[bytes | None, bytes], Awaitable[None]]  #: (key, value); returns once acked


@dataclass(frozen=True)
class Outlets:
    """Where outcomes go; every call returns once the broker acknowledged the record."""

    output: Send
    dead_letter: Send


class RequestSource(Protocol):
    """Review-requests, read directly (gaps and records the intake did not deliver)."""

    topic: str

    def read(
        self, topic: str, partition: int, start: int | None, stop: int | None
    ) -> AsyncIterator[Any]: ...

    async def start_offset(self, partition: int, position: int | None) -> int:
        """The first offset of ``partition`` not known to be recorded, given the ledger's
        intake ``position`` (None: the ledger has none)."""
        ...


@dataclass
class _Partition:
    """One owned partition: its ledger, the worker driving it, and its steps' lanes."""

    ledger: PartitionLedger
    budget: Budget
    lanes: Lanes  #: its steps from due to done
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    intake: asyncio.Lock = field(default_factory=asyncio.Lock)
    audit: asyncio.Lock = field(default_factory=asyncio.Lock)  #: one audited close at a time
    audit_unsure: bool = False  #: a write counting an audit failed: close no more (AuditUnsure)
    failures: dict[str, int] = field(default_factory=dict)
    #: Entries whose start may repeat one cut short: not started before this time (rule 3).
    settling: dict[str, float] = field(default_factory=dict)
    #: Entries a running start step marked sent (:meth:`ReviewScheduler._mark_sent`): the
    #: version the step ended with, though it began with the unmarked one.
    marked: dict[str, Entry] = field(default_factory=dict)
    open: int = 0
    waiting: int = 0  #: entries whose step is start (pending, escalated, held)
    gone: bool = False  #: revoked, or its worker died: nothing more is recorded here
    serial: int = 0  #: which assignment of the partition this is (the intake re-reads on change)
    worker: asyncio.Task[None] | None = None
    steps: set[asyncio.Task[None]] = field(default_factory=set)  #: its steps' tasks


@dataclass(frozen=True)
class Stats:
    """What the ledger says of the owned partitions now (for metrics and readiness)."""

    by_state: dict[State, int]
    oldest_pending_s: float | None  #: since_s of the oldest PENDING or ESCALATED entry
    next_offsets: dict[int, int]  #: per partition, the next review-requests offset expected
    audit: dict[int, AuditTally] = field(default_factory=dict)  #: per partition read
    room: bool = True  #: whether the intake may record more (``has_room``)


class ReviewScheduler:
    """The review path's state machine over the partitions this instance owns (see above).

    ``die(where, exc)`` is called for an exception no disposition covers (the process stops).
    ``routes`` is what the configuration reviews (rule 2); ``auditor`` what the audit monitor
    counts.
    """

    def __init__(
        self,
        review: ReviewSettings,
        *,
        backend: ReviewBackend,
        starter: Starter,
        completer: Completer,
        limiter: RateLimiter,
        log: LedgerLog,
        requests: RequestSource,
        routes: ReviewRoutes,
        shares: BudgetShares,
        outlets: Outlets,
        metrics: ReviewMetrics,
        auditor: Auditor,
        die: Callable[[str, BaseException], None],
        retry: RetryPolicy | None = None,
        capacity_pause_s: float = CAPACITY_PAUSE_S,
        max_entry_bytes: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.review = review
        self.backend = backend
        self.starter = starter
        self.completer = completer
        self.limiter = limiter
        self.log = log
        self.requests = requests
        self.routes = routes
        self.shares = shares
        self.outlets = outlets
        self.metrics = metrics
        self.auditor = auditor
        self.die = die
        self.retry = retry or RetryPolicy()
        self.capacity_pause_s = capacity_pause_s
        self.max_entry_bytes = max_entry_bytes
        self.clock = clock
        self.monotonic = monotonic
        self.partitions: dict[int, _Partition] = {}
        self._serials = itertools.count(1)
        #: Set when a partition's ledger is read or a partition goes: what
        #: :meth:`intake_positions` says changed (the intake waits on it when it reads nothing).
        self.positions_changed = asyncio.Event()
        self.gate = Gate(
            review.max_in_flight,
            in_flight=self.in_flight,
            loading=lambda: bool(self.loading()),
            monotonic=monotonic,
        )

    # -- ownership -----------------------------------------------------------------------------

    def assign(self, partition: int) -> None:
        """Own ``partition``: read its ledger whole, then drive its entries. Until the read is
        done, requests and loop events of the partition wait (:meth:`take_request`)."""
        if partition in self.partitions:
            return
        ledger = PartitionLedger(partition, next_offset=0)
        lanes = Lanes(ledger.entries, self.gate, concurrency=self.review.concurrency,
                      clock=self.clock)  # fmt: skip
        owned = _Partition(ledger, self.shares.budget(partition), lanes,
                           serial=next(self._serials))  # fmt: skip
        self.partitions[partition] = owned
        owned.worker = asyncio.ensure_future(self._run(owned))

    async def revoke(self, partition: int) -> None:
        """Stop driving ``partition`` (its steps are cancelled: each is safe to redo)."""
        owned = self.partitions.pop(partition, None)
        if owned is None:
            return
        owned.gone = True
        owned.loaded.set()  # whoever waits for the ledger learns the partition moved
        self.positions_changed.set()
        tasks = [*owned.steps, *([owned.worker] if owned.worker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._publish_in_flight()
        self._release()

    async def close(self) -> None:
        for partition in list(self.partitions):
            await self.revoke(partition)

    def owned(self) -> list[int]:
        return sorted(self.partitions)

    def loading(self) -> list[int]:
        return sorted(p for p, owned in self.partitions.items() if not owned.loaded.is_set())

    def intake_positions(self) -> dict[int, tuple[int, int]]:
        """Where the intake reads: per partition whose ledger is read, (the assignment's serial,
        the next review-requests offset to record)."""
        return {
            partition: (owned.serial, owned.ledger.next_offset)
            for partition, owned in self.partitions.items()
            if owned.loaded.is_set() and not owned.gone
        }

    async def _ready(self, partition: int) -> _Partition | None:
        """The partition once its ledger is read; None if it is not (or no longer) owned."""
        owned = self.partitions.get(partition)
        if owned is None:
            return None
        await owned.loaded.wait()
        return None if owned.gone else owned

    # -- intake (review-requests, loop-events) ---------------------------------------------------

    async def take_request(
        self,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> bool:
        """Record one review-requests record: :meth:`take_requests` of one."""
        return await self.take_requests(partition, [Delivered(offset, value, key, timestamp_ms)])

    async def take_requests(
        self,
        partition: int,
        records: Sequence[RequestRecord],
        skipped: Skipped | None = None,
    ) -> bool:
        """Record review-requests records of ``partition``, in offset order; returns once every
        one is recorded (rule 1). ``skipped``: the range after them the Kafka client could not
        decode, dead-lettered as one stand-in (``reason_class`` ``undecodable``) once they are
        recorded and before the position passes it: a batch no one can read stops nothing.

        Their ledger entries and dead letters are written together and the broker's
        acknowledgements awaited together (one round trip for the batch, not one per record);
        only then do the entries become the partition's state, so no step of one begins before
        its entry is acknowledged, and only then does the intake position move past them. A
        write that fails leaves the batch unrecorded here and the position before it (the intake
        dies: the records are read again, and what was written of them is a duplicate then).

        Returns False, recording nothing, when the partition is not owned here (it moved in a
        rebalance while the records were in hand): its new owner reads them from the ledger's
        intake position.
        """
        owned = await self._ready(partition)
        if owned is None:
            logger.info("review-requests %d@%s: partition not owned here; left to its owner",
                        partition, records[0].offset if records else "-")  # fmt: skip
            return False
        async with owned.intake:
            ledger = owned.ledger
            expected, batch = ledger.next_offset, []
            for record in records:
                batch += await self._missed(partition, expected, record.offset)
                batch.append(record)
                expected = max(expected, record.offset + 1)
            if skipped is not None:  # what lies before the range is read like any gap
                batch += await self._missed(partition, expected, skipped.first)
            await self._record_all(owned, batch)
            if skipped is not None and skipped.next > expected:
                await self._stand_in(partition, skipped)
                expected = skipped.next
            ledger.next_offset = max(ledger.next_offset, expected)
            await self._save_position(owned)
        return True

    async def _missed(self, partition: int, expected: int, offset: int) -> list[Any]:
        """The records below ``offset`` from ``expected`` on, never delivered: read directly."""
        if offset <= expected:
            return []
        missed = [r async for r in self._read_requests(partition, expected, offset)]
        self.metrics.requests_recovered.inc(len(missed))
        logger.warning(
            "review-requests partition %d: offsets %d-%d were not delivered; re-read %d "
            "record(s)", partition, expected, offset - 1, len(missed),
        )  # fmt: skip
        return missed

    async def _stand_in(self, partition: int, skipped: Skipped) -> None:
        """Dead-letter the stand-in of an undecodable range of review-requests."""
        letter = undecodable_dead_letter(
            self.requests.topic, partition, first_offset=skipped.first,
            next_offset=skipped.next, reason=skipped.reason[:2000], failed_s=self.clock(),
        )  # fmt: skip
        await self.outlets.dead_letter(None, letter)
        self.metrics.requests_malformed.inc()
        logger.error("review-requests %d@%d-%d: %s; dead-lettered as %s", partition,
                     skipped.first, skipped.next - 1, skipped.reason, UNDECODABLE)  # fmt: skip

    async def catch_up(self, partition: int, end: int) -> int:
        """Record the partition's records below ``end`` not recorded yet; returns how many."""
        owned = self.partitions.get(partition)
        if owned is None or not owned.loaded.is_set() or not self.has_room():
            return 0  # no room: the intake is paused on purpose, and so is this
        async with owned.intake:
            start = owned.ledger.next_offset
            if start >= end:
                return 0
            found = await self._record_range(owned, start, end)
            owned.ledger.next_offset = max(owned.ledger.next_offset, end)
            await self._save_position(owned)
        if found:
            logger.warning(
                "review-requests partition %d: %d record(s) at %d-%d waited unrecorded; "
                "recorded", partition, found, start, end - 1,
            )  # fmt: skip
        return found

    async def _save_position(self, owned: _Partition) -> None:
        """Write the partition's intake position past what is recorded (rule 1): called only
        once the records below ``next_offset`` are recorded, their writes acknowledged."""
        ledger = owned.ledger
        if ledger.position is None or ledger.position < ledger.next_offset:
            position = ledger.next_offset
            await self.log.write(ledger.partition, INTAKE_KEY, encode_position(position))
            ledger.position = position

    def _read_requests(self, partition: int, start: int, stop: int) -> AsyncIterator[Any]:
        return self.requests.read(self.requests.topic, partition, start, stop)

    async def _record_range(self, owned: _Partition, start: int, stop: int) -> int:
        """Record what review-requests holds at ``start``..``stop`` - 1, a batch at a time."""
        found, batch = 0, []
        async for record in self._read_requests(owned.ledger.partition, start, stop):
            batch.append(record)
            if len(batch) >= INTAKE_BATCH:
                await self._record_all(owned, batch)
                found, batch = found + len(batch), []
        await self._record_all(owned, batch)
        found += len(batch)
        self.metrics.requests_recovered.inc(found)
        return found

    async def _record_all(self, owned: _Partition, records: Sequence[RequestRecord]) -> None:
        """Record ``records``: every write together, then their entries (see
        :meth:`take_requests`)."""
        if not records:
            return
        writes: list[Awaitable[None]] = []
        entries: list[Entry] = []
        values: list[tuple[str, bytes | None]] = []
        oversize: list[_Oversize] = []
        counts: list[Callable[[], None]] = []
        taken: set[str] = set()
        for record in records:
            judged = self._judge(owned, record, taken)
            if isinstance(judged, _Letter):
                writes.append(self._dead_letter_record(*judged.letter))
                counts.append(judged.counted)
            elif isinstance(judged, _Oversize):
                oversize.append(judged)
            elif judged is not None:
                entries.append(judged.entry)
                values.append((judged.entry.first_name, judged.value))
        if values:
            writes.append(self.log.write_many(owned.ledger.partition, values))
        await asyncio.gather(*writes)
        for count in counts:
            count()
        for entry in entries:
            self._apply(owned, entry)
        for entry, request, result in oversize:
            await self._not_started(owned, entry, request, result)

    def _judge(
        self, owned: _Partition, record: RequestRecord, taken: set[str]
    ) -> _Pending | _Letter | _Oversize | None:
        """What recording ``record`` writes: its PENDING entry, a dead letter (not a request,
        or one the configuration does not review: rule 2), the closed entry of a request too
        large for the ledger, or nothing (a redelivery of a request recorded, or ``taken`` in
        this batch)."""
        source = SourceRef(self.requests.topic, owned.ledger.partition, record.offset,
                           record.key, record.timestamp)  # fmt: skip
        value = record.value
        try:
            request = ReviewRequest.parse(value)
        except MalformedRequest as exc:
            logger.error("review request at %s is malformed (%s); dead-lettered", source, exc)  # noqa: TRY400
            return _Letter((value, source, MALFORMED_REQUEST, str(exc)),
                           self.metrics.requests_malformed.inc)  # fmt: skip
        if owned.ledger.knows(request.loop_name) or request.loop_name in taken:
            self.metrics.requests_duplicate.inc()
            return None  # a redelivery: its entry (in whatever state) is the record of it
        try:
            self.routes.check(request.route, request.review_flow)
        except UnconfiguredRequest as exc:  # rule 2: not recorded, never started
            logger.warning("review request at %s refused, dead-lettered: %s: %s",
                           source, exc.reason_class, exc)  # fmt: skip
            refused = self.metrics.requests_refused.labels(exc.reason_class)
            return _Letter((value, source, exc.reason_class, str(exc)), refused.inc)
        taken.add(request.loop_name)
        entry = pending(request, self.clock())
        encoded = encode(entry)
        if len(encoded) > self.max_entry_bytes:
            # Too large for the ledger (and so for any review input): the model's decision
            # stands, published without the event, and only the closed entry is recorded.
            reason = (f"the request's ledger entry is {len(encoded)} bytes; "
                      f"kafka.max_record_bytes is {self.max_entry_bytes}")  # fmt: skip
            oversize = StartResult(StartDecision.OVERSIZE, entry.name, entry.flow, 1, reason=reason)
            return _Oversize(entry, request, oversize)
        return _Pending(entry, encoded)

    async def _dead_letter_record(
        self, value: bytes | None, source: SourceRef, reason_class: str, reason: str
    ) -> None:
        """Dead-letter a record of review-requests or loop-events as it was (its value left out
        if the letter would exceed the record limit)."""
        now = self.clock()
        letter = dead_letter(value, source, reason_class, reason, now)
        if len(letter) > self.max_entry_bytes:
            letter = dead_letter(value, source, reason_class, reason, now, omit=Omit.VALUE)
        await self.outlets.dead_letter(source.key, letter)

    async def take_loop_record(self, source: SourceRef, value: bytes | None) -> None:
        """One loop-events record: a notice (:meth:`take_loop_event`), or, when it is not a
        loop event (anything that can write the topic can write anything), dead-lettered as it
        was (``malformed_loop_event``, with the reason) and counted; nothing else changes and
        the partition goes on (rule 5)."""
        try:
            event = LoopEvent.parse(value)
        except MalformedLoopEvent as exc:
            logger.error("loop event at %s is malformed (%s); dead-lettered", source, exc)  # noqa: TRY400
            await self._dead_letter_record(value, source, MALFORMED_LOOP_EVENT, str(exc))
            self.metrics.loop_events_malformed.inc()
            return
        await self.take_loop_event(source.partition, event)

    async def take_loop_event(self, partition: int, event: LoopEvent) -> None:
        """A watcher's notice: the open attempt it names has ENDED (others change nothing)."""
        owned = await self._ready(partition)
        if owned is None:
            return  # moved in a rebalance: its new owner reads it from the last commit
        entry = owned.ledger.entries.get(first_name_of(event.name))
        if event.status in (ReviewStatus.IN_PROGRESS, ReviewStatus.STOPPING):
            return
        if entry is None or entry.state is not State.STARTED or entry.name != event.name:
            self.metrics.loop_events_ignored.inc()
            return  # unknown, ended or closed already, or about an earlier attempt
        end = End(
            event.status.value if event.status else None,
            event.output_uri,
            event.failure_code,
            event.failure_reason,
            event.source.value,
        )
        await self._put(owned, entry.moved(State.ENDED, self.clock(), end=end))

    # -- the state of things -------------------------------------------------------------------

    def open_entries(self) -> list[Entry]:
        """STARTED entries of the owned partitions (what the reconciler asks the backend about)."""
        return [
            entry
            for owned in self.partitions.values()
            for entry in owned.ledger.entries.values()
            if entry.state is State.STARTED
        ]

    def waiting(self) -> int:
        """Entries waiting for their start step (pending, escalated, held): each holds its
        request in memory."""
        return sum(owned.waiting for owned in self.partitions.values())

    def has_room(self) -> bool:
        """Whether more requests may be recorded now (``review.intake_max_waiting``)."""
        return self.waiting() < self.review.intake_max_waiting

    def in_flight(self) -> int:
        return sum(owned.open for owned in self.partitions.values())

    def stats(self) -> Stats:
        by_state = dict.fromkeys(State, 0)
        oldest: float | None = None
        for owned in self.partitions.values():
            by_state[State.CLOSED] += len(owned.ledger.closed)
            for entry in owned.ledger.entries.values():
                by_state[entry.state] += 1
                if entry.state in (State.PENDING, State.ESCALATED):
                    oldest = entry.since_s if oldest is None else min(oldest, entry.since_s)
        offsets = {p: owned.ledger.next_offset for p, owned in self.partitions.items()}
        audit = {p: owned.ledger.audit for p, owned in self.partitions.items()
                 if owned.loaded.is_set() and not owned.gone}  # fmt: skip
        return Stats(by_state, oldest, offsets, audit, self.has_room())

    # -- the worker of one partition -----------------------------------------------------------

    async def _run(self, owned: _Partition) -> None:
        try:
            await self._load(owned)
            await self._drive(owned)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            owned.gone = True
            owned.loaded.set()
            self.positions_changed.set()
            self.die(f"review partition {owned.ledger.partition}", exc)

    async def _load(self, owned: _Partition) -> None:
        ledger, failures = owned.ledger, 0
        while True:
            try:
                async for records in self.log.read(ledger.partition):
                    for key, value in records:
                        ledger.apply(key, value)
                start = await self.requests.start_offset(ledger.partition, ledger.position)
                ledger.next_offset = start
                break
            except UpstreamError as exc:  # Kafka's errors arrive as these (review_topics.py)
                failures += 1
                delay = self.retry.delay(failures)
                logger.warning("reading ledger %d failed (%s); again in %.1f s",
                               ledger.partition, exc, delay)  # fmt: skip
                ledger.clear()
                await asyncio.sleep(delay)
        owned.budget = self.shares.budget(ledger.partition, ledger.budget)
        # Closes whose audit counts were not written yet are counted now (review/audit.py).
        tally = recover(ledger.audit, ledger.samples.values())
        if tally != ledger.audit:
            await self._save_audit(owned, tally)
        ledger.samples.clear()
        # Any start an earlier owner had under way was sent before this read began.
        now_s = self.clock()
        settled_s = now_s + self.backend.start_settle_s
        for entry in sorted(ledger.entries.values(), key=lambda e: e.since_s):
            if entry.state.open:
                owned.open += 1
            if entry.state.step is Step.START:
                owned.waiting += 1
            # Only a start marked sent can have been under way (an unmarked one never was).
            settles = entry.state.step is Step.START and entry.sent
            if settles and self.backend.start_settle_s > 0:
                owned.settling[entry.first_name] = settled_s
            # A held entry is checked again now (the limits may have changed since it was
            # held), or once a start an earlier owner may have had under way has settled.
            at_s = settled_s if settles else now_s
            self._schedule(owned, entry, at_s if entry.state.step is Step.START else None)
        owned.loaded.set()
        self.positions_changed.set()
        self._publish_in_flight()
        self._release()  # starts waited for every ledger to be read
        logger.info(
            "review partition %d: ledger read (%d entries, %d open, %d closed); driving it",
            ledger.partition, len(ledger.entries) + len(ledger.closed), owned.open,
            len(ledger.closed),
        )  # fmt: skip

    async def _drive(self, owned: _Partition) -> None:
        """Until the partition is gone: prune, begin the steps its lanes let begin
        (:meth:`~stream_router.review.steps.Lanes.take`), and wait for the next to come due, a
        step to end, or news."""
        while not owned.gone:
            owned.wake.clear()
            await self._prune(owned)
            for entry in owned.lanes.take():
                step = asyncio.ensure_future(self._step(owned, entry))
                owned.steps.add(step)
                step.add_done_callback(functools.partial(self._stepped, owned, entry))
            timeout = None
            due_s = owned.lanes.next_at()
            if due_s is not None:
                timeout = max(0.0, due_s - self.clock())
            oldest = owned.ledger.oldest_closed()
            if oldest is not None:
                prune_at = oldest[1] + self.review.ledger_retention_s - self.clock()
                timeout = max(0.0, prune_at) if timeout is None else min(timeout, prune_at)
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow the cancellation
            # of a revoke that coincides with a wake-up, and the worker would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await owned.wake.wait()

    def _schedule(self, owned: _Partition, entry: Entry | None, at_s: float | None = None) -> None:
        """Queue ``entry``'s next step, if its state has one, at ``at_s`` (default: when due)."""
        if entry is None or entry.state.step is None:
            return  # STARTED waits for a notice; CLOSED waits for pruning
        if at_s is None:
            due_s = entry.due_s if entry.state is State.HELD else None
            at_s = self.clock() if due_s is None else due_s
        owned.lanes.schedule(entry, at_s)
        owned.wake.set()

    def _release(self) -> None:
        """A review left flight, or a start or a ledger read ended: blocked starts may go."""
        for owned in self.partitions.values():
            if owned.lanes.release():
                owned.wake.set()

    async def _step(self, owned: _Partition, entry: Entry) -> None:
        first, step = entry.first_name, step_of(entry)
        if step is Step.START and self._settling(owned, entry):
            return
        try:
            if step is Step.START:
                await self._start(owned, entry)
            else:
                await self._complete(owned, entry)
            owned.failures.pop(first, None)
        except asyncio.CancelledError:
            raise
        except UpstreamError as exc:
            if not exc.retriable:
                self.die(f"review {entry.name}", exc)
                return
            failures = owned.failures[first] = owned.failures.get(first, 0) + 1
            delay = self.retry.delay(failures, exc.retry_after_s)
            not_before = self._start_not_before(exc) if step is Step.START else 0.0
            if not_before > 0:
                owned.settling[first] = self.clock() + not_before
                delay = max(delay, not_before)
            if isinstance(exc, ReviewThrottled):
                self.metrics.start_throttled.inc()
                self.limiter.pause_until(self.monotonic() + delay)
            elif isinstance(exc, ReviewCapacityExceeded):
                self.metrics.capacity_waits.inc()
                self.gate.pause(max(delay, self.capacity_pause_s))
            logger.warning("review %s (%s): %s; again in %.1f s",
                           entry.name, entry.state, exc, delay)  # fmt: skip
            current = owned.ledger.entries.get(first)
            if current is None or current.state.step is None:
                owned.failures.pop(first, None)  # closed, or waits for news: nothing to retry
            self._schedule(owned, current, self.clock() + delay)
            return
        except Exception as exc:
            self.die(f"review {entry.name}", exc)
            return

    def _settling(self, owned: _Partition, entry: Entry) -> bool:
        """Whether ``entry``'s start must wait for one cut short to settle (rule 3): then it
        is queued again for when it has. Any queued copy of the entry comes here too."""
        until = owned.settling.get(entry.first_name)
        if until is None:
            return False
        if self.clock() < until:
            self._schedule(owned, entry, until)
            return True
        del owned.settling[entry.first_name]
        return False

    def _start_not_before(self, exc: UpstreamError) -> float:
        """Seconds before a start that failed with ``exc`` may be tried again (rule 3).

        Only a sure refusal (a 429, the backend's capacity) is retried sooner than the
        backend's ``start_settle_s``: after any other failure the start may yet take effect.
        """
        return 0.0 if _refusal(exc) else self.backend.start_settle_s

    def _stepped(self, owned: _Partition, entry: Entry, step: asyncio.Task[None]) -> None:
        """A step ended (done, failed or cancelled, even before it ran): free its place."""
        owned.steps.discard(step)
        owned.lanes.done(entry)
        if step_of(entry) is Step.START:
            self._release()
        ran = owned.marked.pop(entry.first_name, entry)
        current = owned.ledger.entries.get(entry.first_name)
        if not owned.gone and current is not ran:
            self._schedule(owned, current)  # news arrived while it was busy
        owned.wake.set()

    # -- the steps -----------------------------------------------------------------------------

    async def _start(self, owned: _Partition, entry: Entry) -> None:
        request = entry.request
        assert request is not None  # entries to start keep their request
        review = self.review
        try:
            self.routes.check(request.route, entry.flow, entry.attempt)
        except UnconfiguredRequest as exc:  # rule 2: the configuration changed since
            await self._refused(owned, entry, request, exc)
            return
        result = await self._try_start(owned, entry, request)
        if result.decision is not StartDecision.STARTED:
            await self._save_budget(owned)  # refunded, or nothing spent
        metrics, route = self.metrics, self.routes.label(request.route)
        metrics.start_outcomes.labels(metrics.backend, route, result.decision.value).inc()
        now = self.clock()
        budgets = (p.budget for p in self.partitions.values())
        for window, left in remaining(budgets, request.route, now).items():
            if left is not None:
                self.metrics.budget_remaining.labels(route, window).set(left)
        if result.decision in (StartDecision.STARTED, StartDecision.ALREADY_STARTED):
            started = entry.moved(
                State.STARTED,
                now,
                started_s=now,
                deadline_s=now + review.review_deadline_s,
                due_s=None,
            )
            await self._put(owned, started)
            if result.decision is StartDecision.ALREADY_STARTED:
                # Started before (a start cut short): it may have ended long ago, its notices
                # long gone.
                try:
                    state = await self.backend.describe(entry.name)
                except ReviewRejected as exc:  # this review's answer; the reconciler asks again
                    logger.warning("review %s: describe after an earlier start failed: %s",
                                   entry.name, exc)  # fmt: skip
                    state = None
                if state is not None and state.status.terminal:
                    end = End(state.status.value, state.output_uri, state.failure_code,
                              state.failure_reason, "describe")  # fmt: skip
                    await self._put(owned, started.moved(State.ENDED, self.clock(), end=end))
            return
        if result.decision is StartDecision.OVER_BUDGET and review.budget_fallback == "hold":
            until = owned.budget.available_at_s(request.route, now)
            if until is not None:
                if entry.state is not State.HELD:
                    logger.info("budget of %s spent: holding %s", request.route, entry.name)
                await self._put(owned, entry.moved(State.HELD, now, due_s=until))
                return
        await self._not_started(owned, entry, request, result)

    async def _try_start(
        self, owned: _Partition, entry: Entry, request: ReviewRequest
    ) -> StartResult:
        """One start through the starter: ``fresh`` when the ledger holds the entry unmarked,
        and marked sent before the backend is called (rule 3)."""
        return await self.starter.start(
            request,
            name=entry.name,
            flow=entry.flow,
            attempt=entry.attempt,
            budget=owned.budget,
            spent=lambda: self._mark_sent(owned, entry),
            fresh=not entry.sent,
            not_before_s=entry.recorded_s,
        )

    async def _mark_sent(self, owned: _Partition, entry: Entry) -> None:
        """Rule 3's mark: ``entry`` written ``sent``, with the budget counters its start spent,
        both acknowledged, before the start is sent (the starter awaits this once the budget
        is spent). The step goes on with ``entry``; the ledger holds the marked one."""
        if entry.sent:  # marked before: only the counters
            await self._save_budget(owned)
            return
        snapshot = owned.budget.snapshot()
        marked = dataclasses.replace(entry, sent=True)
        values: list[tuple[str, bytes | None]] = [(entry.first_name, encode(marked))]
        if snapshot != owned.ledger.budget:
            values.append((BUDGET_KEY, orjson.dumps(snapshot)))
        await self.log.write_many(owned.ledger.partition, values)
        owned.ledger.budget = snapshot
        if owned.ledger.entries.get(entry.first_name) is entry:
            owned.ledger.entries[entry.first_name] = marked
            owned.marked[entry.first_name] = marked

    async def _refused(
        self, owned: _Partition, entry: Entry, request: ReviewRequest, exc: UnconfiguredRequest
    ) -> None:
        """An entry the configuration no longer routes (rule 2): its event's dead letter."""
        logger.warning("review %s not started, dead-lettered: %s: %s",
                       entry.name, exc.reason_class, exc)  # fmt: skip
        record = review_dead_letter(request.fields, exc.reason_class, str(exc), self.clock())
        await self.outlets.dead_letter(request.key_bytes(), record)
        metrics, route = self.metrics, self.routes.label(request.route)
        metrics.requests_refused.labels(exc.reason_class).inc()
        metrics.outcomes.labels(metrics.backend, "dead-lettered", "none", route).inc()
        await self._close(owned, entry, "dead-lettered")

    async def _not_started(
        self, owned: _Partition, entry: Entry, request: ReviewRequest, result: StartResult
    ) -> None:
        """The fallback of a request that will not be reviewed: unreviewed or dead-lettered."""
        reason = result.reason or result.decision.value
        code = {
            StartDecision.OVER_BUDGET: UnreviewedCode.BUDGET_EXHAUSTED.value,
            StartDecision.OVERSIZE: UnreviewedCode.INPUT_TOO_LARGE.value,
        }.get(result.decision, result.decision.value)
        accept = result.decision is StartDecision.OVERSIZE or (
            result.decision is StartDecision.OVER_BUDGET
            and self.review.budget_fallback == "accept-unreviewed"
        )
        if result.decision is StartDecision.OVERSIZE:
            # As large as the event is, Kafka would refuse the envelope: the envelope leaves
            # the event out; its ``source`` locates it in the input topic.
            request = request.without_event()
            reason += "; the event is left out of this envelope (see source)"
        if accept:
            record = unreviewed_envelope(
                request, failure_code=code, reason=reason, loop_name=entry.name,
                review_flow=entry.flow, backend=self.review.backend.name,
            )  # fmt: skip
            await self.outlets.output(request.key_bytes(), record)
            outcome = "unreviewed"
        else:
            logger.warning("review %s (route %s, flow %s) not started, dead-lettered: %s: %s",
                           entry.name, request.route, entry.flow, code, reason)  # fmt: skip
            record = review_dead_letter(request.fields, code, reason, self.clock())
            await self.outlets.dead_letter(request.key_bytes(), record)
            outcome = "dead-lettered"
        route = self.routes.label(request.route)
        self.metrics.outcomes.labels(self.metrics.backend, outcome, "none", route).inc()
        await self._close(owned, entry, outcome)

    async def _complete(self, owned: _Partition, entry: Entry) -> None:
        request, end = entry.request, entry.end
        assert request is not None, "an ENDED entry keeps its request"
        assert end is not None, "an ENDED entry has its end"
        try:
            completion = await self.completer.complete(entry)
        except ReviewRejected as exc:  # its output is missing or unreadable: nothing to publish
            logger.warning("review %s (route %s) dead-lettered: %s: %s",
                           entry.name, request.route, OUTPUT_UNREADABLE, exc)  # fmt: skip
            record = review_dead_letter(request.fields, OUTPUT_UNREADABLE, str(exc), self.clock())
            completion = Completion(Action.DEAD_LETTER, "dead-lettered", record)
        now = self.clock()
        if completion.action is Action.WAIT:
            await self._put(owned, entry.moved(State.STARTED, now, end=None))
            return
        if completion.action is Action.PUBLISH and completion.record is not None:
            await self.outlets.output(request.key_bytes(), completion.record)
        elif completion.action is Action.DEAD_LETTER and completion.record is not None:
            await self.outlets.dead_letter(request.key_bytes(), completion.record)
        status = end.status or ReviewStatus.COMPLETED.value
        if status == ReviewStatus.FAILED.value:
            self.metrics.failed.labels(self.metrics.backend, end.failure_code or "unknown").inc()
        self.metrics.outcomes.labels(
            self.metrics.backend, completion.outcome, status, self.routes.label(request.route)
        ).inc()
        if entry.started_s is not None:
            self.metrics.time_in_review.observe(max(0.0, now - entry.started_s))
        if completion.action is Action.ESCALATE and completion.next_flow:
            escalated = entry.moved(
                State.ESCALATED, now, attempt=entry.attempt + 1, flow=completion.next_flow,
                started_s=None, deadline_s=None, end=None,
            )  # fmt: skip
            await self._put(owned, escalated)
            return
        await self._close(owned, entry, completion.outcome, completion.record, now)
        if self.review.delete_finished:
            try:
                await self.backend.delete(entry.name)
            except UpstreamError as exc:
                logger.warning("deleting finished review %s failed: %s", entry.name, exc)

    # -- writing the ledger --------------------------------------------------------------------

    async def _put(self, owned: _Partition, entry: Entry) -> None:
        """Write ``entry`` (acknowledged), then make it the partition's current state."""
        await self.log.write(owned.ledger.partition, entry.first_name, encode(entry))
        self._apply(owned, entry)

    def _apply(self, owned: _Partition, entry: Entry) -> None:
        """Make ``entry``, written and acknowledged, the partition's current state."""
        old = owned.ledger.entries.get(entry.first_name)
        owned.ledger.put(entry)
        was_open = old is not None and old.state.open
        was_waiting = old is not None and old.state.step is Step.START
        if (entry.state.step is Step.START) != was_waiting:
            owned.waiting += -1 if was_waiting else 1
        if entry.state.open != was_open:
            owned.open += 1 if entry.state.open else -1
            self._publish_in_flight()
            if was_open:
                self._release()
        if entry.state.step is not Step.START:
            owned.settling.pop(entry.first_name, None)
        self._schedule(owned, entry)

    async def _close(
        self,
        owned: _Partition,
        entry: Entry,
        outcome: str,
        record: bytes | None = None,
        now: float | None = None,
    ) -> None:
        """Close ``entry``, its outcome (``record`` if published) being acknowledged.

        An audited review (``Auditor.observe``) is counted by this write: the CLOSED record
        carries its sample, numbered next in the partition's tally, then the tally is written;
        one close at a time per partition, none after one of those writes failed (the invariant
        is ``review/audit.py``'s).
        """
        closed = entry.moved(State.CLOSED, self.clock() if now is None else now, outcome=outcome)
        seen = self.auditor.observe(entry.request, outcome, record)
        if seen is None:
            await self._put(owned, closed)
            return
        async with owned.audit:
            if owned.audit_unsure:
                raise AuditUnsure(f"review {entry.name} left to the partition's next owner")
            sample = self.auditor.sample(owned.ledger.audit, seen)
            try:
                await self._put(owned, dataclasses.replace(closed, audit=sample))
                await self._save_audit(owned, owned.ledger.audit.fold(sample))
            except BaseException:
                owned.audit_unsure = True
                raise

    async def _save_audit(self, owned: _Partition, tally: AuditTally) -> None:
        await self.log.write(owned.ledger.partition, AUDIT_KEY, tally.encode())
        owned.ledger.audit = tally

    async def _save_budget(self, owned: _Partition) -> None:
        snapshot = owned.budget.snapshot()
        if snapshot != owned.ledger.budget:
            await self.log.write(owned.ledger.partition, BUDGET_KEY, orjson.dumps(snapshot))
            owned.ledger.budget = snapshot

    async def _prune(self, owned: _Partition) -> None:
        """Delete closed entries older than ``review.ledger_retention_s`` (a batch at a time)."""
        horizon = self.clock() - self.review.ledger_retention_s
        pruned = 0
        while pruned < PRUNE_BATCH:
            oldest = owned.ledger.oldest_closed()
            if oldest is None or oldest[1] > horizon:
                break
            await self.log.write(owned.ledger.partition, oldest[0], None)
            owned.ledger.apply(oldest[0], None)
            pruned += 1
        if pruned:
            self.metrics.ledger_pruned.inc(pruned)

    def _publish_in_flight(self) -> None:
        self.metrics.in_flight.set(self.in_flight())
