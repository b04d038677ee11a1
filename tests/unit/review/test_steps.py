"""The scheduler's step plumbing alone (``review/steps.py``): time is a number the test sets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stream_router.review.ledger import Entry, State, Step
from stream_router.review.steps import DueQueue, Gate, Lanes


@dataclass
class Outside:
    """The clocks, and what the gate asks the scheduler."""

    now: float = 0.0
    in_flight: int = 0
    loading: bool = False


def entry(name: str, state: State = State.PENDING) -> Entry:
    return Entry(name, state, 1, "fd-general", 0.0, 0.0, None)


def lanes_of(
    outside: Outside, *entries: Entry, concurrency: int = 3, max_in_flight: int = 10
) -> Lanes:
    """Lanes over a ledger holding ``entries``, each queued due now."""
    gate = Gate(
        max_in_flight,
        in_flight=lambda: outside.in_flight,
        loading=lambda: outside.loading,
        monotonic=lambda: outside.now,
    )
    current = {e.first_name: e for e in entries}
    lanes = Lanes(current, gate, concurrency=concurrency, clock=lambda: outside.now)
    for e in entries:
        lanes.schedule(e, outside.now)
    return lanes


def names(entries: list[Entry]) -> list[str]:
    return [e.first_name for e in entries]


def popped(queue: DueQueue, now_s: float) -> str | None:
    item = queue.pop(now_s)
    return None if item is None else item.entry.first_name


def test_items_come_due_in_time_order_ties_first_queued_first() -> None:
    current = {name: entry(name) for name in "abcd"}
    queue = DueQueue(current)
    for name, at_s in [("c", 2.0), ("d", 1.0), ("b", 5.0), ("a", 1.0)]:
        queue.push(current[name], at_s)
    assert [popped(queue, 2.0) for _ in range(4)] == ["d", "a", "c", None]
    assert queue.next_at() == 5.0
    assert queue.pop(4.9) is None


def test_an_entry_the_ledger_moved_on_is_dropped() -> None:
    old = entry("a")
    current = {"a": old}
    queue = DueQueue(current)
    queue.push(old, 0.0)
    current["a"] = dataclasses.replace(old, state=State.HELD)
    queue.push(current["a"], 1.0)
    item = queue.pop(1.0)
    assert item is not None
    assert item.entry is current["a"]
    assert len(queue) == 0


def test_each_lane_runs_concurrency_steps_and_starts_never_hold_up_results() -> None:
    outside = Outside()
    starts = [entry(f"s{i}") for i in range(4)]
    result = entry("r", State.ENDED)
    lanes = lanes_of(outside, *starts, result)
    assert names(lanes.take()) == ["s0", "s1", "s2", "r"]  # s3 waits for a place
    assert lanes.take() == []
    lanes.done(starts[1])
    assert names(lanes.take()) == ["s3"]


def test_what_comes_due_while_its_step_runs_is_parked_until_it_ends() -> None:
    outside = Outside()
    a = entry("a")
    lanes = lanes_of(outside, a)
    assert lanes.take() == [a]
    lanes.schedule(a, 1.0)  # a retry, due while the first step still runs
    outside.now = 1.0
    assert lanes.take() == []
    lanes.done(a)
    assert lanes.take() == [a]


def test_starts_are_blocked_while_a_ledger_is_read_and_released_due_now() -> None:
    outside = Outside(loading=True)
    a, result = entry("a"), entry("r", State.ENDED)
    lanes = lanes_of(outside, a, result)
    assert lanes.take() == [result]
    assert lanes.next_at() is None  # blocked: not queued for any time
    outside.loading, outside.now = False, 3.0
    assert lanes.release()
    assert lanes.next_at() == 0.0  # due since it was queued: it kept its place
    assert lanes.take() == [a]
    assert not lanes.release()


def test_starts_are_blocked_while_in_flight_and_starting_fill_max_in_flight() -> None:
    outside = Outside(in_flight=1)
    a, b = entry("a"), entry("b")
    lanes = lanes_of(outside, a, b, max_in_flight=2)
    assert lanes.take() == [a]  # 1 in flight + 1 starting: full
    lanes.release()
    assert lanes.take() == []
    lanes.done(a)
    lanes.release()
    assert lanes.take() == [b]


def test_a_capacity_pause_queues_a_start_again_for_its_end() -> None:
    outside = Outside()
    a = entry("a")
    lanes = lanes_of(outside, a)
    lanes.gate.pause(5.0)
    lanes.gate.pause(1.0)  # a shorter pause does not cut the longer one
    assert lanes.take() == []
    assert lanes.next_at() == 5.0
    outside.now = 4.9
    assert lanes.take() == []
    outside.now = 5.0
    assert lanes.take() == [a]


def test_what_waits_for_a_lane_or_room_stays_queued_and_a_step_end_costs_one_pop() -> None:
    """A flood leaves thousands of starts due behind a lane of a few: each step's end must
    not take them all out and put them back (that made a flood's fallback quadratic)."""
    outside = Outside()
    waiting = [entry(f"s{i}") for i in range(2_000)]
    lanes = lanes_of(outside, *waiting, concurrency=2, max_in_flight=10_000)
    queue = lanes.queues[Step.START]
    pops = 0
    pop = queue.pop

    def counted(now_s: float) -> Any:
        nonlocal pops
        pops += 1
        return pop(now_s)

    queue.pop = counted  # type: ignore[method-assign]
    done: list[str] = []
    while len(done) < len(waiting):
        taken = lanes.take()
        assert 1 <= len(taken) <= 2
        for one in taken:
            lanes.done(one)
            done.append(one.first_name)
    assert done == [e.first_name for e in waiting]  # in the order due
    assert pops <= 2 * len(waiting)
    outside.in_flight = 10_000  # no room in flight: held in place, no pass over the queue
    lanes.schedule(waiting[0], outside.now)
    pops = 0
    for _ in range(100):
        assert lanes.take() == []
    assert pops == 0
    assert lanes.release()
