"""The flow of one review: request → start (or hold, or fallback) → loop event → outcome.

:class:`ReviewFlow` holds what the review path decides, free of faust: the review application
(``review/app.py``) hands it each review request and each loop event, with the partition it came
from, and gives it the ledger and budget tables and where to publish (:class:`Outlets`).

- A request with no ledger entry is started; one whose entry says *held* (handed back after a
  restart) is started under the attempt and flow the entry keeps; any other copy does nothing.
- A start is paced by the rate limiter and the cap on reviews in flight; a spent budget applies
  the fallback: hold (wait in the actor, the ledger says so), accept-unreviewed or dead-letter.
- A loop event of the open attempt completes it (publish or dead-letter) and closes the ledger
  entry, so a later notice publishes nothing new. An escalation records its next attempt as
  held before starting it, so a start that fails or is cut short is re-sent by the reconciler.
- A closed entry is kept ``review.ledger_retention_s`` after it closed, then deleted (a few at a
  time, while events of its partition are handled), so the ledger and its recovery stay bounded.
  Until then a copy of the request or a late loop event finds it and does nothing; after that a
  copy would start the review again, so the retention must cover the review-requests topic's.

With ``budget_fallback: hold`` a request over budget waits in its actor; on shutdown it is handed
back to review-requests (acking it unstarted would lose it). Every outcome leaves a ledger entry,
which the request audit (``review/audit.py``) relies on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from stream_router.envelope import review_dead_letter
from stream_router.errors import ReviewCapacityExceeded, ReviewRejected, ReviewThrottled
from stream_router.ingest.writer import murmur2
from stream_router.metrics import ReviewMetrics
from stream_router.naming import attempt_name
from stream_router.review.backend import ReviewBackend, ReviewStatus
from stream_router.review.completion import Action, Completer, Completion
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import LedgerEntry
from stream_router.review.outcome import UnreviewedCode, unreviewed_envelope
from stream_router.review.shares import PartitionBudgets
from stream_router.review.starter import StartDecision, Starter, StartResult
from stream_router.review.supervision import Supervisor
from stream_router.settings import ReviewSettings

logger = logging.getLogger(__name__)

CAPACITY_RETRY_S = 5.0
PRUNE_BATCH = 100  #: closed ledger entries deleted at most per event handled
OUTPUT_UNREADABLE = "OutputUnreadable"  #: dead-letter reason: the review's output cannot be read

Send = Callable[[bytes | None, bytes], Awaitable[None]]  #: (key, value); returns once acked


@dataclass(frozen=True)
class Outlets:
    """Where the flow publishes; every call returns once the broker acknowledged it."""

    output: Send
    dead_letter: Send
    requests: Send  #: review-requests (a held request handed back)
    loop_events: Callable[[LoopEvent], Awaitable[None]]


class ReviewFlow:
    """Review requests and loop events of the partitions this process owns; see the module doc.

    ``ledger`` and ``budgets`` are the application's tables (any mapping in tests);
    ``owned()`` lists the review-requests partitions this instance owns; ``stopping()`` says
    whether the worker began to shut down, and ``stop`` is set a little later.
    """

    def __init__(
        self,
        review: ReviewSettings,
        *,
        backend: ReviewBackend,
        starter: Starter,
        completer: Completer,
        ledger: MutableMapping[str, Any],
        budgets: PartitionBudgets,
        outlets: Outlets,
        metrics: ReviewMetrics,
        supervisor: Supervisor,
        owned: Callable[[], list[int]],
        stopping: Callable[[], bool],
        stop: asyncio.Event,
        clock: Callable[[], float],
    ) -> None:
        self.review = review
        self.backend = backend
        self.starter = starter
        self.completer = completer
        self.ledger = ledger
        self.budgets = budgets
        self.outlets = outlets
        self.metrics = metrics
        self.supervisor = supervisor
        self.owned = owned
        self.stopping = stopping
        self.stop = stop
        self.clock = clock
        self.in_flight = 0
        self._capacity = asyncio.Condition()
        self.held: set[str] = set()  #: first names held over budget in this process
        self.in_hand: set[str] = set()  #: first names whose request an actor is handling
        self._closed: dict[int, deque[tuple[float, str]]] = {}  # partition -> (closed_s, first)
        self._indexed = False

    async def request(self, request: Mapping[str, Any], name: str, partition: int) -> None:
        """Handle a review request named ``name`` read from review-requests ``partition``."""
        if name in self.in_hand:
            return  # a copy (handed back, or re-sent by the audit) of a request in hand here
        self.in_hand.add(name)
        try:
            data = self.ledger.get(name)
            if data is None:
                await self.start(request, name, 1, str(request["review_flow"]), partition)
            elif data.get("held") and name not in self.held:  # a held request handed back
                self.held.add(name)
                try:
                    await self.start(
                        request, name, int(data["attempt"]), str(data["flow"]), partition
                    )
                finally:
                    self.held.discard(name)
            # else redelivered: started (or finished) already, or held by this process
        finally:
            self.in_hand.discard(name)

    async def start(
        self, request: Mapping[str, Any], first: str, attempt: int, flow: str, partition: int
    ) -> None:
        """Start a review; ``partition`` (of the event in hand) decides whose budget pays."""
        review = self.review
        name = attempt_name(first, attempt)
        route = str(request["route"])
        budget = self.budgets.budget(partition)
        while True:
            async with self._capacity:
                with self.supervisor.waiting():
                    await self._capacity.wait_for(lambda: self.in_flight < review.max_in_flight)
            try:
                result = await self.starter.start(
                    request, name=name, flow=flow, attempt=attempt, budget=budget
                )
            except ReviewCapacityExceeded:
                self.metrics.capacity_waits.inc()
                logger.warning("open-reviews quota reached; pausing starts")
                await self._wait_for_capacity()
                continue
            except ReviewThrottled:
                self.metrics.start_throttled.inc()
                continue  # the limiter is paused already; try again
            finally:
                self.budgets.save(partition)
            break
        self.metrics.start_throttled.inc(result.throttled)
        self.metrics.start_outcomes.labels(route, result.decision.value).inc()
        now = self.clock()
        owned = self.owned() or [partition]
        for window, left in self.budgets.remaining(route, now, owned).items():
            if left is not None:
                self.metrics.budget_remaining.labels(route, window).set(left)
        if result.decision in (StartDecision.STARTED, StartDecision.ALREADY_STARTED):
            entry = LedgerEntry(
                name=name,
                first_name=first,
                route=route,
                flow=flow,
                attempt=attempt,
                started_s=now,
                deadline_s=now + review.review_deadline_s,
                request=request,
            )
            self.ledger[first] = entry.to_dict()
            self.in_flight += 1
            self.metrics.in_flight.set(self.in_flight)
            if result.decision is StartDecision.ALREADY_STARTED:
                await self.report_if_finished(name)
            return
        await self._not_started(request, first, result, partition)

    async def _not_started(
        self, request: Mapping[str, Any], first: str, result: StartResult, partition: int
    ) -> None:
        review = self.review
        if result.decision is StartDecision.OVER_BUDGET and review.budget_fallback == "hold":
            route = str(request["route"])
            until = self.budgets.budget(partition).available_at_s(route, self.clock())
            if until is not None:
                logger.info("budget of %s spent: holding review requests", route)
                # The ledger keeps what is held (an escalation too), so a copy handed back or
                # lost still gets started later.
                self._record_held(first, result.attempt, result.flow, partition, request)
                self.held.add(first)
                try:
                    with self.supervisor.waiting():
                        stopping = await self._hold(until)
                    if not stopping:
                        await self.start(request, first, result.attempt, result.flow, partition)
                    else:  # hand it back: acking it unstarted would lose it
                        await self.hand_back(first, request)
                        logger.info("stopping: held review request %s handed back to Kafka", first)
                finally:
                    self.held.discard(first)
                return
        reason = result.reason or result.decision.value
        code = {
            StartDecision.OVER_BUDGET: UnreviewedCode.BUDGET_EXHAUSTED.value,
            StartDecision.OVERSIZE: UnreviewedCode.INPUT_TOO_LARGE.value,
        }.get(result.decision, result.decision.value)
        accept = (
            result.decision is StartDecision.OVER_BUDGET
            and review.budget_fallback == "accept-unreviewed"
        ) or result.decision is StartDecision.OVERSIZE
        if result.decision is StartDecision.OVERSIZE:
            # As large as the event is, Kafka would refuse the envelope (and crash this agent):
            # the envelope leaves the event out; its ``source`` locates it in the input topic.
            request = {**request, "event": {}}
            reason += "; the event is left out of this envelope (see source)"
        if accept:
            record = unreviewed_envelope(
                request, failure_code=code, reason=reason, loop_name=result.name,
                review_flow=result.flow,
            )  # fmt: skip
            await self._send(self.outlets.output, request, record)
            outcome = "unreviewed"
        else:
            record = review_dead_letter(request, code, reason, self.clock())
            await self._send(self.outlets.dead_letter, request, record)
            outcome = "dead-lettered"
        self.metrics.outcomes.labels(outcome, "none", str(request["route"])).inc()
        self._close(first, partition, outcome=outcome)

    def _record_held(
        self, first: str, attempt: int, flow: str, partition: int, request: Mapping[str, Any]
    ) -> None:
        """Record an attempt not started yet; the reconciler re-sends it if no actor holds it."""
        self.ledger[first] = {"held": True, "attempt": attempt, "flow": flow,
                              "partition": partition, "held_s": self.clock(),
                              "request": dict(request)}  # fmt: skip

    def _close(self, first: str, partition: int, **fields: str) -> None:
        closed_s = self.clock()
        self.ledger[first] = {"closed": True, "closed_s": closed_s, "partition": partition,
                              **fields}  # fmt: skip
        if self._indexed:  # else built from the ledger when first needed
            self._closed.setdefault(partition, deque()).append((closed_s, first))

    def prune(self, partition: int, limit: int = PRUNE_BATCH) -> int:
        """Delete up to ``limit`` closed entries of ``partition`` older than the retention.

        Call it while an event of ``partition`` is in hand: faust writes the deletions to that
        partition of the ledger's changelog, the partition the entries were written to (requests
        and loop events of a review share a partition). Returns how many were deleted.
        """
        if not self._indexed:
            self._index_closed()
        index = self._closed.setdefault(partition, deque())
        horizon = self.clock() - self.review.ledger_retention_s
        pruned = 0
        while index and pruned < limit and index[0][0] <= horizon:
            closed_s, first = index.popleft()
            data = self.ledger.get(first)
            if data and data.get("closed") and float(data["closed_s"]) == closed_s:
                del self.ledger[first]  # not re-opened meanwhile (an escalation reuses it)
                pruned += 1
        if pruned:
            self.metrics.ledger_pruned.inc(pruned)
        return pruned

    def forget_closed(self) -> None:
        """Partitions moved: rebuild the index of closed entries from the ledger when needed."""
        self._closed.clear()
        self._indexed = False

    def _index_closed(self) -> None:
        """Index every closed entry by partition, in one pass over the ledger."""
        found: dict[int, list[tuple[float, str]]] = {}
        for first, data in list(self.ledger.items()):
            if data and data.get("closed"):
                partition = data.get("partition")
                if partition is None:  # closed before entries kept their partition
                    partition = key_partition(str(first), self.review.topic_partitions)
                found.setdefault(int(partition), []).append((float(data["closed_s"]), str(first)))
        self._closed = {partition: deque(sorted(items)) for partition, items in found.items()}
        self._indexed = True

    async def hand_back(self, first: str, request: Mapping[str, Any]) -> None:
        """Send a held request to review-requests again (its ledger entry says how to start)."""
        await self.outlets.requests(first.encode(), orjson.dumps(request))

    async def _hold(self, until_s: float) -> bool:
        """Wait until ``until_s`` (epoch seconds); True if the worker began stopping first.

        faust sets ``should_stop`` before it waits for the events in hand, so a hold must end
        then or the worker never stops; the stop event of the service follows later.
        """
        while (left := until_s - self.clock()) > 0:
            if self.stopping():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), min(left, 1.0))
        return False

    async def report_if_finished(self, name: str) -> None:
        """A review found already started may have ended long ago, its events long gone."""
        state = await self.backend.describe(name)
        if state is not None and state.status.terminal:
            await self.outlets.loop_events(
                LoopEvent(
                    state.name,
                    EventSource.RECONCILER,
                    state.status,
                    state.output_uri,
                    state.flow,
                    state.failure_code,
                    state.failure_reason,
                    self.clock(),
                    state.ended_at_s,
                )
            )

    async def _wait_for_capacity(self) -> None:
        async with self._capacity:
            before = self.in_flight
            try:
                with self.supervisor.waiting():
                    await asyncio.wait_for(
                        self._capacity.wait_for(lambda: self.in_flight < before), CAPACITY_RETRY_S
                    )
            except TimeoutError:
                logger.debug("no review ended within %.0f s; trying again", CAPACITY_RETRY_S)

    async def loop_event(self, first: str, loop_event: LoopEvent, partition: int) -> None:
        data = self.ledger.get(first)
        if data is None or data.get("closed") or data.get("held"):
            return  # unknown, handled already, or its next attempt waits for the budget
        entry = LedgerEntry.from_dict(data)
        if entry.name != loop_event.name:
            return  # about an earlier attempt
        try:
            completion = await self.completer.complete(loop_event, entry)
        except ReviewRejected as exc:  # its output is missing or unreadable: nothing to publish
            record = review_dead_letter(entry.request, OUTPUT_UNREADABLE, str(exc), self.clock())
            completion = Completion(Action.DEAD_LETTER, "dead-lettered", record)
        if completion.action is Action.WAIT:
            return
        status = loop_event.status.value if loop_event.status else "Completed"
        if completion.action is Action.PUBLISH and completion.record is not None:
            await self._send(self.outlets.output, entry.request, completion.record)
        elif completion.action is Action.DEAD_LETTER and completion.record is not None:
            await self._send(self.outlets.dead_letter, entry.request, completion.record)
        if loop_event.status is ReviewStatus.FAILED:
            self.metrics.failed.labels(loop_event.failure_code or "unknown").inc()
        self.metrics.outcomes.labels(completion.outcome, status, entry.route).inc()
        self.metrics.time_in_review.observe(max(0.0, self.clock() - entry.started_s))
        if completion.action is Action.ESCALATE and completion.next_flow:
            # Recorded as held before it starts: should the start fail (a retry of this event
            # then finds the entry held and does nothing) or the process die, the reconciler
            # re-sends it, as for any held request no actor holds.
            attempt, flow = entry.attempt + 1, completion.next_flow
            self._record_held(first, attempt, flow, partition, entry.request)
            await self.released()
            self.held.add(first)
            try:
                await self.start(entry.request, first, attempt, flow, partition)
            finally:
                self.held.discard(first)
            return
        self._close(first, partition, outcome=completion.outcome, name=entry.name)
        await self.released()
        if self.review.delete_finished:
            delete = getattr(self.backend, "delete", None)
            if delete is not None:
                await delete(entry.name)

    async def released(self) -> None:
        async with self._capacity:
            self.in_flight = max(0, self.in_flight - 1)
            self.metrics.in_flight.set(self.in_flight)
            self._capacity.notify_all()

    async def _send(self, send: Send, request: Mapping[str, Any], value: bytes) -> None:
        """Publish ``value`` under the key of the event the request came from."""
        key = request.get("key")
        if isinstance(key, str) and request.get("key_encoding") == "base64":
            key_bytes: bytes | None = base64.b64decode(key)
        else:
            key_bytes = key.encode() if isinstance(key, str) else None
        await send(key_bytes, value)


def key_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (how requests are keyed)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
