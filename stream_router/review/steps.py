"""Running the scheduler's steps: when each is due, and whether it may begin now.

The scheduler (``review/scheduler.py``) decides what an entry's next step is (its state's
:attr:`~stream_router.review.ledger.State.step`) and when it is due (now, a held entry's
``due_s``, after a retry's delay); this module keeps the step from then until it may begin,
and frees its place when it ends. Per partition (:class:`Lanes`) it keeps:

- a due queue per kind of step (:class:`DueQueue`): entries by the time their step is due; an
  entry the ledger has moved on since it was queued is dropped;
- the lanes: at most ``review.concurrency`` steps of each kind at a time, so results and
  closes are never held up by starts waiting for rate tokens; what comes due while its lane is
  full stays in its queue, in its place, until a step of its kind ends;
- busy names: one step per entry at a time; what comes due while its step runs is parked
  until the step ends.

What may not begin is left where it is, never taken out and put back: a flood of requests
leaves hundreds of thousands of starts due at once behind a lane of a few, and a step's end
costs the next item's pop, not a pass over everything waiting (which made a 120,000-request
flood's fallback quadratic: a few dozen outcomes a second).

For every owned partition together, :class:`Gate` says whether a start may begin: none while
an owned ledger is being read, or while the reviews in flight and the starts under way fill
``review.max_in_flight`` (the start is blocked until the scheduler says room appeared), nor
during a pause the backend's capacity asked for (the start is due again when it ends).

Review state stays in the scheduler: nothing here reads or writes the ledger, chooses a step,
a delay or what an error means, or counts reviews in flight (the gate asks the scheduler). Nor
does anything here create a task or wait: a partition's worker asks what may begin
(:meth:`Lanes.take`), runs each step, and reports each end (:meth:`Lanes.done`). Time is what
the injected clocks say.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import NamedTuple

from stream_router.review.ledger import Entry, Step


class Due(NamedTuple):
    """``entry``'s step, due at ``at_s``; ``seq`` orders items due at the same time."""

    at_s: float
    seq: int
    entry: Entry


def step_of(entry: Entry) -> Step:
    """The step a queued entry is queued for (only entries whose state has one are queued)."""
    step = entry.state.step
    assert step is not None, f"{entry.name} is queued, but {entry.state} has no step"
    return step


class DueQueue:
    """Entries by the time their step is due; of two due at the same time, the first queued.

    An item whose entry is no longer the one ``current`` holds under its name (the ledger moved
    it on) is superseded: it is dropped when it comes due.
    """

    def __init__(self, current: Mapping[str, Entry]) -> None:
        self.current = current
        self._heap: list[Due] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, entry: Entry, at_s: float) -> None:
        heapq.heappush(self._heap, Due(at_s, next(self._seq), entry))

    def requeue(self, item: Due) -> None:
        """Queue an item taken earlier again, in the place it had."""
        heapq.heappush(self._heap, item)

    def pop(self, now_s: float) -> Due | None:
        """The first item due by ``now_s``, leaving superseded ones out; None if none is due."""
        while self._heap and self._heap[0].at_s <= now_s:
            item = heapq.heappop(self._heap)
            if self.current.get(item.entry.first_name) is item.entry:
                return item
        return None

    def next_at(self) -> float | None:
        """When the first item is due; None when the queue is empty."""
        return self._heap[0].at_s if self._heap else None


class Gate:
    """Whether a start may begin now, for every owned partition together.

    Starts under way (``starting``) count against ``max_in_flight`` with the reviews in flight
    (``in_flight``); room is counted only once no owned ledger is being read (``loading``), as
    their open reviews count too. A pause (:meth:`pause`) holds every start back until it ends,
    on the ``monotonic`` clock.
    """

    def __init__(
        self,
        max_in_flight: int,
        *,
        in_flight: Callable[[], int],
        loading: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = in_flight
        self.loading = loading
        self.monotonic = monotonic
        self.starting = 0  #: start steps under way
        self.paused_until = 0.0  #: monotonic: no start before

    def pause(self, seconds: float) -> None:
        """No start for ``seconds`` from now (a pause that ends later stands)."""
        self.paused_until = max(self.paused_until, self.monotonic() + seconds)

    def paused_s(self) -> float:
        """Seconds left of the pause; 0.0 when there is none."""
        return max(0.0, self.paused_until - self.monotonic())

    def full(self) -> bool:
        """Whether one more start has no room in flight."""
        return self.loading() or self.in_flight() + self.starting >= self.max_in_flight


class Lanes:
    """One partition's steps, from due to done.

    At most one step of a name runs at a time (``busy``), and at most ``concurrency`` of each
    :class:`~stream_router.review.ledger.Step` (``running``). An item that comes due and may not
    begin stays queued until it may: in its step's queue while its lane is full (due again when
    a step of its kind ends) or while the gate has no room in flight (due again at
    :meth:`release`) or is paused (due again when the pause ends); parked while its name is busy
    (due again, in the place it had, when the name's step ends).
    """

    def __init__(
        self,
        current: Mapping[str, Entry],
        gate: Gate,
        *,
        concurrency: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queues = {step: DueQueue(current) for step in Step}
        self.gate = gate
        self.concurrency = concurrency
        self.clock = clock
        self.running: Counter[Step] = Counter()
        self.busy: set[str] = set()
        self.parked: dict[str, Due] = {}  #: per busy name, the last item due while it ran
        self.held = False  #: a start was due while the gate had no room

    def schedule(self, entry: Entry, at_s: float) -> None:
        """Queue ``entry``'s step for ``at_s``."""
        self.queues[step_of(entry)].push(entry, at_s)

    def take(self) -> list[Entry]:
        """The entries whose steps begin now, each kind in the order due; each holds its place
        (and its name is busy) until :meth:`done`."""
        now = self.clock()
        taken: list[Entry] = []
        for step, queue in self.queues.items():
            while self.running[step] < self.concurrency and self._open(step, queue, now):
                item = queue.pop(now)
                if item is None:
                    break
                entry = item.entry
                if entry.first_name in self.busy:
                    self.parked[entry.first_name] = item
                    continue
                if step is Step.START:
                    self.gate.starting += 1
                self.running[step] += 1
                self.busy.add(entry.first_name)
                taken.append(entry)
        return taken

    def _open(self, step: Step, queue: DueQueue, now: float) -> bool:
        """Whether the gate lets a step of ``step`` begin now (it holds starts only); a start
        due while there is no room in flight is remembered for :meth:`release`."""
        if step is not Step.START:
            return True
        if self.gate.paused_s() > 0:
            return False
        if self.gate.full():
            due = queue.next_at()
            self.held = self.held or (due is not None and due <= now)
            return False
        return True

    def done(self, entry: Entry) -> None:
        """``entry``'s step ended (done, failed or cancelled, even before it ran): its place is
        free, and what came due while it ran is due again."""
        self.busy.discard(entry.first_name)
        step = step_of(entry)
        self.running[step] -= 1
        if step is Step.START:
            self.gate.starting -= 1
        parked = self.parked.pop(entry.first_name, None)
        if parked is not None:
            self.queues[step_of(parked.entry)].requeue(parked)

    def release(self) -> bool:
        """Room may have appeared in flight: returns whether starts were held for it (they
        are due in the place they had)."""
        held, self.held = self.held, False
        return held

    def next_at(self) -> float | None:
        """When the next step that may begin is due; None when none is queued, or each waits
        for a step of its kind to end or (a start that came due) for room in flight."""
        now, times = self.clock(), []
        for step, queue in self.queues.items():
            due = queue.next_at()
            if due is None or self.running[step] >= self.concurrency:
                continue
            if step is Step.START:
                paused_s = self.gate.paused_s()
                if paused_s > 0:
                    due = max(due, now + paused_s)
                elif due <= now and self.gate.full():
                    continue  # held: release() says when
            times.append(due)
        return min(times, default=None)
