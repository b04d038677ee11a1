"""The scheduler's invariant under faults that come together (the in-memory backend and ledger).

Every review request ends in exactly one outcome and no attempt is started twice as a new review,
nor a request naming a route or flow the configuration does not review (forged ones are mixed
in, and must be dead-lettered as records, never started), while, in the same run: the process
is killed at random points (between any two writes, in the middle of a start or a publish), the
backend throttles, refuses for capacity and fails with 5xx, S3 fails, the ledger's broker
refuses writes (the process dies, as it does on Kafka), faust skips offsets, notices arrive
twice, late, and for earlier attempts, and reviews fail and escalate.

Synchronisation is by events: every ledger write and every published record notifies
:class:`World`; the test awaits conditions on it, never the clock.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from stream_router.errors import (
    ReviewCapacityExceeded,
    ReviewRejected,
    ReviewThrottled,
    UpstreamError,
)
from stream_router.metrics import ReviewMetrics
from stream_router.models import SourceRef
from stream_router.review.audit import Auditor, AuditTally, recover
from stream_router.review.backend import ReviewResult, ReviewState, ReviewStatus, StartOutcome
from stream_router.review.budget import BudgetLimits
from stream_router.review.completion import Completer
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import AUDIT_KEY, INTAKE_KEY, State, Step, decode, encode_position
from stream_router.review.limiter import RateLimiter
from stream_router.review.request import ReviewRoutes
from stream_router.review.retry import RetryPolicy
from stream_router.review.scheduler import Outlets, ReviewScheduler, Skipped
from stream_router.review.shares import BudgetShares
from stream_router.review.starter import Starter
from stream_router.settings import ReviewSettings
from stream_router.testing import FakeReviewBackend
from tests.envelope_schema import dead_letter_validator
from tests.unit.review.requests import review_request

PARTITIONS = 2
#: Records on loop-events that are not loop events (anything can write the topic).
NOT_LOOP_EVENTS = (b"[1]", b"{not json", b'{"name": 7, "source": "reconciler"}',
                   b'{"name": "x", "source": "reconciler", "observed_at_s": "soon"}')  # fmt: skip


@dataclass
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = 0


class Crash(Exception):
    """The process died (a write the broker refused); the world restarts it."""


@dataclass
class World:
    """Kafka and the outside world as the scheduler sees them, surviving its restarts."""

    rng: random.Random
    log: dict[int, list[tuple[str, bytes | None]]] = field(default_factory=dict)
    requests: dict[int, list[Record]] = field(default_factory=dict)
    #: The review group's commits (of a version whose faust consumer committed review-requests).
    committed: dict[int, int] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    write_failure_rate: float = 0.0
    #: Writes the broker refuses besides the random ones: (partition, key, value) -> refused.
    refuse: Callable[[int, str, bytes | None], bool] | None = None
    deaths: list[str] = field(default_factory=list)
    every_death: list[str] = field(default_factory=list)  #: all of a run, restarts included
    topic: str = "review-requests"

    # LedgerLog
    async def read(self, partition: int) -> AsyncIterator[list[tuple[str, bytes | None]]]:
        records = list(self.log.get(partition, []))
        for first in range(0, len(records), 7):  # in batches, as the client fetches them
            yield records[first : first + 7]

    async def write(self, partition: int, key: str, value: bytes | None) -> None:
        if self.rng.random() < self.write_failure_rate or (
            self.refuse is not None and self.refuse(partition, key, value)
        ):
            raise KafkaConnectionError("the broker refused the write")
        self.log.setdefault(partition, []).append((key, value))
        await self._notify()

    async def write_many(self, partition: int, records: Sequence[tuple[str, bytes | None]]) -> None:
        """Together: in any order, so a refused write leaves any of the others written."""
        for key, value in self.rng.sample(list(records), len(records)):
            await self.write(partition, key, value)

    # RequestSource
    async def start_offset(self, partition: int, position: int | None) -> int:
        return max(position or 0, self.committed.get(partition, 0))

    async def read_requests(
        self, topic: str, partition: int, start: int | None, stop: int | None
    ) -> AsyncIterator[Record]:
        for record in self.requests.get(partition, []):
            if (start is None or record.offset >= start) and (stop is None or record.offset < stop):
                yield record

    # Outlets
    def outlet(self, topic: str) -> Callable[[bytes | None, bytes], Any]:
        async def send(key: bytes | None, value: bytes) -> None:
            self.outputs.append({"topic": topic, **orjson.loads(value)})
            await self._notify()

        return send

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
        async def wait() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: condition() or bool(self.deaths))

        await asyncio.wait_for(wait(), timeout_s)
        if self.deaths and not condition():
            raise Crash(self.deaths[-1])

    def position(self, partition: int) -> int:
        """The partition's intake position, as its ledger last says (0: none written)."""
        found = [v for k, v in self.log.get(partition, []) if k == INTAKE_KEY and v is not None]
        return int(orjson.loads(found[-1])["next"]) if found else 0

    def entries(self) -> dict[str, Any]:
        current: dict[str, Any] = {}
        for records in self.log.values():
            for key, value in records:
                if key.startswith("_"):
                    continue
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = decode(value)
        return current


class Requests:
    """The world's review-requests, as the scheduler's ``RequestSource``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.topic = world.topic

    def read(self, topic: str, partition: int, start: int | None, stop: int | None) -> Any:
        return self.world.read_requests(topic, partition, start, stop)

    async def start_offset(self, partition: int, position: int | None) -> int:
        return await self.world.start_offset(partition, position)


class FaultyBackend(FakeReviewBackend):
    """The in-memory backend, throttling and failing at random, counting new reviews.

    With ``late_s`` it starts reviews as Label Studio imports tasks: not idempotent (a start
    that finds no review creates one, and a second landing is a second, paid review), and a
    start whose answer is lost (a 5xx, no answer, its caller killed mid-call) still lands, up
    to ``late_s`` later. Its ``start_settle_s`` is ``settle_s`` (default ``late_s``).

    A landing is a fact of time, as on a real backend: every call first lands the starts whose
    time has come, whether or not the event loop has yet run the task that lands them. (Under
    load a loop runs its ready callbacks long past the timers that fell due meanwhile; a
    look-up in one of them would otherwise miss a start that landed 95 ms before.)
    """

    def __init__(
        self, rng: random.Random, *, late_s: float = 0.0, settle_s: float | None = None
    ) -> None:
        super().__init__(
            clock=lambda: 1_700_000_000.0,
            start_settle_s=late_s if settle_s is None else settle_s,
        )
        self.rng = rng
        self.fault_rate = 0.0
        self.late_s = late_s
        self.landing: set[asyncio.Task[None]] = set()  #: starts on their way, callers gone
        self.due: list[tuple[float, str, str, Any]] = []  #: when each of them lands, and what
        self.created: Counter[str] = Counter()
        self.poisoned: set[str] = set()  #: reviews whose answer is malformed (rule 5)
        self.fresh_starts = 0  #: starts made without a look-up (``fresh``)

    async def start(
        self, name: str, flow: str, content: Any, *, fresh: bool = False, **hints: Any
    ) -> Any:
        self.land_due()
        roll = self.rng.random()
        if roll < self.fault_rate / 3:
            raise ReviewThrottled("429", retry_after_s=0.001)
        if roll < 2 * self.fault_rate / 3:
            raise ReviewCapacityExceeded("402")
        if roll < self.fault_rate:
            if self.late_s and name not in self.states:
                self.land_later(name, flow, content)
            raise ReviewThrottled("500 after the SDK's retries", maybe_started=True)
        if self.late_s:
            return await self._import(name, flow, content, fresh=fresh)
        outcome = await super().start(name, flow, content)
        if not outcome.already_started:
            self.created[name] += 1
        if self.rng.random() < self.fault_rate / 2:  # started, but the answer is lost
            raise UpstreamError("connection reset after StartHumanLoop")
        return outcome

    async def _import(self, name: str, flow: str, content: Any, *, fresh: bool) -> StartOutcome:
        """Look the name up (unless the scheduler says the start is ``fresh``), then create it;
        the create lands even if its answer is lost. A ``fresh`` start of a name that exists
        creates a second review: the tests count them."""
        self.start_calls.append(name)
        if fresh:
            self.fresh_starts += 1
        elif name in self.states:
            return StartOutcome(name, f"fake:{name}", already_started=True)
        try:
            await asyncio.sleep(0)  # the request is on its way
        except asyncio.CancelledError:  # the caller was killed: the backend applies it anyway
            self.land_later(name, flow, content)
            raise
        if self.rng.random() < self.fault_rate / 2:
            self.land_later(name, flow, content)
            raise UpstreamError("no answer to the import")
        self.land(name, flow, content)
        return StartOutcome(name, f"fake:{name}", already_started=False)

    def land(self, name: str, flow: str, content: Any) -> None:
        self.created[name] += 1  # each landing is a review someone is paid for
        if name not in self.states:
            self.states[name] = ReviewState(name, ReviewStatus.IN_PROGRESS, flow, self.clock())
            self.contents[name] = content

    def land_later(self, name: str, flow: str, content: Any, after_s: float | None = None) -> None:
        """Land the start within ``late_s`` (or ``after_s``) of now, when it was sent."""
        loop = asyncio.get_running_loop()
        at = loop.time() + (self.rng.uniform(0, self.late_s) if after_s is None else after_s)
        self.due.append((at, name, flow, content))

        async def landing() -> None:
            await asyncio.sleep(max(0.0, at - loop.time()))
            self.land_due()

        task = asyncio.ensure_future(landing())
        self.landing.add(task)
        task.add_done_callback(self.landing.discard)

    def land_due(self) -> None:
        """Land every start on its way whose time has come."""
        now = asyncio.get_running_loop().time()
        come = sorted((at for at in self.due if at[0] <= now), key=lambda landing: landing[0])
        self.due = [landing for landing in self.due if landing[0] > now]
        for _, name, flow, content in come:
            self.land(name, flow, content)

    async def landed(self) -> None:
        """Until every start on its way has landed."""
        await asyncio.gather(*self.landing)

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        if self.rng.random() < self.fault_rate:
            raise UpstreamError("S3 GetObject timed out")
        if state.name in self.poisoned:  # a member stored an answer of the wrong shape
            raise ReviewRejected(f"review {state.name}: annotations[0].result is not a list")
        return await super().fetch_result(state)

    async def describe(self, name: str) -> ReviewState | None:
        self.land_due()
        if name in self.poisoned and self.rng.random() < 0.5:
            raise ReviewRejected(f"review {name}: meta is not an object")
        return await super().describe(name)


def settings(**changes: Any) -> ReviewSettings:
    base: dict[str, Any] = {
        "topic_partitions": PARTITIONS,
        "rate_per_s": 10_000,
        "burst": 1_000,
        "max_in_flight": 6,
        "concurrency": 3,
        "on_failure": "escalate",
        "escalation_flows": {"general": "fd-experts"},
        "escalate_below_agreement": {"general": 0.66},
        "max_attempts": 2,
        "budget_fallback": "accept-unreviewed",
    }
    return ReviewSettings(**{**base, **changes})


FLOWS = {"general": "fd-general"}  #: the configured review routes and their flows


def scheduler(
    world: World,
    backend: FaultyBackend,
    review: ReviewSettings,
    flows: dict[str, str] | None = None,
    routes: ReviewRoutes | None = None,
) -> ReviewScheduler:
    """A scheduler of ``review``; ``routes`` (default: ``flows`` and the escalation flows of
    ``review``) is what the configuration reviews."""
    limits = {route: BudgetLimits(b.per_hour, b.per_day) for route, b in review.budgets.items()}
    limiter = RateLimiter(review.rate_per_s, review.burst)
    return ReviewScheduler(
        review,
        backend=backend,
        starter=Starter(backend, limiter, projection=[]),
        completer=Completer(backend, review),
        limiter=limiter,
        log=world,
        requests=Requests(world),
        routes=routes or ReviewRoutes(flows or FLOWS, review.escalation_flows),
        shares=BudgetShares(limits, BudgetLimits(), PARTITIONS),
        outlets=Outlets(output=world.outlet("output"), dead_letter=world.outlet("dead-letter")),
        metrics=ReviewMetrics(CollectorRegistry()),
        auditor=Auditor(review.audit, "1"),
        die=lambda where, exc: (
            world.deaths.append(f"{where}: {exc!r}"),
            world.every_death.append(f"{where}: {exc!r}"),
        ),
        retry=RetryPolicy(base_s=0.001, max_s=0.005),
        capacity_pause_s=0.005,
    )


def outcomes_by_event(world: World) -> dict[str, list[tuple[str, Any]]]:
    found: dict[str, list[tuple[str, Any]]] = {}
    for record in world.outputs:
        if record["topic"] == "output":
            event_id, review = record["event_id"], record["review"]
            verdict = (record["decision"], review.get("label") or review.get("failure_code"))
        elif "review_request" not in record:
            continue  # a record dead-lettered as it was (malformed, refused): no event's outcome
        else:
            event_id = record["review_request"]["event_id"]
            verdict = ("dead-lettered", record["reason_class"])
        found.setdefault(event_id, []).append(verdict)
    return found


class Run:
    """One randomised run: requests arrive, loops end, faults strike, the process restarts.

    ``late_s``: the backend's starts are not idempotent and may land late (``FaultyBackend``).
    """

    def __init__(self, seed: int, events: int = 24, *, late_s: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.world = World(random.Random(seed + 1))
        self.backend = FaultyBackend(random.Random(seed + 2), late_s=late_s)
        self.review = settings()
        self.events = events
        self.partition_of: dict[str, int] = {}
        self.fate: dict[str, str] = {}  # event id -> complete, fail, disagree, poison
        self.forged: set[str] = set()  # loop names of forged requests
        self.loop_offsets: dict[int, int] = {}  # the last loop-events offset per partition
        self.not_loop_events: set[tuple[int, int]] = set()  # where they were written
        self.kills = 0
        self.feed: dict[int, tuple[int, int]] = {}  # partition -> (serial, next offset to hand)
        self.scheduler = scheduler(self.world, self.backend, self.review)
        for partition in range(PARTITIONS):
            self.scheduler.assign(partition)

    def write_requests(self) -> None:
        for index in range(self.events):
            event_id = f"evt-{index}"
            partition = index % PARTITIONS
            request = review_request(event_id)
            records = self.world.requests.setdefault(partition, [])
            records.append(Record(len(records), orjson.dumps(dict(request.fields))))
            if index % 13 == 4:  # ingest wrote it twice (at-least-once): one review, not two
                records.append(Record(len(records), orjson.dumps(dict(request.fields))))
            if index % 11 == 5:  # not a review request at all
                records.append(Record(len(records), b"{not json"))
            if index % 7 == 3:  # forged: a route or a flow the configuration does not have
                forged = {"route": "intruder"} if index % 2 else {"flow": "fd-forged"}
                fake = review_request(f"forged-{index}", **forged)
                records.append(Record(len(records), orjson.dumps(dict(fake.fields))))
                self.forged.add(fake.loop_name)
            self.partition_of[request.loop_name] = partition
            self.fate[event_id] = self.rng.choice(
                ["complete", "complete", "fail", "disagree", "poison"]
            )
            if self.fate[event_id] == "poison":
                self.backend.poisoned.add(request.loop_name)

    def end(self, name: str, event_id: str) -> ReviewState:
        """End review ``name`` as its event's fate says: a first attempt fails, or its three
        workers disagree (1 of 3: escalated for disagreement); every other attempt completes."""
        fate = self.fate[event_id] if not name.endswith("-a2") else "complete"
        if fate == "fail":
            return self.backend.fail(name)
        if fate == "disagree":
            return self.backend.complete(name, "dog", "cat", "bird")
        return self.backend.complete(name, "dog")

    async def restart(self) -> None:
        self.kills += 1
        await self.scheduler.close()
        self.world.deaths.clear()
        self.feed.clear()  # a new process: its intake has read nothing yet
        self.scheduler = scheduler(self.world, self.backend, self.review)
        for partition in range(PARTITIONS):
            self.scheduler.assign(partition)

    async def deliver(self, partition: int) -> None:
        """The intake hands the scheduler the partition's next records, a batch of up to six
        (skipping some): from where the ledger says recording stopped once a partition's ledger
        is read (``intake_positions``: after a restart, its serial is new), else from where
        the last batch handed over ended."""
        records = self.world.requests.get(partition, [])
        where = self.scheduler.intake_positions().get(partition)
        if where is None:  # its ledger is being read
            await asyncio.sleep(0)
            return
        serial, next_offset = where
        if self.feed.get(partition, (0, 0))[0] != serial:
            self.feed[partition] = (serial, next_offset)
        position = self.feed[partition][1]
        if position >= len(records):
            return
        first = min(len(records) - 1, position + (self.rng.random() < 0.2))  # a skipped offset
        last = min(len(records), first + self.rng.randint(1, 6))
        handed = [
            records[first],
            *(r for r in records[first + 1 : last] if self.rng.random() > 0.1),
        ]
        self.feed[partition] = (serial, last)
        take = asyncio.ensure_future(self.scheduler.take_requests(partition, handed))
        if self.rng.random() < 0.1:  # killed while the agent has it in hand
            await asyncio.sleep(0)
            take.cancel()
            await asyncio.gather(take, return_exceptions=True)
            await self.restart()
            return
        try:
            await take
        except KafkaConnectionError:
            await self.restart()  # the intake died on the refused write

    async def end_some_loops(self) -> None:
        """The backend ends open reviews; watchers report them, twice, late, or never."""
        for name, state in list(self.backend.states.items()):
            if state.status.terminal or self.rng.random() < 0.5:
                continue
            event_id = str(self.backend.contents[name]["_identity"]["event_id"])
            await self.notice(name, self.end(name, event_id))

    async def notice(self, name: str, state: ReviewState) -> None:
        first = name.removesuffix("-a2")
        partition = self.partition_of[first]
        event = LoopEvent(name, EventSource.EVENTBRIDGE, state.status, state.output_uri,
                          state.flow, state.failure_code, state.failure_reason)  # fmt: skip
        for _ in range(self.rng.choice([0, 1, 1, 2])):  # lost, once, or twice
            await self.take_loop_event(partition, event)
        if self.rng.random() < 0.2:  # and something that is not a loop event at all
            await self.take_loop_record(partition, self.rng.choice(NOT_LOOP_EVENTS))

    async def take_loop_event(self, partition: int, event: LoopEvent) -> None:
        """The loop-events agent, handed the event's record."""
        await self.take_loop_record(partition, event.to_json())

    async def take_loop_record(self, partition: int, value: bytes) -> None:
        """The loop-events agent; a refused write kills it, and the record comes again."""
        offset = self.loop_offsets[partition] = self.loop_offsets.get(partition, -1) + 1
        source = SourceRef("loop-events", partition, offset, None, None)
        if value in NOT_LOOP_EVENTS:
            self.not_loop_events.add((partition, offset))
        while True:
            try:
                await self.scheduler.take_loop_record(source, value)
                return
            except KafkaConnectionError:
                await self.restart()

    async def step(self) -> None:
        action = self.rng.random()
        if action < 0.45:
            await self.deliver(self.rng.randrange(PARTITIONS))
        elif action < 0.7:
            await self.end_some_loops()
        elif action < 0.8:
            await self.restart()
        else:
            await asyncio.sleep(0)  # the workers run meanwhile
        if self.world.deaths:
            await self.restart()
        for owned in self.scheduler.partitions.values():  # what bounds the intake is exact
            if owned.loaded.is_set() and not owned.gone:
                entries = owned.ledger.entries.values()
                assert owned.waiting == sum(e.state.step is Step.START for e in entries)

    async def finish(self) -> None:
        """Faults stop; everything is delivered, every open review ends and is reported."""
        self.backend.fault_rate = 0.0
        self.world.write_failure_rate = 0.0
        for partition in range(PARTITIONS):
            for _ in range(10_000):
                if self.world.position(partition) >= len(self.world.requests[partition]):
                    break
                await self.deliver(partition)
            else:
                raise AssertionError(
                    f"partition {partition}'s intake position never passed "
                    f"its last request: {self.world.position(partition)}"
                )
        wanted = set(self.fate)
        for _ in range(100):
            await self.settle()
            if set(outcomes_by_event(self.world)) >= wanted and self.all_closed():
                return
            # A reconciler's job: report every ended or open review the ledger has STARTED.
            for entry in self.scheduler.open_entries():
                state = self.backend.states[entry.name]
                if not state.status.terminal:
                    event_id = entry.request.event_id if entry.request else ""
                    state = self.end(entry.name, event_id)
                partition = self.partition_of[entry.first_name]
                await self.take_loop_event(partition, LoopEvent(
                    entry.name, EventSource.RECONCILER, state.status, state.output_uri,
                    state.flow, state.failure_code, state.failure_reason,
                ))  # fmt: skip
        states = Counter(e.state for e in self.world.entries().values())
        missing = wanted - set(outcomes_by_event(self.world))
        raise AssertionError(f"did not finish: ledger {states}, no outcome for {sorted(missing)}")

    def all_closed(self) -> bool:
        entries = self.world.entries()
        return bool(entries) and all(e.state is State.CLOSED for e in entries.values())

    async def settle(self) -> None:
        """Wait until no entry can move without news from outside (a notice)."""

        def quiet() -> bool:
            entries = self.world.entries()
            states = Counter(e.state for e in entries.values())
            # Starts wait while the reviews in flight fill review.max_in_flight.
            full = states[State.STARTED] + states[State.ENDED] >= self.review.max_in_flight
            startable = states[State.PENDING] + states[State.ESCALATED]
            return not states[State.ENDED] and (full or not startable) and not self.world.deaths

        try:
            await self.world.until(quiet, "entries settled")
        except Crash:
            await self.restart()
            await self.settle()

    def verify(self) -> None:
        outcomes = outcomes_by_event(self.world)
        assert set(outcomes) == set(self.fate), "an event has no outcome"
        for event_id, verdicts in outcomes.items():
            assert len(set(verdicts)) == 1, f"{event_id}: conflicting outcomes {verdicts}"
            # A failed first review escalates, and so does one whose workers disagree; the
            # second one completes (the disagreeing answers are never published); a malformed
            # answer is its review's outcome (rule 5), never a stopped partition.
            expected = (
                ("dead-lettered", "OutputUnreadable")
                if self.fate[event_id] == "poison"
                else ("reviewed", "dog")
            )
            assert verdicts[0] == expected, (event_id, verdicts)
        assert max(self.backend.created.values()) == 1, "an attempt was started twice"
        for name in self.backend.created:
            first = name.removesuffix("-a2")
            event_id = str(self.backend.contents[name]["_identity"]["event_id"])
            if name.endswith("-a2"):
                assert self.fate[event_id] in ("fail", "disagree"), (
                    f"{name}: escalated without a failure or a disagreement"
                )
                assert first in self.backend.created
            elif self.fate[event_id] == "disagree":
                assert f"{name}-a2" in self.backend.created, f"{name}: disagreement published"
        malformed = [r for r in self.world.outputs if r.get("reason_class") == "malformed_request"]
        assert len({(r["source"]["partition"], r["source"]["offset"]) for r in malformed}) == len(
            [rec for records in self.world.requests.values() for rec in records
             if rec.value == b"{not json"]
        )  # fmt: skip
        refused = [r for r in self.world.outputs
                   if r.get("reason_class") in ("unknown_route", "unknown_flow")]  # fmt: skip
        assert {orjson.loads(r["value"])["loop_name"] for r in refused} == self.forged
        assert all("review_request" not in r for r in refused)  # never an event's outcome
        assert not self.forged & {name.removesuffix("-a2") for name in self.backend.start_calls}
        assert not self.forged & set(self.world.entries()), "a forged request was recorded"
        garbage = [r for r in self.world.outputs if r.get("reason_class") == "malformed_loop_event"]
        assert {(r["source"]["partition"], r["source"]["offset"]) for r in garbage} == (
            self.not_loop_events
        )  # each dead-lettered (a redelivery may do it twice), as the record it was
        assert all("review_request" not in r for r in garbage)
        # Rule 5: one review's unreadable answer never takes the process down.
        assert not [d for d in self.world.every_death if "ReviewRejected" in d], (
            self.world.every_death
        )


async def faulty_run(seed: int, *, late_s: float = 0.0) -> Run:
    """A run under combined faults (backend faults, ledger write failures, kills), finished
    and verified: every request ended once. ``late_s``: see :class:`Run`."""
    run = Run(seed, late_s=late_s)
    run.write_requests()
    run.backend.fault_rate = 0.3
    run.world.write_failure_rate = 0.05
    try:
        for _ in range(120):
            await run.step()
        await run.finish()
    finally:
        await run.scheduler.close()
    await run.backend.landed()
    run.verify()
    return run


@pytest.mark.parametrize("seed", range(12))
async def test_every_request_ends_once_under_combined_faults(seed: int) -> None:
    run = await faulty_run(seed)
    assert run.kills > 0


@pytest.mark.parametrize("seed", range(24))
async def test_no_review_is_paid_twice_when_starts_land_late(seed: int) -> None:
    """The same faults on a backend whose starts are not idempotent and land up to 20 ms after
    their answer was lost or their caller killed (Label Studio's imports). Starts the ledger
    shows fresh skip the backend's look-up, so a wrong ``fresh`` would be a second review."""
    run = await faulty_run(seed, late_s=0.02)
    assert run.kills > 0
    assert run.backend.fresh_starts > 0


async def _one_start_cut_short(settle_s: float, *, killed: bool) -> FaultyBackend:
    """One review whose first start lands 50 ms after its answer was lost (``killed``: after
    the process was killed mid-call), on a backend of ``start_settle_s`` ``settle_s``."""
    run = Run(0, events=0)
    run.backend = FaultyBackend(random.Random(0), late_s=0.05, settle_s=settle_s)
    await run.restart()
    request = review_request("evt-0")
    run.world.requests[0] = [Record(0, orjson.dumps(dict(request.fields)))]
    run.partition_of[request.loop_name] = 0
    cut_short = asyncio.Event()
    backend, start = run.backend, run.backend.start

    async def first_start(name: str, flow: str, content: Any, **hints: Any) -> Any:
        backend.start = start  # type: ignore[method-assign]  # later starts are plain
        backend.start_calls.append(name)
        backend.land_later(name, flow, content, after_s=0.05)
        cut_short.set()
        if killed:
            await asyncio.Event().wait()  # the answer never comes: the process is killed
        raise UpstreamError("no answer to the import")

    backend.start = first_start  # type: ignore[method-assign]
    await run.scheduler.take_request(0, 0, run.world.requests[0][0].value)
    await cut_short.wait()
    if killed:
        await run.restart()  # the new owner finds the entry PENDING
    await run.world.until(
        lambda: run.world.entries()[request.loop_name].state is State.STARTED, "started"
    )
    await backend.landed()
    await run.scheduler.close()
    assert len(backend.start_calls) == 2
    return backend


@pytest.mark.parametrize("killed", [False, True], ids=["answer-lost", "killed-mid-call"])
async def test_a_start_that_may_repeat_one_cut_short_waits_for_it_to_land(killed: bool) -> None:
    """Rule 3: the start is tried again only once the first could have landed (the backend's
    start_settle_s), and finds it; without the wait, the second start opens a second review."""
    waited = await _one_start_cut_short(0.15, killed=killed)
    assert list(waited.created.values()) == [1]
    hasty = await _one_start_cut_short(0.0, killed=killed)
    assert list(hasty.created.values()) == [2]


async def test_a_skipped_offset_is_read_and_recorded_with_the_record_in_hand() -> None:
    run = Run(0, events=6)
    run.write_requests()
    records = run.world.requests[0]
    await run.scheduler.take_request(0, 2, records[2].value)  # faust dropped offsets 0 and 1
    firsts = [review_request(f"evt-{i}").loop_name for i in (0, 2, 4)]
    written = [key for key, _ in run.world.log[0] if not key.startswith("_")]
    assert sorted(written) == sorted(firsts)  # the gap with the record in hand, once each
    await run.scheduler.close()


async def test_the_intake_position_moves_only_past_what_is_recorded() -> None:
    """Rule 1: the position is written after the entries it passes are acknowledged, never
    when their write fails; a new owner resumes from it."""
    run = Run(0, events=8)
    run.write_requests()
    records = run.world.requests[0]
    refused = True
    run.world.refuse = lambda partition, key, value: refused and not key.startswith("_")
    with pytest.raises(KafkaConnectionError):
        await run.scheduler.take_requests(0, records[:3])
    assert run.world.position(0) == 0  # nothing recorded: the position stays
    refused = False
    assert await run.scheduler.take_requests(0, records[:3])
    log = run.world.log[0]
    keys = [key for key, _ in log]
    assert keys[-1] == INTAKE_KEY
    assert run.world.position(0) == 3
    assert all(not key.startswith("_") for key in keys[:-1])  # entries first, then the position
    await run.restart()
    await run.scheduler.partitions[0].loaded.wait()
    assert run.scheduler.intake_positions()[0][1] == 3
    await run.scheduler.close()


@pytest.mark.parametrize("gap", [False, True])
async def test_an_undecodable_range_is_dead_lettered_once_and_passed(gap: bool) -> None:
    """A batch the client cannot decode costs one stand-in dead letter, after the records before
    it are recorded (those before it never delivered are read first) and before the position
    passes it; the partition goes on."""
    run = Run(0, events=8)
    run.write_requests()
    records = run.world.requests[0]
    handed = [] if gap else records[:2]
    bad = Skipped(2, 4, "records of review-requests[0] at offsets 2 to 3 cannot be decoded")
    assert await run.scheduler.take_requests(0, handed, bad)
    (letter,) = [o for o in run.world.outputs if o["topic"] == "dead-letter"]
    dead_letter_validator().validate({k: v for k, v in letter.items() if k != "topic"})
    assert letter["reason_class"] == "undecodable"
    assert (letter["source"]["offset"], letter["last_offset"]) == (2, 3)
    recorded = {key for key, _ in run.world.log[0] if not key.startswith("_")}
    assert recorded == {orjson.loads(r.value or b"")["loop_name"] for r in records[:2]}
    assert run.world.position(0) == 4
    assert await run.scheduler.take_requests(0, records[4:])  # and it goes on from there
    assert run.world.position(0) == len(records)
    await run.scheduler.close()


async def test_a_request_nested_too_deep_to_record_is_dead_lettered_and_the_partition_goes_on() -> (
    None
):
    """Anything can write review-requests: a request nested deeper than its ledger entry can
    encode once stopped the intake on every restart. It is a malformed request now."""
    run = Run(0, events=4)
    run.write_requests()
    records = run.world.requests[0]
    fields = dict(review_request("deep").fields)
    fields["event"] = {"x": 1}
    nest = b'{"a":' * 300 + b"1" + b"}" * 300
    value = orjson.dumps(fields).replace(b'"event":{"x":1}', b'"event":{"x":' + nest + b"}")
    records.insert(1, Record(1, value))
    for offset, record in enumerate(records):
        record.offset = offset
    assert await run.scheduler.take_requests(0, records)
    (letter,) = [o for o in run.world.outputs if o["topic"] == "dead-letter"]
    assert letter["reason_class"] == "malformed_request"
    assert "nests deeper" in letter["reason"]
    assert run.world.position(0) == len(records)
    recorded = {key for key, _ in run.world.log[0] if not key.startswith("_")}
    names = {orjson.loads(r.value or b"")["loop_name"] for r in records}
    assert recorded == names - {review_request("deep").loop_name}
    await run.scheduler.close()


def held(world: World) -> list[str]:
    return [name for name, e in world.entries().items() if e.state is State.HELD]


async def test_no_more_is_recorded_while_intake_max_waiting_requests_wait() -> None:
    """``has_room`` says no once ``review.intake_max_waiting`` entries wait to start, and the
    monitor's catch-up then records nothing either (what waits stays in Kafka)."""
    run = Run(0, events=8)
    run.review = settings(intake_max_waiting=3, budgets={"general": {"per_day": 1}},
                          budget_fallback="hold")  # fmt: skip
    await run.restart()
    run.write_requests()
    await run.scheduler.partitions[0].loaded.wait()
    records = run.world.requests[0]  # 4 requests and a duplicate: one starts, three are held
    assert await run.scheduler.take_requests(0, records[:4])
    await run.world.until(lambda: len(held(run.world)) == 2, "two held")
    assert run.scheduler.waiting() == 2
    assert run.scheduler.has_room()
    assert await run.scheduler.take_requests(0, records[4:])
    await run.world.until(lambda: len(held(run.world)) == 3, "three held")
    assert run.scheduler.waiting() == 3  # held till the day turns, holding their requests
    assert not run.scheduler.has_room()
    run.world.requests[0].append(records[0])  # one more waits in Kafka
    assert await run.scheduler.catch_up(0, len(run.world.requests[0])) == 0
    await run.scheduler.close()


@pytest.mark.parametrize(("position", "committed", "resumed"), [(None, 4, 4), (3, 1, 3), (2, 5, 5)])
async def test_a_ledger_without_a_position_resumes_from_the_groups_commit(
    position: int | None, committed: int, resumed: int
) -> None:
    """A ledger written before intake positions existed resumes where faust committed; the
    further of the two wins (a version that committed ran after the position was written)."""
    run = Run(0, events=4)
    run.write_requests()
    await run.scheduler.close()
    if position is not None:
        run.world.log.setdefault(0, []).append((INTAKE_KEY, encode_position(position)))
    run.world.committed[0] = committed
    await run.restart()
    await run.scheduler.partitions[0].loaded.wait()
    assert run.scheduler.intake_positions()[0][1] == resumed
    await run.scheduler.close()


async def test_closed_entries_are_kept_as_names_recognised_and_pruned_in_order() -> None:
    """A CLOSED entry is held as its name and closing time only; a copy of its request is a
    redelivery, before and after a restart; after ``review.ledger_retention_s`` the entries are
    deleted (tombstones, in the order they closed) and forgotten."""
    now = [1_000.0]
    run = Run(0, events=6)
    run.review = settings(budgets={"general": {"per_day": 0}}, ledger_retention_s=100)
    await run.restart()
    run.scheduler.clock = lambda: now[0]
    run.write_requests()
    records = run.world.requests[0]
    assert await run.scheduler.take_requests(0, records)
    firsts = {orjson.loads(r.value or b"")["loop_name"] for r in records if r.value != b"{not json"}
    firsts -= run.forged
    await run.world.until(lambda: len(outcomes_by_event(run.world)) == len(firsts), "closed")
    ledger = run.scheduler.partitions[0].ledger
    assert ledger.entries == {}
    assert dict(ledger.closed.items()) == dict.fromkeys(firsts, 1_000.0)
    assert run.scheduler.stats().by_state[State.CLOSED] == len(firsts)
    closed_order = [key for key, value in run.world.log[0] if not key.startswith("_")
                    and value is not None and decode(value).state is State.CLOSED]  # fmt: skip

    def copies() -> list[Record]:  # ingest wrote the requests again (at-least-once)
        copied = [Record(len(records) + i, r.value) for i, r in enumerate(records[:4])]
        records.extend(copied)
        return copied

    assert await run.scheduler.take_requests(0, copies())
    assert run.scheduler.metrics.requests_duplicate._value.get() == 1 + 4
    await run.restart()
    run.scheduler.clock = lambda: now[0]
    owned = run.scheduler.partitions[0]
    await owned.loaded.wait()
    assert set(owned.ledger.closed) == firsts
    assert list(owned.ledger.closed) == closed_order
    assert owned.ledger.oldest_closed() == (closed_order[0], 1_000.0)
    assert await run.scheduler.take_requests(0, copies())
    assert run.scheduler.metrics.requests_duplicate._value.get() == 4
    assert len(outcomes_by_event(run.world)) == len(firsts)
    assert all(len(outcomes) == 1 for outcomes in outcomes_by_event(run.world).values())
    now[0] += 100.0
    owned.wake.set()
    await run.world.until(lambda: len(owned.ledger.closed) == 0, "pruned")
    deleted = [key for key, value in run.world.log[0] if value is None]
    assert deleted == closed_order
    assert len(owned.ledger.closed) == 0
    await run.scheduler.close()


async def test_a_restart_reads_the_ledger_and_starts_nothing_twice() -> None:
    run = Run(1, events=4)
    run.write_requests()
    for partition in range(PARTITIONS):
        for record in run.world.requests[partition]:
            await run.scheduler.take_request(partition, record.offset, record.value)
    await run.world.until(
        lambda: sum(e.state is State.STARTED for e in run.world.entries().values()) == 4,
        "all started",
    )
    await run.restart()
    await run.settle()
    assert sorted(run.backend.created.values()) == [1, 1, 1, 1]
    assert len(run.backend.start_calls) == 4  # the new owner did not even ask again
    assert run.scheduler.in_flight() == 4  # rebuilt from the ledger
    await run.scheduler.close()


async def test_over_budget_requests_are_held_in_the_ledger_across_a_restart() -> None:
    run = Run(2, events=4)
    run.review = settings(budgets={"general": {"per_day": 0}}, budget_fallback="hold")
    await run.restart()
    run.write_requests()
    for partition in range(PARTITIONS):
        for record in run.world.requests[partition]:
            await run.scheduler.take_request(partition, record.offset, record.value)
    # A limit of 0 never resets: the fallback applies (a hold would wait forever).
    await run.world.until(lambda: len(outcomes_by_event(run.world)) == 4, "fallback applied")
    await run.scheduler.close()
    run.review = settings(budgets={"general": {"per_day": 2}}, budget_fallback="hold")
    run.world = World(random.Random(3))
    run.write_requests()
    await run.restart()
    for partition in range(PARTITIONS):
        for record in run.world.requests[partition]:
            await run.scheduler.take_request(partition, record.offset, record.value)
    await run.world.until(
        lambda: (
            Counter(e.state for e in run.world.entries().values())
            == {State.STARTED: 2, State.HELD: 2}
        ),
        "two started, two held",
    )
    await run.restart()
    await run.settle()
    states = Counter(e.state for e in run.world.entries().values())
    assert states == {State.STARTED: 2, State.HELD: 2}  # the held ones stay held, in the ledger
    # A raised budget: the new owner checks held entries again at once and starts them.
    run.review = settings(budgets={"general": {"per_day": 100}}, budget_fallback="hold")
    await run.restart()
    await run.world.until(
        lambda: Counter(e.state for e in run.world.entries().values()) == {State.STARTED: 4},
        "all four started",
    )
    assert max(run.backend.created.values()) == 1
    await run.scheduler.close()


async def test_what_no_one_sent_starts_fresh_after_a_takeover() -> None:
    """The sent mark outlives its writer: the entries an old owner held over budget (never
    sent) start fresh under the new owner, with no look-up; the ones it started are not
    started again."""
    run = Run(2, events=0, late_s=0.02)
    run.review = settings(budgets={"general": {"per_day": 2}}, budget_fallback="hold")
    await run.restart()
    for index in range(4):
        request = review_request(f"evt-{index}")
        records = run.world.requests.setdefault(index % PARTITIONS, [])
        records.append(Record(len(records), orjson.dumps(dict(request.fields))))
        run.partition_of[request.loop_name] = index % PARTITIONS
        await run.scheduler.take_request(index % PARTITIONS, records[-1].offset, records[-1].value)
    await run.world.until(
        lambda: (
            Counter(e.state for e in run.world.entries().values())
            == {State.STARTED: 2, State.HELD: 2}
        ),
        "two started, two held",
    )
    assert run.backend.fresh_starts == 2  # recorded by the instance that started them
    assert [e.sent for e in run.world.entries().values() if e.state is State.HELD] == [False, False]
    run.review = settings(budgets={"general": {"per_day": 100}}, budget_fallback="hold")
    await run.restart()
    await run.world.until(
        lambda: Counter(e.state for e in run.world.entries().values()) == {State.STARTED: 4},
        "all four started",
    )
    assert run.backend.fresh_starts == 4
    assert sorted(run.backend.created.values()) == [1, 1, 1, 1]
    await run.scheduler.close()


# -- the audit monitor's counts: each audited review counted exactly once ---------------------

AUDITED_LABELS = ("cat", "dog", "bird")  #: model labels; the reviewers answer "dog"


def audit_counts(tallies: list[AuditTally]) -> Counter[tuple[str, bool]]:
    """(label, error) -> reviews counted, over the partitions' tallies (policies.version 1)."""
    found: Counter[tuple[str, bool]] = Counter()
    for tally in tallies:
        for label, (n, k) in tally.counts("1").get("general", {}).items():
            found[(label, True)] += k
            found[(label, False)] += n - k
    return +found


def logged_tallies(world: World) -> list[AuditTally]:
    """Each partition's tally as a new owner reads it: the last one written, and the closes it
    does not hold yet (review/audit.py, rule 3)."""
    tallies = []
    for records in world.log.values():
        tally = AuditTally()
        for key, value in records:
            if key == AUDIT_KEY and value is not None:
                tally = AuditTally.decode(value)
        current: dict[str, Any] = {}
        for key, value in records:
            if not key.startswith("_"):
                current[key] = None if value is None else decode(value)
        tallies.append(recover(tally, (e.audit for e in current.values() if e is not None)))
    return tallies


def is_audited_close(key: str, value: bytes | None) -> bool:
    if key.startswith("_") or value is None:
        return False
    entry = decode(value)
    return entry.state is State.CLOSED and entry.audit is not None


class AuditRun(Run):
    """A run whose requests are audits (or not), with several labels, under the same faults,
    plus writes refused exactly where counting happens: the audited close and the tally."""

    def __init__(self, seed: int, events: int = 24) -> None:
        super().__init__(seed, events)
        self.expected: Counter[tuple[str, bool]] = Counter()

    def write_requests(self) -> None:
        for index in range(self.events):
            event_id = f"evt-{index}"
            partition = index % PARTITIONS
            label = self.rng.choice(AUDITED_LABELS)
            share = (0.02, 0.05, 1.0, None)[index % 4]  # audits, a review route, an old ingest
            version = "0" if index % 9 == 8 else "1"  # decided under another policies.version
            request = review_request(event_id, label=label, review_probability=share,
                                     policy_version=version)  # fmt: skip
            records = self.world.requests.setdefault(partition, [])
            records.append(Record(len(records), orjson.dumps(dict(request.fields))))
            self.partition_of[request.loop_name] = partition
            fate = self.fate[event_id] = self.rng.choice(["complete", "complete", "fail", "poison"])
            if fate == "poison":
                self.backend.poisoned.add(request.loop_name)  # dead-lettered: no label
            elif request.audited and version == "1":
                self.expected[(label, label != "dog")] += 1

    def refuse_at_counting(self, rate: float) -> None:
        rng = random.Random(self.rng.random())
        self.world.refuse = lambda _, key, value: (
            (key == AUDIT_KEY or is_audited_close(key, value)) and rng.random() < rate
        )

    async def verify_audit(self) -> None:
        """The counts in the ledger, and those the (running) scheduler read back from it."""
        await _loaded(self)
        assert audit_counts(logged_tallies(self.world)) == self.expected
        assert audit_counts(list(self.scheduler.stats().audit.values())) == self.expected
        for partition, records in self.world.log.items():
            entries = {key: decode(value) for key, value in records
                       if not key.startswith("_") and value is not None}  # fmt: skip
            numbers = sorted(e.audit.seq for e in entries.values() if e.audit is not None)
            tally = self.scheduler.stats().audit[partition]
            assert numbers == list(range(1, tally.seq + 1)), "a sample numbered twice or lost"


@pytest.mark.parametrize("seed", range(8))
async def test_each_audited_review_is_counted_once_under_combined_faults(seed: int) -> None:
    run = AuditRun(100 + seed)
    run.write_requests()
    run.backend.fault_rate = 0.3
    run.world.write_failure_rate = 0.05
    run.refuse_at_counting(0.3)
    try:
        for _ in range(120):
            await run.step()
        run.world.refuse = None
        await run.finish()
        await run.restart()  # a new owner reads the counts back from the ledger
        await run.settle()
        await run.verify_audit()
    finally:
        await run.scheduler.close()
    run.verify()
    assert run.kills > 0
    assert sum(run.expected.values()) > 0


async def _loaded(run: Run) -> None:
    """Until every owned partition's ledger is read (its counts are then the scheduler's)."""
    await asyncio.gather(*(owned.loaded.wait() for owned in run.scheduler.partitions.values()))


async def _one_audited_review(run: AuditRun) -> str:
    """Record one audited request (model label cat), start it, and have it answered "dog"."""
    request = review_request("evt-0", label="cat", review_probability=0.02)
    run.world.requests[0] = [Record(0, orjson.dumps(dict(request.fields)))]
    run.partition_of[request.loop_name] = 0
    run.fate["evt-0"] = "complete"
    await run.scheduler.take_request(0, 0, run.world.requests[0][0].value)
    await run.world.until(lambda: request.loop_name in run.backend.created, "the review started")
    await run.world.until(
        lambda: run.world.entries()[request.loop_name].state is State.STARTED, "recorded started"
    )
    state = run.backend.complete(request.loop_name, "dog")
    await run.scheduler.take_loop_event(0, LoopEvent(
        request.loop_name, EventSource.EVENTBRIDGE, state.status, state.output_uri, state.flow,
    ))  # fmt: skip
    return request.loop_name


async def test_a_crash_between_the_close_and_its_tally_counts_the_review_once() -> None:
    run = AuditRun(0, events=0)
    run.world.refuse = lambda _, key, value: key == AUDIT_KEY  # the close lands, the tally not
    await _one_audited_review(run)
    await run.world.until(lambda: bool(run.world.deaths), "the process died")
    assert audit_counts([AuditTally.decode(v) for k, v in run.world.log[0]
                         if k == AUDIT_KEY and v]) == Counter()  # fmt: skip
    run.world.refuse = None
    await run.restart()  # the new owner finds the close numbered above the tally: counts it
    await run.settle()
    await _loaded(run)
    assert audit_counts(list(run.scheduler.stats().audit.values())) == {("cat", True): 1}
    await run.restart()  # and a second restart counts nothing more
    await run.settle()
    await _loaded(run)
    assert audit_counts(list(run.scheduler.stats().audit.values())) == {("cat", True): 1}
    assert [r["decision"] for r in run.world.outputs] == ["reviewed"]
    await run.scheduler.close()


async def test_an_outcome_published_again_after_a_crash_is_counted_once() -> None:
    run = AuditRun(0, events=0)
    run.world.refuse = lambda _, key, value: is_audited_close(key, value)  # published, not closed
    await _one_audited_review(run)
    await run.world.until(lambda: bool(run.world.deaths), "the process died")
    run.world.refuse = None
    await run.restart()  # the entry is still ENDED: its outcome is published again, then closed
    await run.world.until(run.all_closed, "closed")
    await run.settle()
    await _loaded(run)
    assert [r["decision"] for r in run.world.outputs] == ["reviewed", "reviewed"]
    assert audit_counts(logged_tallies(run.world)) == {("cat", True): 1}
    assert audit_counts(list(run.scheduler.stats().audit.values())) == {("cat", True): 1}
    await run.scheduler.close()


async def test_no_audited_review_is_closed_after_a_counting_write_failed() -> None:
    """The process goes on for a while after a refused tally write (it drains while stopping):
    a second audited close then must not be numbered from the tally the ledger never got, or
    its tally write would drop the first review's count."""
    run = AuditRun(0, events=0)
    names = []
    for offset, (event_id, label) in enumerate((("evt-0", "cat"), ("evt-2", "dog"))):
        request = review_request(event_id, label=label, review_probability=0.02)
        run.world.requests.setdefault(0, []).append(
            Record(offset, orjson.dumps(dict(request.fields)))
        )
        run.partition_of[request.loop_name] = 0
        run.fate[event_id] = "complete"
        names.append(request.loop_name)
        await run.scheduler.take_request(0, offset, run.world.requests[0][offset].value)
    await run.world.until(
        lambda: all(run.world.entries()[n].state is State.STARTED for n in names), "started"
    )
    refused: list[str] = []

    def refuse_once(_: int, key: str, value: bytes | None) -> bool:
        if key != AUDIT_KEY or refused:
            return False
        refused.append(key)
        return True

    def published(name: str) -> Callable[[], bool]:
        return lambda: any(r["review"]["loop_name"] == name for r in run.world.outputs)

    run.world.refuse = refuse_once
    for name in names:  # the first close lands without its tally, the second must not close
        state = run.backend.complete(name, "dog")
        await run.scheduler.take_loop_event(0, LoopEvent(
            name, EventSource.EVENTBRIDGE, state.status, state.output_uri, state.flow,
        ))  # fmt: skip
        await run.world.until(published(name), "published")
    await run.world.until(lambda: len(run.world.deaths) == 2, "both steps died")
    assert "AuditUnsure" in run.world.deaths[1]
    assert run.world.entries()[names[1]].state is State.ENDED  # left to the next owner
    await run.restart()
    await run.world.until(run.all_closed, "closed")
    await run.settle()
    await _loaded(run)
    expected = {("cat", True): 1, ("dog", False): 1}
    assert audit_counts(logged_tallies(run.world)) == expected
    assert audit_counts(list(run.scheduler.stats().audit.values())) == expected
    numbers = sorted(e.audit.seq for e in run.world.entries().values() if e.audit)
    assert numbers == [1, 2]
    await run.scheduler.close()
