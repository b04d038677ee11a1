"""The review state machine as data: ``ledger.TRANSITIONS`` is every move an entry makes.

The table is enforced where entries move (``Entry.moved`` raises ``IllegalMove``), drawn in
``review/ledger.py``'s docstring from the table (checked here), and each of its rows is a move
the scheduler makes: the scenarios below make every one, and no other, read back from the
ledger log as a new owner would. Reading is not moving: a ledger holding an entry in any state
loads, and the scheduler drives each on by moves of the table.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from stream_router.errors import StreamRouterError
from stream_router.review import ledger
from stream_router.review.backend import ReviewState
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.ledger import (
    STEPS,
    TRANSITIONS,
    CorruptLedger,
    End,
    Entry,
    IllegalMove,
    State,
    Step,
    decode,
    encode,
    pending,
)
from stream_router.review.scheduler import ReviewScheduler
from stream_router.settings import ReviewSettings
from tests.unit.review.requests import review_request
from tests.unit.review.test_scheduler import (
    PARTITIONS,
    FaultyBackend,
    Record,
    World,
    faulty_run,
    scheduler,
    settings,
)

NOW = 1_700_000_000.0
Move = tuple[State, State]

# -- the table, and its drawing ----------------------------------------------------------------


def drawn(transitions: dict[Move, str] | None = None) -> str:
    """The table as ``review/ledger.py``'s docstring draws it: per state, its step and moves."""
    table = dict(TRANSITIONS) if transitions is None else transitions
    lines = [f"{'state':<10} {'step':<9}     {'to':<10} why"]
    for source in State:
        moves = [(target, why) for (start, target), why in table.items() if start is source]
        head = f"{source.name:<10} {STEPS[source] or '-':<9}"
        if not moves:
            lines.append(f"{head} (final)")
        for index, (target, why) in enumerate(moves):
            lines.append(f"{head if index == 0 else '':<20} ──► {target.name:<10} {why}")
    return "\n".join(lines)


def docstring_drawing() -> str:
    """The first literal block (``::``) of ``review/ledger.py``'s docstring, unindented."""
    lines = (ledger.__doc__ or "").splitlines()
    start = next(index for index, line in enumerate(lines) if line.endswith("::")) + 2
    block = itertools.takewhile(lambda line: line.startswith("    "), lines[start:])
    return "\n".join(line.removeprefix("    ") for line in block)


def test_the_docstring_draws_the_table() -> None:
    # On a change of TRANSITIONS, paste drawn() into the docstring, indented by four spaces.
    assert docstring_drawing() == drawn()


def test_the_drawing_changes_with_the_table() -> None:
    """The comparison above is not vacuous: a move more or less shows in the drawing."""
    without = {move: why for move, why in TRANSITIONS.items() if move[0] is not State.HELD}
    assert drawn(without) != drawn()
    assert drawn({**TRANSITIONS, (State.HELD, State.PENDING): "wrong"}) != drawn()


def test_every_state_but_closed_has_a_way_on_and_only_started_waits_for_news() -> None:
    leaving = {source for source, _ in TRANSITIONS}
    assert leaving == set(State) - {State.CLOSED}
    assert {state for state in State if state.step is None} == {State.STARTED, State.CLOSED}
    assert {state for state in State if state.step is Step.START} == {
        State.PENDING,
        State.HELD,
        State.ESCALATED,
    }


# -- moving: only what the table has -----------------------------------------------------------


def entry_in(state: State, event_id: str, **changes: Any) -> Entry:
    """A ledger entry in ``state``, as some writer left it (built, not moved), written now (the
    scheduler's clock is the wall clock: a CLOSED entry is not pruned yet)."""
    entry = pending(review_request(event_id), time.time())
    return dataclasses.replace(entry, state=state, **changes)


ILLEGAL = sorted(set(itertools.product(State, State)) - set(TRANSITIONS))


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_a_move_the_table_does_not_have_raises_naming_it(source: State, target: State) -> None:
    entry = entry_in(source, "e1")
    with pytest.raises(IllegalMove, match=f"from {source} to {target}") as raised:
        entry.moved(target, NOW + 1)
    assert isinstance(raised.value, CorruptLedger)  # the review role stops, writing nothing
    assert isinstance(raised.value, StreamRouterError)
    assert entry.name in str(raised.value)


@pytest.mark.parametrize(("source", "target"), sorted(TRANSITIONS))
def test_every_move_of_the_table_is_made(source: State, target: State) -> None:
    moved = entry_in(source, "e1").moved(target, NOW + 1)
    assert (moved.state, moved.since_s) == (target, NOW + 1)


def test_reading_is_not_moving_an_entry_in_any_state_decodes() -> None:
    """The table guards moves only: what the ledger holds is read whatever its state."""
    for state in State:
        entry = entry_in(state, "e1")
        assert decode(encode(entry)) == entry


# -- the scheduler makes every move of the table, and no other ---------------------------------


def read_moves(world: World) -> tuple[set[State], set[Move]]:
    """The states entries were first written in, and every move the ledger log shows (as a new
    owner reads it: a deleted entry starts again). An entry written again only to mark its
    start sent is not a move: the mark is made before a start (a state whose step is START)."""
    first: set[State] = set()
    moves: set[Move] = set()
    for records in world.log.values():
        last: dict[str, Entry] = {}
        for key, value in records:
            if key.startswith("_"):
                continue
            if value is None:
                last.pop(key, None)
                continue
            entry = decode(value)
            before = last.get(key)
            if before is None:
                first.add(entry.state)
            elif dataclasses.replace(before, sent=True) == entry and not before.sent:
                assert entry.state.step is Step.START, f"{key} marked sent {entry.state}"
            else:
                moves.add((before.state, entry.state))
            last[key] = entry
    return first, moves


class Scene:
    """One scheduler at a time over one world (partition 0 takes the requests)."""

    def __init__(self, review: ReviewSettings, *written: Entry) -> None:
        self.world = World(random.Random(0))
        self.world.log[0] = [(entry.first_name, encode(entry)) for entry in written]
        self.backend = FaultyBackend(random.Random(1))
        self.run = self.start(review)

    def start(self, review: ReviewSettings) -> ReviewScheduler:
        run = scheduler(self.world, self.backend, review)
        for partition in range(PARTITIONS):
            run.assign(partition)
        return run

    async def restart(self, review: ReviewSettings) -> None:
        await self.run.close()
        self.run = self.start(review)

    async def deliver(self, *event_ids: str) -> None:
        records = self.world.requests.setdefault(0, [])
        for event_id in event_ids:
            value = orjson.dumps(dict(review_request(event_id).fields))
            records.append(Record(len(records), value))
            assert await self.run.take_request(0, records[-1].offset, value)

    async def notice(self, state: ReviewState) -> None:
        await self.run.take_loop_event(0, LoopEvent(
            state.name, EventSource.EVENTBRIDGE, state.status, state.output_uri, state.flow,
            state.failure_code, state.failure_reason,
        ))  # fmt: skip

    async def until(self, states: dict[str, State], what: str) -> None:
        """Wait until the entries of these events are in these states."""
        names = {review_request(event_id).loop_name: state for event_id, state in states.items()}
        await self.world.until(
            lambda: {k: e.state for k, e in self.world.entries().items() if k in names} == names,
            what,
        )


def held(world: World, event_id: str) -> int:
    """How often the event's entry was written HELD."""
    first = review_request(event_id).loop_name
    return sum(
        1 for key, value in world.log.get(0, [])
        if key == first and value is not None and decode(value).state is State.HELD
    )  # fmt: skip


def name(event_id: str, attempt: int = 1) -> str:
    first = review_request(event_id).loop_name
    return first if attempt == 1 else f"{first}-a{attempt}"


async def escalated_or_not_started() -> World:
    """Budget spent, accept-unreviewed: a second request is not started; a failed review's
    next attempt neither."""
    review = settings(budgets={"general": {"per_day": 2}})  # partition 0's share: 1
    scene = Scene(review)
    try:
        await scene.deliver("e1", "e2")
        await scene.until({"e1": State.STARTED, "e2": State.CLOSED}, "one started, one not")
        await scene.notice(scene.backend.fail(name("e1")))
        await scene.until({"e1": State.CLOSED}, "its next attempt not started")
    finally:
        await scene.run.close()
    return scene.world


async def held_again_then_started() -> World:
    """Budget spent, hold: a request and a failed review's next attempt are held, held again by
    a new owner, and started once the budget allows."""
    review = settings(budgets={"general": {"per_day": 2}}, budget_fallback="hold")
    scene = Scene(review)
    try:
        await scene.deliver("e1", "e2")
        await scene.until({"e1": State.STARTED, "e2": State.HELD}, "one started, one held")
        await scene.notice(scene.backend.fail(name("e1")))
        await scene.until({"e1": State.HELD}, "its next attempt held")
        await scene.restart(review)  # a new owner checks held entries at once: still spent
        await scene.world.until(
            lambda: held(scene.world, "e1") == held(scene.world, "e2") == 2, "both held again"
        )
        await scene.restart(settings(budgets={"general": {"per_day": 100}}, budget_fallback="hold"))
        await scene.until({"e1": State.STARTED, "e2": State.STARTED}, "both started")
        await scene.notice(scene.backend.complete(name("e1", 2), "dog"))
        await scene.until({"e1": State.CLOSED}, "reviewed")
    finally:
        await scene.run.close()
    return scene.world


async def held_then_not_started() -> World:
    """A held request whose budget becomes 0 (it never resets): the fallback, not a hold."""
    review = settings(budgets={"general": {"per_day": 2}}, budget_fallback="hold")
    scene = Scene(review)
    try:
        await scene.deliver("e1", "e2")
        await scene.until({"e1": State.STARTED, "e2": State.HELD}, "one started, one held")
        await scene.restart(settings(budgets={"general": {"per_day": 0}}, budget_fallback="hold"))
        await scene.until({"e2": State.CLOSED}, "the held one closed")
    finally:
        await scene.run.close()
    return scene.world


async def escalated_and_started() -> World:
    review = settings()
    scene = Scene(review)
    try:
        await scene.deliver("e1")
        await scene.until({"e1": State.STARTED}, "started")
        await scene.notice(scene.backend.fail(name("e1")))
        await scene.world.until(lambda: name("e1", 2) in scene.backend.states, "next started")
        await scene.until({"e1": State.STARTED}, "its next attempt started")
    finally:
        await scene.run.close()
    return scene.world


async def read_back_in_every_state() -> World:
    """A ledger with an entry in each state, ENDED among them as an earlier version wrote one
    (InProgress): loaded, and each driven on by the table's moves."""
    every = {
        "p": entry_in(State.PENDING, "p"),
        "h": entry_in(State.HELD, "h", due_s=time.time()),
        "s": entry_in(State.STARTED, "s", started_s=time.time()),
        "n": entry_in(State.ENDED, "n", end=End("InProgress", source="eventbridge")),
        "x": entry_in(State.ESCALATED, "x", attempt=2, flow="fd-experts"),
        "c": entry_in(State.CLOSED, "c", request=None, outcome="reviewed"),
    }
    scene = Scene(settings(), *every.values())
    try:
        await scene.until(dict.fromkeys("phnx", State.STARTED), "every startable one started")
        await scene.until({"s": State.STARTED, "c": State.CLOSED}, "the others as they were")
    finally:
        await scene.run.close()
    assert not scene.world.every_death, scene.world.every_death
    return scene.world


SCENES: list[Callable[[], Awaitable[World]]] = [
    escalated_or_not_started,
    held_again_then_started,
    held_then_not_started,
    escalated_and_started,
    read_back_in_every_state,
]


async def test_the_scheduler_makes_every_move_of_the_table_and_no_other() -> None:
    made: set[Move] = set()
    for scene in SCENES:
        world = await scene()
        assert not world.every_death, (scene.__name__, world.every_death)
        made |= read_moves(world)[1]
    assert made == set(TRANSITIONS)


@pytest.mark.parametrize("seed", range(4))
async def test_under_combined_faults_every_entry_moves_by_the_table(seed: int) -> None:
    """The fault-injection run of ``test_scheduler.py``: an illegal move would kill the process
    (``IllegalMove``), and the history the ledger keeps is a path through the table."""
    run = await faulty_run(seed)
    assert not [death for death in run.world.every_death if "IllegalMove" in death]
    first, moves = read_moves(run.world)
    assert first == {State.PENDING}
    assert moves <= set(TRANSITIONS), moves - set(TRANSITIONS)
