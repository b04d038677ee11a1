"""A history of result envelopes, loaded into columns for the backtest.

The history is what the router published on its output topic (envelope v1, ``schema_version``
1): a JSONL file of envelopes, or the topic itself read over the wire (:func:`read_topic`).
Each record gives one row:

- ``label``, ``confidence``: the model's prediction;
- ``decision``: accepted, reviewed or unreviewed, and ``route``;
- ``propensity``: ``review_probability.total`` (revision 1.1). Records written before it have
  none: an accepted one counts as never reviewable (0) and a reviewed or unreviewed one as a
  certain review (1), which can only make the bounds more cautious (an audit read as a certain
  review leaves the accepted region around it without labels, so nothing there certifies);
- ``labelled``/``wrong``/``agreement``: a reviewed record whose people gave a label is
  labelled, wrong when they corrected the model (``review.corrected``); reviewers' answers count
  as truth.

Copies of one event (the review role may publish an outcome again after a crash, identical but
for its observation time) are kept once, the first seen, by event id. A line that is not an
envelope is skipped and counted by reason, never guessed at: a history is input like any other.
"""

from __future__ import annotations

import math
import sys
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson

#: Distinct model labels a history may have (a bound, not a realistic number).
MAX_LABELS: Final = 10_000
DECISIONS: Final = ("accepted", "reviewed", "unreviewed")


@dataclass
class History:
    """Columns of a history, one row per distinct event (see the module docstring)."""

    labels: list[str] = field(default_factory=list)  #: label names, by code
    label: array[int] = field(default_factory=lambda: array("i"))
    confidence: array[float] = field(default_factory=lambda: array("d"))
    decision: array[int] = field(default_factory=lambda: array("b"))  #: index in DECISIONS
    propensity: array[float] = field(default_factory=lambda: array("d"))
    labelled: array[int] = field(default_factory=lambda: array("b"))
    wrong: array[int] = field(default_factory=lambda: array("b"))
    agreement: array[float] = field(default_factory=lambda: array("d"))  #: NaN if unreviewed
    decided_s: array[float] = field(default_factory=lambda: array("d"))
    records: int = 0  #: lines or records read, including skipped ones
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  #: reason -> count
    #: Records decided before this time (epoch seconds) are left out: a window since the last
    #: change of the audit or the model (``--from`` a time on a file).
    since_s: float | None = None
    before_since: int = 0  #: records left out for ``since_s``
    without_probability: int = 0  #: records of revision 1.0

    _codes: dict[str, int] = field(default_factory=dict, repr=False)
    _seen: set[int] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.confidence)

    @property
    def span_days(self) -> float:
        """Days between the first and last decision (at least one hour, for rates per day)."""
        if not self.decided_s:
            return 0.0
        return max(max(self.decided_s) - min(self.decided_s), 3600.0) / 86400.0

    def add(self, raw: bytes) -> dict[str, Any] | None:
        """Read one record; returns the envelope when it is a new, valid one, else None."""
        self.records += 1
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.skipped["not JSON"] += 1
            return None
        problem = _problem(record)
        if problem is not None:
            self.skipped[problem] += 1
            return None
        if self.since_s is not None and record["timestamps"]["decided_s"] < self.since_s:
            self.before_since += 1
            return None
        identity = hash(record["event_id"])  # 64-bit: a collision in a million ids ~ 3e-8
        if identity in self._seen:
            self.duplicates += 1
            return None
        label_name = record["prediction"]["label"]
        code = self._codes.get(label_name)
        if code is None:
            if len(self.labels) >= MAX_LABELS:
                self.skipped[f"more than {MAX_LABELS} labels"] += 1
                return None
            code = self._codes[label_name] = len(self.labels)
            self.labels.append(label_name)
        self._seen.add(identity)
        decision = DECISIONS.index(record["decision"])
        review = record["review"]
        reviewed = decision == 1
        probability = record.get("review_probability")
        if probability is None:
            self.without_probability += 1
            total = 0.0 if decision == 0 else 1.0
        else:
            total = probability["total"]
        labelled = reviewed and review["label"] is not None
        self.label.append(code)
        self.confidence.append(record["prediction"]["confidence"])
        self.decision.append(decision)
        self.propensity.append(total)
        self.labelled.append(labelled)
        self.wrong.append(labelled and review["corrected"] is True)
        self.agreement.append(review["agreement"] if reviewed else math.nan)
        self.decided_s.append(record["timestamps"]["decided_s"])
        return record  # type: ignore[no-any-return]


def _problem(record: Any) -> str | None:  # noqa: PLR0911  (one check, one reason each)
    """Why ``record`` is not a result envelope the backtest can use, or None."""
    if not isinstance(record, dict) or record.get("schema_version") != 1:
        return "not a result envelope v1"
    if not isinstance(record.get("event_id"), str) or not record["event_id"]:
        return "no event_id"
    prediction = record.get("prediction")
    if not isinstance(prediction, dict) or not isinstance(prediction.get("label"), str):
        return "no prediction label"
    confidence = prediction.get("confidence")
    if not _unit(confidence):
        return "confidence not a number in [0, 1]"
    decision = record.get("decision")
    if decision not in DECISIONS:
        return "unknown decision"
    review = record.get("review")
    if decision == "accepted":
        if review is not None:
            return "accepted with a review"
    elif not isinstance(review, dict):
        return f"{decision} without a review object"
    elif decision == "reviewed" and (
        not isinstance(review.get("corrected"), bool) or not _unit(review.get("agreement"))
    ):
        return "reviewed without corrected and agreement"
    probability = record.get("review_probability")
    if probability is not None and (
        not isinstance(probability, dict) or not _unit(probability.get("total"))
    ):
        return "review_probability.total not a number in [0, 1]"
    timestamps = record.get("timestamps")
    if not isinstance(timestamps, dict) or not _finite(timestamps.get("decided_s")):
        return "no timestamps.decided_s"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unit(value: Any) -> bool:
    return _finite(value) and 0.0 <= value <= 1.0


class Progress:
    """A one-line progress report on ``out`` (rewritten in place on a terminal, else a line at
    most every ``every_s`` seconds)."""

    def __init__(
        self, what: str, total: int | None, out: TextIO = sys.stderr, every_s: float = 5.0
    ):
        self.what, self.total, self.out = what, total, out
        self.live = out.isatty()
        self.every_s = 0.2 if self.live else every_s
        self._last = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.every_s:
            return
        self._last = now
        share = f" ({done / self.total:.0%})" if self.total else ""
        total = f" of {self.total:,}" if self.total is not None else ""
        text = f"{self.what}: {done:,}{total}{share}"
        if self.live:
            self.out.write("\r" + text + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


def read_lines(
    lines: Iterable[bytes], sink: Callable[[bytes], object], progress: Progress | None = None
) -> int:
    """Feed each non-blank line to ``sink``; returns the bytes read."""
    read = 0
    for number, line in enumerate(lines, start=1):
        read += len(line)
        if line.strip():
            sink(line)
        if progress is not None and number % 4096 == 0:
            progress.update(read)
    if progress is not None:
        progress.update(read, final=True)
    return read


async def read_topic(
    client_options: dict[str, Any],
    topic: str,
    sink: Callable[[bytes], object],
    *,
    start: int | str = "earliest",
    progress: Callable[[str, int | None], Progress] | None = None,
) -> int:
    """Feed ``topic``'s record values to ``sink``, from ``start`` (``"earliest"``, an offset
    in every partition, or ``"@<epoch ms>"`` for a time) up to the end offsets it had when
    reading began (raised to a fetch's high watermark when that is higher: on Tansu the end
    offset can leave out a partition's newest batch); returns how many records were read.
    Assigned directly: no group, nothing committed."""
    count = 0
    bar: Progress | None = None
    async for values, total in _records(client_options, topic, start):
        if progress is not None and bar is None:
            bar = progress(f"read from {topic}", total)
        if bar is not None:
            bar.total = total  # raised when a fetch's high watermark is above the end offset
        for value in values:
            if value is not None:
                sink(value)
        count += len(values)
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.update(count, final=True)
    return count


async def _records(
    client_options: dict[str, Any], topic: str, start: int | str
) -> AsyncIterator[tuple[list[bytes | None], int]]:
    from stream_router.records import assigned_consumer  # noqa: PLC0415

    async with assigned_consumer(client_options, topic) as (consumer, partitions):
        ends = await consumer.end_offsets(partitions)
        firsts = await consumer.beginning_offsets(partitions)
        starts = await _starts(consumer, partitions, firsts, ends, start)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        total = sum(max(0, ends[tp] - starts[tp]) for tp in partitions)
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        yield [], total
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            values: list[bytes | None] = []
            for tp, records in batch.items():
                values.extend(record.value for record in records)
                # A fetch's high watermark can be above ListOffsets' end offset (Tansu).
                end = max(ends[tp], consumer.highwater(tp) or 0)
                total += end - ends[tp]
                ends[tp] = end
                if await consumer.position(tp) >= end:
                    remaining.discard(tp)
            yield values, total


async def _starts(
    consumer: Any,
    partitions: list[Any],
    firsts: dict[Any, int],
    ends: dict[Any, int],
    start: int | str,
) -> dict[Any, int]:
    if start == "earliest":
        return dict(firsts)
    if isinstance(start, int):
        return {tp: min(max(start, firsts[tp]), ends[tp]) for tp in partitions}
    if isinstance(start, str) and start.startswith("@"):
        found = await consumer.offsets_for_times({tp: int(start[1:]) for tp in partitions})
        return {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in partitions}
    raise ValueError(f"start {start!r}: earliest, an offset, or @<epoch ms>")
