"""Ledger entries: the one wire format, every state round-trips, and what does not decode."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from stream_router.review.audit import AuditSample
from stream_router.review.ledger import (
    BUDGET_KEY,
    CorruptLedger,
    End,
    PartitionLedger,
    State,
    decode,
    encode,
    pending,
)
from tests.unit.review.requests import review_request

NOW = 1_700_000_000.0


def test_every_state_round_trips() -> None:
    entry = pending(review_request("e1"), NOW)
    started = entry.moved(State.STARTED, NOW + 1, started_s=NOW + 1, deadline_s=NOW + 99)
    ended = started.moved(State.ENDED, NOW + 2, end=End("Completed", "s3://b/k", source="s3"))
    escalated = ended.moved(State.ESCALATED, NOW + 3, attempt=2, flow="fd-experts", end=None)
    held = entry.moved(State.HELD, NOW + 4, due_s=NOW + 3600)
    closed = ended.moved(State.CLOSED, NOW + 5, outcome="reviewed")
    for each in (entry, started, ended, escalated, held, closed):
        assert decode(encode(each)) == each
    assert closed.request is None  # a closed entry drops its request
    assert escalated.name == f"{entry.first_name}-a2"
    assert [s.open for s in State] == [False, False, True, True, False, False]


def test_the_sent_mark_round_trips_stays_with_its_attempt_and_is_assumed_when_absent() -> None:
    entry = pending(review_request("e1"), NOW)
    assert not entry.sent  # recorded: no start sent yet
    marked = dataclasses.replace(entry, sent=True)
    assert decode(encode(marked)).sent
    started = marked.moved(State.STARTED, NOW + 1, started_s=NOW + 1, deadline_s=NOW + 99)
    ended = started.moved(State.ENDED, NOW + 2, end=End("Failed", None, source="s3"))
    assert ended.sent
    escalated = ended.moved(State.ESCALATED, NOW + 3, attempt=2, flow="fd-experts", end=None)
    assert not escalated.sent  # the next attempt's name was never sent
    assert marked.moved(State.HELD, NOW + 4, due_s=NOW + 3600).sent
    written_before = orjson.loads(encode(entry))
    del written_before["sent"]  # by a version without the mark: its start may have been sent
    assert decode(orjson.dumps(written_before)).sent


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{not json", "does not decode"),
        (b'{"v": 1, "closed": true}', "ledger format 1"),
        (b'{"v": 2, "state": "started"}', "does not decode"),
    ],
)
def test_a_record_that_does_not_decode_is_an_error_naming_why(value: bytes, message: str) -> None:
    with pytest.raises(CorruptLedger, match=message):
        decode(value)


def test_an_open_entry_without_its_request_is_corrupt() -> None:
    entry = pending(review_request("e1"), NOW)
    data = orjson.loads(encode(entry))
    data["request"] = None
    with pytest.raises(CorruptLedger, match="without a request"):
        decode(orjson.dumps(data))


def test_a_closed_entry_is_kept_as_its_name_and_time_with_its_sample_until_deleted() -> None:
    ledger = PartitionLedger(0, next_offset=0)
    entry = pending(review_request("e1"), NOW)
    ledger.apply(entry.first_name, encode(entry))
    sample = AuditSample(1, "1", "general", "cat", True)
    closed = dataclasses.replace(entry.moved(State.CLOSED, NOW + 5, outcome="reviewed"),
                                 audit=sample)  # fmt: skip
    ledger.apply(entry.first_name, encode(closed))
    assert ledger.entries == {}
    assert dict(ledger.closed.items()) == {entry.first_name: NOW + 5}
    assert ledger.samples == {entry.first_name: sample}
    assert ledger.knows(entry.first_name)
    ledger.apply(entry.first_name, None)
    assert (len(ledger.closed), ledger.samples) == (0, {})
    assert not ledger.knows(entry.first_name)


def test_reading_a_closed_record_takes_only_what_a_closed_entry_is_and_checks_that() -> None:
    """A takeover reads a week of CLOSED records: their name, time and sample are taken without
    building the entry (the rest of the record is not needed, so not required); a closed record
    without those is corrupt, as is one in another state that does not decode."""
    sample = AuditSample(1, "1", "general", "cat", True)
    closed = pending(review_request("e1"), NOW).moved(State.CLOSED, NOW + 5, outcome="reviewed")
    slim = {"v": 2, "first_name": closed.first_name, "state": "closed", "since_s": NOW + 5,
            "audit": sample.to_json()}  # fmt: skip
    read, built = PartitionLedger(0, next_offset=0), PartitionLedger(0, next_offset=0)
    read.apply(closed.first_name, orjson.dumps(slim))
    built.put(dataclasses.replace(closed, audit=sample))
    assert (list(read.closed.items()), read.entries) == (list(built.closed.items()), {})
    assert read.samples == {closed.first_name: sample}
    for broken, why in (
        ({**slim, "since_s": "soon"}, "without its name or time"),
        ({**slim, "first_name": 7}, "without its name or time"),
        ({k: v for k, v in slim.items() if k != "since_s"}, "without its name or time"),
        ({**slim, "audit": {"number": "x"}}, "its audit sample"),
        ({**slim, "v": 1}, "ledger format 1"),
        ({**slim, "state": "started"}, "does not decode"),
    ):
        with pytest.raises(CorruptLedger, match=why):
            PartitionLedger(0, next_offset=0).apply(closed.first_name, orjson.dumps(broken))
    for not_an_object in (b"[1, 2]", b"null", b"{not json"):
        with pytest.raises(CorruptLedger):
            PartitionLedger(0, next_offset=0).apply("e1", not_an_object)


def test_closing_times_are_kept_to_the_second_above() -> None:
    """Pruning never comes early (a time rounds up)."""
    ledger = PartitionLedger(0, next_offset=0)
    for name, closed_s in (("e1", NOW + 0.2), ("e2", NOW + 0.9), ("e3", NOW + 1.5)):
        entry = pending(review_request(name), NOW).moved(State.CLOSED, closed_s, outcome="x")
        ledger.put(entry)
    times = [second for _, second in ledger.closed.items()]
    assert times == [NOW + 1, NOW + 1, NOW + 2]
    first, second, _ = ledger.closed
    assert ledger.oldest_closed() == (first, NOW + 1)
    ledger.apply(first, None)  # a tombstone: pruned, by this owner or an earlier one
    assert ledger.oldest_closed() == (second, NOW + 1)


def test_a_partition_applies_records_in_order_and_tombstones_delete() -> None:
    ledger = PartitionLedger(0, next_offset=0)
    entry = pending(review_request("e1"), NOW)
    ledger.apply(entry.first_name, encode(entry))
    ledger.apply(BUDGET_KEY, orjson.dumps({"general": {"hour_spent": 1}}))
    assert ledger.entries[entry.first_name] == entry
    assert ledger.budget == {"general": {"hour_spent": 1}}
    ledger.apply(entry.first_name, None)
    assert ledger.entries == {}
