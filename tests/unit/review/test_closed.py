"""The compact closed names (``review/closed.py``) against a dict, which has the same rules: a
name closed again keeps its place and takes the new second; a name discarded and closed again
goes last; the oldest is the first in order."""

from __future__ import annotations

import random

import pytest

from stream_router.review import closed as module
from stream_router.review.closed import ClosedNames


def names(count: int) -> list[str]:
    return [f"event-{i}-{random.Random(i).getrandbits(112):028x}" for i in range(count)]


def same(closed: ClosedNames, model: dict[str, float]) -> None:
    assert list(closed.items()) == list(model.items())
    assert len(closed) == len(model)
    assert closed.oldest() == next(iter(model.items()), None)


def exercise(seed: int, steps: int, pool: list[str]) -> None:
    rng = random.Random(seed)
    closed, model = ClosedNames(), {}
    second = 1_000.0
    for step in range(steps):
        name = rng.choice(pool)
        roll = rng.random()
        if roll < 0.55:
            second += rng.choice((0.0, 0.0, 1.0))
            closed.close(name, second)
            model[name] = second
        elif roll < 0.8:
            closed.discard(name)
            model.pop(name, None)
        elif roll < 0.9 and model:  # pruning: the oldest goes
            oldest = next(iter(model))
            assert closed.oldest() == (oldest, model[oldest])
            closed.discard(oldest)
            del model[oldest]
        assert (name in closed) == (name in model), (seed, step, name)
        assert closed.get(name) == model.get(name)
    same(closed, model)
    for name in pool:
        assert (name in closed) == (name in model)
    while model:  # pruned to the end, in order
        oldest = next(iter(model))
        assert closed.oldest() == (oldest, model.pop(oldest))
        closed.discard(oldest)
    same(closed, model)
    assert "x" not in closed
    assert 7 not in closed


@pytest.mark.parametrize("seed", range(6))
def test_closed_names_answer_as_a_dict_does(seed: int) -> None:
    exercise(seed, 20_000, names(3_000))


@pytest.mark.parametrize("seed", range(4))
def test_colliding_hashes_small_blocks_and_a_growing_table_change_no_answer(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five hash values for every name: long probe runs, equal bits with different names (the
    name decides), deletions that close gaps across runs; blocks of 8 names that empty and
    leave; a table grown from 8 slots."""
    monkeypatch.setattr(module, "_bits", lambda name: hash(name) % 5)
    monkeypatch.setattr(module, "BLOCK_BITS", 3)
    monkeypatch.setattr(module, "BLOCK", 8)
    monkeypatch.setattr(module, "_FIRST_SIZE", 8)
    exercise(seed, 4_000, names(200))


def test_a_deletion_closes_the_gap_it_leaves_in_a_probe_run_that_wraps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names placed by hand at the table's end and its start: deleting the first of a run that
    wraps moves the later ones back, and each is still found."""
    home = {"a": 6, "b": 7, "c": 6, "d": 0, "e": 7, "f": 1}
    monkeypatch.setattr(module, "_bits", home.__getitem__)
    monkeypatch.setattr(module, "_FIRST_SIZE", 8)
    closed = ClosedNames()
    closed.close("a", 1.0)  # slot 6
    closed.close("b", 2.0)  # 7
    closed.close("c", 3.0)  # 6 is taken: 0 (wraps)
    assert len(closed._slots) == 8  # three names in 8 slots: not grown yet
    closed.close("d", 4.0)  # 0 is taken: 1
    closed.discard("a")  # c moves back to 6, its home; d to 0, its home; 1 empties
    for name, second in (("b", 2.0), ("c", 3.0), ("d", 4.0)):
        assert closed.get(name) == second
    # Each slot holds its name's position + 1 (a 1, b 2, c 3, d 4).
    assert [s & module._POSITION for s in closed._slots] == [4, 0, 0, 0, 0, 0, 3, 2]
    assert "a" not in closed
    closed.close("e", 5.0)  # home 7 is b's, 0 is d's: it takes 1
    closed.close("f", 6.0)  # five names in 8 slots: the table grows to 16
    assert len(closed._slots) == 16
    assert dict(closed.items()) == {"b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0, "f": 6.0}
    assert all(name in closed for name in "bcdef")


def test_a_name_costs_its_bytes_and_28_to_44_more() -> None:
    closed = ClosedNames()
    pool = names(100_000)
    for name in pool:
        closed.close(name, 1_000.0)
    text = sum(len(name) for name in pool)
    assert text + 28 * len(pool) <= closed.nbytes() <= text + 44 * len(pool)


def test_a_table_that_can_grow_no_more_fills_up_then_says_what_to_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "_HASH_BITS", 4)  # 16 slots at most
    monkeypatch.setattr(module, "_HASH", 15)
    monkeypatch.setattr(module, "_FIRST_SIZE", 8)
    closed = ClosedNames()
    for number in range(14):  # past half of 16: it stays at 16 slots
        closed.close(f"n{number}", 1.0)
    assert len(closed._slots) == 16
    assert all(f"n{number}" in closed for number in range(14))
    with pytest.raises(OverflowError, match=r"review\.ledger_retention_s"):
        closed.close("n14", 1.0)
