"""The ledger: the review role's record of every review request, one typed entry per event.

An entry is keyed by the event's first loop name (``naming.first_name_of``) and lives in the
partition of review-requests its request came from. It begins PENDING (:func:`pending`) and makes
only the moves of :data:`TRANSITIONS`: :meth:`Entry.moved` raises :class:`IllegalMove` for any
other, before anything is written. What the scheduler does next with an entry is its state's
:class:`Step` (``review/scheduler.py``); a STARTED entry has none: a notice ends it (a watcher's
or the reconciler's). The table, drawn (``tests/unit/review/test_transitions.py`` keeps the two
the same)::

    state      step          to         why
    PENDING    start     ──► STARTED    the backend opened the review (or had: a start cut short)
                         ──► HELD       over the route's budget (budget_fallback: hold)
                         ──► CLOSED     not started: refused, rejected, too large or over budget
    HELD       start     ──► STARTED    due, and the budget allows it now: started
                         ──► HELD       due, but the budget is spent still: held again
                         ──► CLOSED     due, but not to be started: its fallback published
    STARTED    -         ──► ENDED      a notice (a watcher, the reconciler) or a describe: ended
    ENDED      complete  ──► STARTED    an end read back as InProgress or Stopping: it waits again
                         ──► ESCALATED  failed, or its reviewers disagreed: the next attempt
                         ──► CLOSED     its outcome (reviewed, unreviewed, dead letter) published
    ESCALATED  start     ──► STARTED    the next attempt started, on the escalation flow
                         ──► HELD       the next attempt is over budget: held
                         ──► CLOSED     the next attempt is not started: its fallback published
    CLOSED     -         (final)

- ``PENDING``: recorded, not started yet (attempt ``attempt`` on ``flow``);
- ``HELD``: the route's budget is spent (``budget_fallback: hold``); tried again at ``due_s``;
- ``STARTED``: open at the backend since ``started_s``; checked at ``deadline_s``;
- ``ENDED``: the backend reported the end (``end``: status, output, failure); the result is
  still to be fetched and published;
- ``ESCALATED``: like PENDING, for attempt 2 and later;
- ``CLOSED``: the outcome (``outcome``) is published. Closed entries are kept
  ``review.ledger_retention_s`` (a late notice or a copy of the request then finds them and
  does nothing), then deleted; they drop the request, the end and the times to stay small
  (:meth:`Entry.moved`). An audited review counted
  by the audit monitor keeps its sample (``audit``) here: the write that closes it counts it.
  In memory a closed entry is only its name and when it closed (:attr:`PartitionLedger.closed`,
  kept compactly by ``review/closed.py``): that is all a redelivery, a late notice and pruning
  ask of it, and a week of closed reviews is what the review role holds most of.

Reading is not moving: :func:`decode` takes an entry in any state (only its format is checked),
and only a move the review role makes is held to the table.

:func:`encode` and :func:`decode` are the one wire format of an entry (JSON, ``"v": 2``; an
entry written before ``audit`` existed decodes without one; one written before ``sent``
existed decodes as sent). Each partition also keeps its
budget counters under the key :data:`BUDGET_KEY`, its audit counts under :data:`AUDIT_KEY`
(``review/audit.py``) and its intake position under :data:`INTAKE_KEY`: the review-requests
offset below which every record is recorded (:func:`encode_position`; the scheduler's rule 1).
None is a loop name: names never contain ``_``.

The ledger topic (``<app_id>-ledger``, compacted, ``review.topic_partitions`` partitions) is
written and read by ``KafkaLedgerLog`` (``review_topics.py``): every write is acknowledged by
the broker before the review role acts on it, and a newly assigned partition is read from its
beginning to its end offset before anything of that partition is handled
(``review/scheduler.py``). faust's table
recovery is not used: on Apache Kafka it was measured to end without reading the changelog after
a SIGKILL (issue 12), and a review whose entry is missing is a review lost.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from stream_router.errors import StreamRouterError
from stream_router.naming import attempt_name
from stream_router.review.audit import AuditSample, AuditTally
from stream_router.review.closed import ClosedNames
from stream_router.review.request import MalformedRequest, ReviewRequest

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
BUDGET_KEY = "_budget"
AUDIT_KEY = "_audit"
INTAKE_KEY = "_intake"


class Step(StrEnum):
    """What the scheduler does next with an entry (:attr:`State.step`)."""

    START = "start"  #: ask for the review: budget, rate limit, the backend (review/starter.py)
    COMPLETE = "complete"  #: fetch the result; publish, escalate or wait (review/completion.py)


class State(StrEnum):
    PENDING = "pending"
    HELD = "held"
    STARTED = "started"
    ENDED = "ended"
    ESCALATED = "escalated"
    CLOSED = "closed"

    @property
    def open(self) -> bool:
        """Whether the backend has the review open (it counts against ``max_in_flight``)."""
        return self in (State.STARTED, State.ENDED)

    @property
    def step(self) -> Step | None:
        """The scheduler's next step for an entry in this state; None: it waits for news from
        outside (a notice ends a STARTED entry) or for its deletion (CLOSED)."""
        return STEPS[self]


STEPS: Mapping[State, Step | None] = MappingProxyType({
    State.PENDING: Step.START,
    State.HELD: Step.START,
    State.STARTED: None,
    State.ENDED: Step.COMPLETE,
    State.ESCALATED: Step.START,
    State.CLOSED: None,
})  # fmt: skip

#: Every move an entry makes, and why (the scheduler makes them; the module docstring draws
#: them). A start (:attr:`Step.START`) moves a PENDING, HELD or ESCALATED entry, a notice a
#: STARTED one, a completion (:attr:`Step.COMPLETE`) an ENDED one.
TRANSITIONS: Mapping[tuple[State, State], str] = MappingProxyType({
    (State.PENDING, State.STARTED): "the backend opened the review (or had: a start cut short)",
    (State.PENDING, State.HELD): "over the route's budget (budget_fallback: hold)",
    (State.PENDING, State.CLOSED): "not started: refused, rejected, too large or over budget",
    (State.HELD, State.STARTED): "due, and the budget allows it now: started",
    (State.HELD, State.HELD): "due, but the budget is spent still: held again",
    (State.HELD, State.CLOSED): "due, but not to be started: its fallback published",
    (State.STARTED, State.ENDED): "a notice (a watcher, the reconciler) or a describe: ended",
    (State.ENDED, State.STARTED): "an end read back as InProgress or Stopping: it waits again",
    (State.ENDED, State.ESCALATED): "failed, or its reviewers disagreed: the next attempt",
    (State.ENDED, State.CLOSED): "its outcome (reviewed, unreviewed, dead letter) published",
    (State.ESCALATED, State.STARTED): "the next attempt started, on the escalation flow",
    (State.ESCALATED, State.HELD): "the next attempt is over budget: held",
    (State.ESCALATED, State.CLOSED): "the next attempt is not started: its fallback published",
})  # fmt: skip


class CorruptLedger(StreamRouterError):
    """A ledger record that does not decode: only the review role writes them, so this is a
    bug or a version skew; the review role stops rather than guess what the entry said."""


class IllegalMove(CorruptLedger):
    """A move :data:`TRANSITIONS` does not have: a bug of the review role, caught before the
    entry is written (the ledger keeps its last legal state). The role stops, as for a record
    that does not decode, rather than record a history the state machine cannot have."""


@dataclass(frozen=True, slots=True)
class End:
    """What a watcher reported about a review's end (from its loop event)."""

    status: str | None  #: a ReviewStatus value; None for an S3 output notice
    output_uri: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One event's review, in one :class:`State` (see the module docstring).

    Slotted, and its ``flow`` interned: a CLOSED entry stays in memory for
    ``review.ledger_retention_s`` (redeliveries are recognised by it), so its size is what a
    flood of requests costs for a week.
    """

    first_name: str
    state: State
    attempt: int
    flow: str
    recorded_s: float  #: when the request was recorded
    since_s: float  #: when the entry entered its state
    request: ReviewRequest | None  #: None once CLOSED
    started_s: float | None = None
    deadline_s: float | None = None
    due_s: float | None = None  #: HELD: when the budget allows a start
    end: End | None = None  #: ENDED
    outcome: str | None = None  #: CLOSED: reviewed, unreviewed or dead-lettered
    audit: AuditSample | None = None  #: CLOSED: the audit sample its close counted
    #: A start of this attempt may have been sent: written, acknowledged, before the first call
    #: to the backend (rule 3 of ``review/scheduler.py``); a new attempt begins unmarked.
    sent: bool = False

    @property
    def name(self) -> str:
        """This attempt's review name."""
        return attempt_name(self.first_name, self.attempt)

    def moved(self, state: State, now_s: float, **changes: Any) -> Entry:
        """The entry in ``state`` from ``now_s``; raises :class:`IllegalMove` for a move
        :data:`TRANSITIONS` does not have. A CLOSED entry drops its request, its end and its
        times: the ledger keeps a week of them, and nothing reads them back (a closed entry
        is its name, closing time, outcome and audit sample)."""
        if (self.state, state) not in TRANSITIONS:
            raise IllegalMove(
                f"review {self.name}: no move from {self.state} to {state} in the ledger's "
                "TRANSITIONS (a bug); the entry stays as written"
            )
        if state is State.CLOSED:
            for dropped in ("request", "started_s", "deadline_s", "due_s", "end"):
                changes.setdefault(dropped, None)
        if changes.get("attempt", self.attempt) != self.attempt:
            changes.setdefault("sent", False)
        return dataclasses.replace(self, state=state, since_s=now_s, **changes)


def pending(request: ReviewRequest, now_s: float) -> Entry:
    """The first entry of a request just taken from review-requests."""
    flow = sys.intern(request.review_flow)
    return Entry(request.loop_name, State.PENDING, 1, flow, now_s, now_s, request)


def encode(entry: Entry) -> bytes:
    """An entry as the ledger topic's record value."""
    data: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "first_name": entry.first_name,
        "state": entry.state.value,
        "attempt": entry.attempt,
        "flow": entry.flow,
        "recorded_s": entry.recorded_s,
        "since_s": entry.since_s,
        "request": None if entry.request is None else orjson.Fragment(entry.request.raw),
        "started_s": entry.started_s,
        "deadline_s": entry.deadline_s,
        "due_s": entry.due_s,
        "end": None if entry.end is None else dataclasses.asdict(entry.end),
        "outcome": entry.outcome,
        "sent": entry.sent,
    }
    if entry.audit is not None:
        data["audit"] = entry.audit.to_json()
    return orjson.dumps(data)


def decode(value: bytes) -> Entry:
    """The entry a ledger record holds; raises :class:`CorruptLedger`."""
    return _entry(_fields(value))


def _fields(value: bytes) -> dict[str, Any]:
    """A ledger record's JSON object, of this format; raises :class:`CorruptLedger`."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise CorruptLedger(f"ledger record does not decode: {exc!r}") from exc
    if not isinstance(data, dict):
        raise CorruptLedger(f"ledger record is {type(data).__name__}, not an object")
    if data.get("v") != FORMAT_VERSION:
        raise CorruptLedger(f"ledger format {data.get('v')!r}, expected {FORMAT_VERSION}")
    return data


def _closed(data: dict[str, Any]) -> tuple[str, float, AuditSample | None] | None:
    """A CLOSED record's name, closing time and audit sample: all a closed entry is in memory
    (the rest of it is not built: reading a week of them is most of a takeover). None for a
    record in any other state; raises :class:`CorruptLedger` for a closed one that lacks them.
    """
    if data.get("state") != State.CLOSED.value:
        return None
    name, since_s, audit = data.get("first_name"), data.get("since_s"), data.get("audit")
    if not isinstance(name, str) or not isinstance(since_s, (float, int)):
        raise CorruptLedger(f"closed ledger entry without its name or time: {str(data)[:200]}")
    try:
        return name, float(since_s), None if audit is None else AuditSample.from_json(audit)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptLedger(f"closed ledger entry {name}: its audit sample: {exc!r}") from exc


def _entry(data: dict[str, Any]) -> Entry:
    try:
        raw_request, raw_end, raw_audit = data["request"], data["end"], data.get("audit")
        request = None if raw_request is None else ReviewRequest.from_fields(raw_request)
        entry = Entry(
            first_name=str(data["first_name"]),
            state=State(data["state"]),
            attempt=int(data["attempt"]),
            flow=sys.intern(str(data["flow"])),
            recorded_s=float(data["recorded_s"]),
            since_s=float(data["since_s"]),
            request=request,
            started_s=_optional_float(data["started_s"]),
            deadline_s=_optional_float(data["deadline_s"]),
            due_s=_optional_float(data["due_s"]),
            end=None if raw_end is None else End(**raw_end),
            outcome=data["outcome"],
            audit=None if raw_audit is None else AuditSample.from_json(raw_audit),
            # Written before the mark existed: its start may have been sent.
            sent=bool(data.get("sent", True)),
        )
    except (AttributeError, KeyError, TypeError, ValueError, MalformedRequest) as exc:
        raise CorruptLedger(f"ledger record does not decode: {exc!r}") from exc
    if entry.request is None and entry.state is not State.CLOSED:
        raise CorruptLedger(f"ledger entry {entry.first_name} is {entry.state} without a request")
    return entry


def _tally(value: bytes) -> AuditTally:
    try:
        return AuditTally.decode(value)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptLedger(f"the ledger's audit counts do not decode: {exc!r}") from exc


def encode_position(next_offset: int) -> bytes:
    """The intake position record: every review-requests record below ``next_offset`` is
    recorded."""
    return orjson.dumps({"v": 1, "next": next_offset})


def _position(value: bytes) -> int:
    try:
        data = orjson.loads(value)
        position = data["next"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorruptLedger(f"the ledger's intake position does not decode: {exc!r}") from exc
    if type(position) is not int or position < 0:
        raise CorruptLedger(f"the ledger's intake position is {position!r}, not an offset")
    return position


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class PartitionLedger:
    """The entries, budget counters and audit counts of one partition, as last read or
    written.

    ``entries`` holds every entry that is not CLOSED, whole; ``closed`` only the name of each
    CLOSED one and when it closed (its ``since_s`` rounded up to the second), compactly
    (``review/closed.py``). A name is in one of the two at most. :meth:`oldest_closed` is the one
    pruning deletes next: names are kept in the order they closed as far as the topic shows it.
    """

    def __init__(self, partition: int, next_offset: int) -> None:
        self.partition = partition
        #: The review-requests offset the next request to record has (requests are contiguous).
        self.next_offset = next_offset
        self.entries: dict[str, Entry] = {}
        self.closed = ClosedNames()
        #: The audit samples of CLOSED entries read (``review/audit.py``'s ``recover`` folds the
        #: ones the tally has not counted yet); only the read keeps them.
        self.samples: dict[str, AuditSample] = {}
        self.budget: dict[str, Any] | None = None  #: a Budget snapshot
        self.audit = AuditTally()
        #: The intake position last written (:data:`INTAKE_KEY`); None: none yet.
        self.position: int | None = None

    def apply(self, key: str, value: bytes | None) -> None:
        """One ledger record, in topic order (a None value deletes)."""
        if key == BUDGET_KEY:
            self.budget = None if value is None else orjson.loads(value)
        elif key == AUDIT_KEY:
            self.audit = AuditTally() if value is None else _tally(value)
        elif key == INTAKE_KEY:
            self.position = None if value is None else _position(value)
        elif key.startswith("_"):  # partition state of a later version (names have no "_")
            logger.info("ledger %d: key %s is not known to this version; skipped",
                        self.partition, key[:40])  # fmt: skip
        elif value is None:
            if self.entries.pop(key, None) is None:
                self.closed.discard(key)
            self.samples.pop(key, None)
        else:
            data = _fields(value)
            closed = _closed(data)
            if closed is None:
                entry = _entry(data)
                self.put(entry)
                audit = entry.audit
            else:
                name, since_s, audit = closed
                self._close(name, since_s)
            if audit is not None:
                self.samples[key] = audit

    def put(self, entry: Entry) -> None:
        """Make ``entry`` its name's current state (a CLOSED one kept as its name and time)."""
        name = entry.first_name
        if entry.state is State.CLOSED:
            self._close(name, entry.since_s)
        else:
            if name not in self.entries:
                self.closed.discard(name)
            self.entries[name] = entry

    def _close(self, name: str, since_s: float) -> None:
        self.entries.pop(name, None)
        self.closed.close(name, float(math.ceil(since_s)))

    def oldest_closed(self) -> tuple[str, float] | None:
        """The CLOSED entry that closed first, and when; None when none is closed."""
        return self.closed.oldest()

    def knows(self, name: str) -> bool:
        """Whether ``name`` has an entry, in any state."""
        return name in self.entries or name in self.closed

    def clear(self) -> None:
        """Forget what was read (a read that failed is read again from the beginning)."""
        self.entries.clear()
        self.closed.clear()
        self.samples.clear()
        self.position = None


class LedgerLog(Protocol):
    """Where the ledger is kept: a compacted topic partitioned like review-requests."""

    def read(self, partition: int) -> AsyncIterator[Sequence[tuple[str, bytes | None]]]:
        """Every (key, value) of ``partition`` from its beginning to its end offset now, in
        order, a batch at a time (a takeover reads millions: a step per record costs)."""
        ...

    async def write(self, partition: int, key: str, value: bytes | None) -> None:
        """Write one record to ``partition``; returns once the broker acknowledged it."""
        ...

    async def write_many(self, partition: int, records: Sequence[tuple[str, bytes | None]]) -> None:
        """Write ``records`` (key, value) to ``partition`` together; returns once the broker
        acknowledged every one. When it raises, any of them may have been written."""
        ...


#: Hands a record (topic, partition, key, value) to the producer; what it returns is awaited
#: for the broker's acknowledgement.
Send = Callable[[str, int, bytes, bytes | None], Awaitable[Awaitable[object]]]
