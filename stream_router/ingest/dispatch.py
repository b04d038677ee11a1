"""Every consumed record to exactly one disposition, appended to a sink (no I/O).

::

    accepted        result envelope     → output topic, keyed like the input
    review          review request      → review-requests topic, keyed by the human loop name
    dead letter     reason and source   → dead-letter topic, keyed like the input
    tombstone skip  nothing written, counted (``ingest.tombstones: skip``)

Dead letters by ``reason_class``: ``not_json``, ``not_object``, ``missing_field``, ``bad_type``,
``bad_value`` (the parser); ``tombstone`` (no value, with ``ingest.tombstones: dead_letter``);
``policy_error`` (a policy raised on it, against its contract); ``unencodable`` (parsed, but
nested too deep for orjson to encode what ingest writes from it); ``too_large`` (its envelope
or review request would exceed ``kafka.max_record_bytes``); ``undecodable`` (a stand-in for
records the Kafka client could not decode, see ``undecodable.py``).

Why exactly one: each record is parsed once, giving a prediction or a PoisonEvent (a dead
letter, or a tombstone to skip); the routes give each prediction one decision (a policy that
raises is isolated by deciding the batch's predictions one at a time, and the predictions it
raises on are dead letters); writing a decision appends its envelope or, when the envelope
cannot be encoded or is too large, a dead letter in its place. A dead letter always fits: when
it would exceed the limit it leaves out the original value, then the key (its other fields are
bounded: coordinates, a reason cut at 1,000 characters, the topic name), and it cannot fail to
encode (strings decoded from UTF-8, numbers, booleans). ``tests/unit/test_dispatch.py`` checks
the rule over arbitrary bytes with hypothesis.

The normal path does no more per event than before these guards: encoding errors are caught,
not prevented (a ``try`` costs nothing until it raises), and the size check is one comparison.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from stream_router.envelope import (
    UNDECODABLE,
    Omit,
    accepted_envelope,
    dead_letter,
    review_request,
    undecodable_dead_letter,
)
from stream_router.errors import PoisonEvent
from stream_router.ingest.parser import TOMBSTONE, EventParser
from stream_router.models import Prediction, SourceRef, new_tuple
from stream_router.naming import loop_name
from stream_router.policies.routes import Decision, Routes
from stream_router.settings import IngestSettings

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]

REASON_HEADER = "x-stream-router-reason-class"
#: Reasons are cut to this many characters in dead letters (a plugin's message could be long).
MAX_REASON_CHARS = 1000

POLICY_ERROR = "policy_error"
UNENCODABLE = "unencodable"
TOO_LARGE = "too_large"


class Sink(Protocol):
    """Where the records of a batch go (``BatchWriter``; a list in tests)."""

    def add(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None: ...


class Skipped(NamedTuple):
    """Offsets ``first_offset`` up to ``next_offset`` of a partition, given up as undecodable."""

    tp: TopicPartition
    first_offset: int
    next_offset: int
    reason: str


def _counter() -> Counter[tuple[str, ...]]:
    return Counter()


@dataclass
class Counts:
    """A batch's counts by metric labels."""

    consumed: Counter[tuple[str, ...]] = field(default_factory=_counter)  # (topic,)
    accepted: Counter[tuple[str, ...]] = field(default_factory=_counter)  # (policy,)
    review_requested: Counter[tuple[str, ...]] = field(default_factory=_counter)  # (route, policy)
    dead_lettered: Counter[tuple[str, ...]] = field(default_factory=_counter)  # (reason_class,)
    tombstones_skipped: Counter[tuple[str, ...]] = field(default_factory=_counter)  # (topic,)
    shadow_hits: Counter[tuple[str, ...]] = field(default_factory=_counter)  # (route, policy)


@dataclass
class BatchOutcome:
    """What one batch became (for metrics, tests and logs).

    ``consumed == accepted + review_requested + dead_lettered + tombstones_skipped``, where an
    undecodable range of offsets counts as one record.
    """

    consumed: int = 0
    accepted: int = 0
    review_requested: int = 0
    dead_lettered: int = 0
    tombstones_skipped: int = 0
    #: The offset to commit per partition: after the last record the batch handled.
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    #: Event timestamps of the batch's predictions (the events themselves are not kept).
    timestamps: list[float] = field(default_factory=list)


#: A record to dead-letter: where it came from, its value, why.
_Dead = tuple[SourceRef, bytes | None, PoisonEvent]


class Dispatcher:
    """Turns batches of records into dispositions on a sink; see the module docstring."""

    def __init__(
        self,
        settings: IngestSettings,
        max_record_bytes: int,
        routes: Routes,
        sink: Sink,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.max_record_bytes = max_record_bytes
        self.routes = routes
        self.sink = sink
        self.clock = clock
        self.parser = EventParser(settings.mapping)
        self._skip_tombstones = settings.tombstones == "skip"

    def dispatch(self, batch: Batch, skipped: Sequence[Skipped] = ()) -> BatchOutcome:
        """Append one disposition per record of ``batch`` (and a stand-in per ``skipped``)."""
        now = self.clock()
        outcome = BatchOutcome()
        counts = outcome.counts
        consumed = counts.consumed
        committed = outcome.committed
        predictions: list[Prediction] = []
        dead: list[_Dead] = []
        parse = self.parser.parse
        skip_tombstones = self._skip_tombstones
        for tp, records in batch.items():
            consumed[(tp.topic,)] += len(records)
            committed[tp] = records[-1].offset + 1
            for record in records:
                source = new_tuple(
                    SourceRef,
                    (record.topic, record.partition, record.offset, record.key, record.timestamp),
                )
                try:
                    predictions.append(parse(record.value, source))
                except PoisonEvent as poison:
                    if skip_tombstones and poison.reason_class == TOMBSTONE:
                        counts.tombstones_skipped[(record.topic,)] += 1
                    else:
                        dead.append((source, record.value, poison))
        predictions, decisions = self._decide(batch, predictions, dead)
        self._write(batch, predictions, decisions, dead, now=now, counts=counts)
        for skip in skipped:
            self._stand_in(skip, now, counts)
            committed[skip.tp] = max(committed.get(skip.tp, 0), skip.next_offset)
        counts.shadow_hits = self.routes.drain_shadow_hits()
        outcome.timestamps = [p.timestamp_s for p in predictions if p.timestamp_s is not None]
        outcome.consumed = sum(consumed.values())
        outcome.accepted = sum(counts.accepted.values())
        outcome.review_requested = sum(counts.review_requested.values())
        outcome.dead_lettered = sum(counts.dead_lettered.values())
        outcome.tombstones_skipped = sum(counts.tombstones_skipped.values())
        return outcome

    def _decide(
        self, batch: Batch, predictions: list[Prediction], dead: list[_Dead]
    ) -> tuple[list[Prediction], list[Decision]]:
        """The routes' decisions; a policy that raises costs only the predictions it raises on."""
        try:
            return predictions, self.routes.decide(predictions)
        except Exception as exc:  # a policy broke its contract: find the events it fails on
            logger.error(  # noqa: TRY400 - no traceback: its message may quote the event
                "a policy raised %s deciding a batch; deciding its %d predictions one at a time",
                type(exc).__name__,
                len(predictions),
            )
        self.routes.drain_shadow_hits()  # counted again below, one prediction at a time
        kept: list[Prediction] = []
        decisions: list[Decision] = []
        for prediction in predictions:
            try:
                (decision,) = self.routes.decide([prediction])
            except Exception as exc:
                reason = f"a policy raised {type(exc).__name__}: {exc}"
                raw = _raw_value(batch, prediction.source)
                dead.append((prediction.source, raw, PoisonEvent(POLICY_ERROR, reason)))
                continue
            kept.append(prediction)
            decisions.append(decision)
        return kept, decisions

    def _write(
        self,
        batch: Batch,
        predictions: Sequence[Prediction],
        decisions: Sequence[Decision],
        dead: list[_Dead],
        *,
        now: float,
        counts: Counts,
    ) -> None:
        settings = self.settings
        version = self.routes.version
        limit = self.max_record_bytes
        add = self.sink.add
        output, requests = settings.output_topic, settings.review_requests_topic
        accepted, reviewed = counts.accepted, counts.review_requested
        key: bytes | None
        for prediction, decision in zip(predictions, decisions, strict=True):
            try:
                if decision.review:
                    name = loop_name(prediction.event_id, version)
                    topic, key = requests, name.encode()
                    encoded = review_request(prediction, decision, version, name, now)
                else:
                    topic, key = output, prediction.source.key
                    encoded = accepted_envelope(prediction, decision, version, now)
            except orjson.JSONEncodeError as exc:
                dead.append(_spoiled(batch, prediction, decision, UNENCODABLE, detail=str(exc)))
                continue
            size = len(encoded) if key is None else len(encoded) + len(key)
            if size > limit:
                spoiled = _spoiled(
                    batch, prediction, decision, TOO_LARGE, detail=f"{size:,}", limit=limit
                )
                dead.append(spoiled)
                continue
            add(topic, key, encoded)
            if decision.review:
                reviewed[(decision.route or "", decision.policy)] += 1
            else:
                accepted[(decision.policy,)] += 1
        for source, value, poison in dead:
            self._dead_letter(source, value, poison, now)
            counts.dead_lettered[(poison.reason_class,)] += 1

    def _dead_letter(
        self, source: SourceRef, value: bytes | None, poison: PoisonEvent, now: float
    ) -> None:
        """Append the dead letter of a record, within the record limit (see the module doc)."""
        reason_class = poison.reason_class
        reason = _cut(str(poison))
        headers = [(REASON_HEADER, reason_class.encode())]
        budget = self.max_record_bytes - sum(len(k) + len(v) for k, v in headers)
        key = source.key
        key_size = 0 if key is None else len(key)
        record = b""
        for omit in (Omit.NOTHING, Omit.VALUE, Omit.VALUE_AND_KEY):
            if omit is Omit.NOTHING:
                if value is not None and len(value) + key_size > budget:
                    continue  # the whole cannot fit: do not build it
                text = reason
            else:
                if omit is Omit.VALUE and value is None:
                    continue
                if omit is Omit.VALUE_AND_KEY:
                    key, key_size = None, 0
                text = _cut(
                    f"{reason} (the original {omit.value} left out to keep the dead letter "
                    f"within kafka.max_record_bytes, {self.max_record_bytes:,})"
                )
            record = dead_letter(value, source, reason_class, text, now, omit=omit)
            if len(record) + key_size <= budget:
                break
        self.sink.add(self.settings.dead_letter_topic, key, record, headers)
        logger.warning(
            "dead-lettered %s[%d]@%d: %s",
            source.topic,
            source.partition,
            source.offset,
            reason_class,
        )

    def _stand_in(self, skip: Skipped, now: float, counts: Counts) -> None:
        tp = skip.tp
        value = undecodable_dead_letter(
            tp.topic,
            tp.partition,
            first_offset=skip.first_offset,
            next_offset=skip.next_offset,
            reason=_cut(skip.reason),
            failed_s=now,
        )
        headers = [(REASON_HEADER, UNDECODABLE.encode())]
        self.sink.add(self.settings.dead_letter_topic, None, value, headers)
        counts.consumed[(tp.topic,)] += 1
        counts.dead_lettered[(UNDECODABLE,)] += 1
        logger.error(
            "dead-lettered %s[%d]@%d-%d: %s",
            tp.topic,
            tp.partition,
            skip.first_offset,
            skip.next_offset - 1,
            UNDECODABLE,
        )


def _spoiled(
    batch: Batch,
    prediction: Prediction,
    decision: Decision,
    reason_class: str,
    *,
    detail: str,
    limit: int = 0,
) -> _Dead:
    """A decided prediction whose record cannot be written, as a dead letter instead."""
    what = f"review request (route {decision.route})" if decision.review else "accepted envelope"
    if reason_class == TOO_LARGE:
        reason = f"its {what} would be {detail} bytes, above kafka.max_record_bytes ({limit:,})"
    else:
        reason = (
            f"its {what} cannot be encoded ({detail}): the event nests deeper than orjson "
            "encodes (an event may nest 253 levels, 252 when it goes to review)"
        )
    source = prediction.source
    return source, _raw_value(batch, source), PoisonEvent(reason_class, reason)


def _raw_value(batch: Batch, source: SourceRef) -> bytes | None:
    """The value of the record at ``source`` (rare path: a decided prediction dead-lettered)."""
    records = batch[TopicPartition(source.topic, source.partition)]
    index = bisect.bisect_left(records, source.offset, key=lambda record: record.offset)
    record = records[index]
    assert record.offset == source.offset
    value: bytes | None = record.value
    return value


def _cut(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."
