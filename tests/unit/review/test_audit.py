"""The request audit's scan: what it re-sends and how far its watermark moves."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from stream_router.review.audit import Scan


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 1_700_000_000_000


def request(offset: int, name: str) -> Rec:
    return Rec(offset, name.encode(), b'{"loop_name": "%s", "route": "r"}' % name.encode())


def scan(
    start: int, target: int, ledger: set[str], in_hand: AbstractSet[str] = frozenset()
) -> Scan:
    return Scan(start, target, ledger.__contains__, in_hand.__contains__)


def test_requests_without_a_ledger_entry_are_missing_and_the_watermark_reaches_the_target() -> None:
    audit = scan(0, 4, ledger={"a", "c"})
    audit.feed([request(0, "a"), request(1, "b"), request(2, "c"), request(3, "d")])
    assert [r.offset for r in audit.missing] == [1, 3]
    assert audit.watermark == 4
    assert audit.done


def test_records_at_or_past_the_committed_offset_are_left_to_the_agent() -> None:
    audit = scan(0, 2, ledger=set())
    audit.feed([request(0, "a"), request(1, "b"), request(2, "c"), request(3, "d")])
    assert [r.offset for r in audit.missing] == [0, 1]
    assert audit.watermark == 2


def test_a_request_in_hand_stops_the_watermark_and_nothing_after_it_is_sent() -> None:
    audit = scan(5, 9, ledger={"a"}, in_hand={"c"})
    audit.feed([request(5, "a"), request(6, "b"), request(7, "c"), request(8, "d")])
    assert [r.offset for r in audit.missing] == [6]
    assert audit.watermark == 7  # the next sweep looks at offset 7 again
    assert audit.blocked
    assert audit.done
    audit.skip_to(9)
    assert audit.watermark == 7


def test_records_below_the_watermark_are_ignored() -> None:
    audit = scan(3, 5, ledger=set())
    audit.feed([request(2, "old"), request(3, "a"), request(4, "b")])
    assert [r.offset for r in audit.missing] == [3, 4]


def test_records_that_are_not_review_requests_are_counted_and_passed() -> None:
    audit = scan(0, 4, ledger=set())
    audit.feed(
        [
            Rec(0, b"k", b"{broken"),
            Rec(1, b"k", None),
            Rec(2, b"k", b'{"x": 1}'),
            Rec(3, b"k", b"[]"),
        ]
    )
    assert audit.missing == []
    assert audit.unreadable == 4
    assert audit.watermark == 4


def test_skip_to_moves_past_offsets_with_no_record_but_never_past_the_target() -> None:
    audit = scan(0, 10, ledger=set())
    audit.skip_to(4)  # compacted or deleted below 4
    assert audit.watermark == 4
    audit.skip_to(2)
    assert audit.watermark == 4
    audit.skip_to(50)
    assert audit.watermark == 10
    assert audit.done


def test_batches_continue_where_the_last_one_ended() -> None:
    audit = scan(0, 6, ledger={"b"})
    audit.feed([request(0, "a"), request(1, "b")])
    assert not audit.done
    audit.feed([request(2, "c")])
    audit.skip_to(5)  # offsets 3 and 4 hold no record
    audit.feed([request(5, "f")])
    assert [r.offset for r in audit.missing] == [0, 2, 5]
    assert audit.watermark == 6


@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40),
    st.integers(min_value=0, max_value=45),
)
def test_every_record_below_the_watermark_is_known_or_sent(
    flags: list[tuple[bool, bool]], target: int
) -> None:
    """The invariant the module promises, for any mix of known, in-hand and missing records."""
    records = [request(i, f"n{i}") for i in range(len(flags))]
    known = {f"n{i}" for i, (is_known, _) in enumerate(flags) if is_known}
    in_hand = {f"n{i}" for i, (_, held) in enumerate(flags) if held}
    audit = scan(0, target, known, in_hand)
    audit.feed(records)
    sent = {r.offset for r in audit.missing}
    for record, (is_known, held) in zip(records, flags, strict=True):
        if record.offset < audit.watermark:
            assert is_known or record.offset in sent
        if record.offset in sent:
            assert not is_known
            assert not held
            assert record.offset < target
    stop = next((i for i, (k, h) in enumerate(flags) if i < target and not k and h), None)
    if stop is not None:
        assert audit.watermark == stop
    else:
        assert audit.watermark == min(target, len(flags))


def test_records_older_than_the_ledger_retention_are_passed_unjudged() -> None:
    """Their ledger entries may be gone: re-sending them would start finished reviews again."""
    old = [Rec(r.offset, r.key, r.value, timestamp=1_000) for r in (request(0, "a"),)]
    audit = Scan(0, 3, set[str]().__contains__, set[str]().__contains__, not_before_ms=5_000)
    audit.feed([*old, request(1, "b"), Rec(2, b"k", b"{broken", timestamp=1_000)])
    assert [r.offset for r in audit.missing] == [1]
    assert audit.too_old == 2
    assert audit.watermark == 3
