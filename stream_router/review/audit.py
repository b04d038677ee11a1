"""The request audit: finds review requests whose offset was committed but that were never handled.

faust-streaming (0.15.3) can commit the review application's offsets past review requests no
agent handled, and Kafka never delivers those again:

- records fetched while a worker finishes recovering its tables (after a restart or a
  rebalance) can be dropped before they reach the agent (faust-streaming issue #596);
- its commit checks the head of a partition loosely (a hole of one offset passes, and on a
  partition with no commit yet any hole does), so with several actors a request still being
  handled is committed past as soon as later ones are done; a crash before it finishes leaves
  it behind the committed offset.

Every request the review path handles leaves a ledger entry (an open review, a held request or
a closed outcome) before its offset is committed, or is still in an actor's hands when faust
commits past it; faust flushes the ledger's changelog before each commit, and the audit flushes
it before it moves its watermark. So, for each review-requests partition this instance owns, the
audit re-reads the records between its watermark and the application's committed offset and
re-sends to review-requests each one whose review has no ledger entry and that no actor has in
hand. A
copy is handled like any request: the ledger turns a second copy into a no-op, and a review
started already is found under its name by the backend (never started twice).

The watermark is the audit's own consumer group (``<app_id>-audit``, offsets only, it never
joins). It passes a record once the record has a ledger entry or a copy of it was sent, and it
stops at the first record an actor still has in hand: that one is checked again on the next
sweep, since a crash before it finishes would leave it behind (a request waiting for room
among the reviews in flight, ``review.max_in_flight``, holds the watermark of its partition that
long). Every sweep commits it, changed or not, so the broker never expires it (offsets of a group
without members expire after ``offsets.retention.minutes``). Without a watermark the audit
starts at the beginning of the partition.

A record that is not a review request (not JSON, no ``loop_name``) is skipped: the agent that
met it died and said so (see ``review/supervision.py``); the audit does not resend it. A record
older than the ledger's retention (``review.ledger_retention_s``) is skipped too: its entry may
have been deleted since, and re-sending it would start a finished review again. The review app
passes nine tenths of that retention: ingest's clock stamps the records, this process's clock
deletes entries, and the spare tenth covers a skew between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_router.settings import KafkaSettings

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 500
MAX_FETCH_RECORDS = 2_000


class Record(Protocol):
    """What the audit reads of a review-requests record (aiokafka's ConsumerRecord has it)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...  # epoch milliseconds
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass
class Scan:
    """The audit of one partition's records, fed batch by batch (:meth:`feed`).

    ``known(name)`` says whether the review named ``name`` has a ledger entry; ``in_hand(name)``
    whether an actor of this process is handling its request now. Records written before
    ``not_before_ms`` are passed unjudged: their ledger entries may have been deleted after
    their retention, so a missing entry proves nothing there.
    """

    watermark: int
    target: int
    known: Callable[[str], bool]
    in_hand: Callable[[str], bool]
    not_before_ms: int = 0
    missing: list[Record] = field(default_factory=list)
    unreadable: int = 0
    too_old: int = 0
    blocked: bool = False  #: stopped at a record still in hand

    @property
    def done(self) -> bool:
        return self.blocked or self.watermark >= self.target

    def feed(self, records: Iterable[Record]) -> None:
        """Audit ``records`` (in offset order, from the watermark on) up to the target."""
        for record in records:
            if self.done:
                return
            if record.offset < self.watermark:
                continue
            if record.offset >= self.target:
                self.watermark = self.target
                return
            name = _loop_name(record.value)
            if record.timestamp < self.not_before_ms:
                self.too_old += 1
            elif name is None:
                self.unreadable += 1
            elif not self.known(name):
                if self.in_hand(name):
                    self.blocked = True
                    return
                self.missing.append(record)
            self.watermark = record.offset + 1

    def skip_to(self, position: int) -> None:
        """Nothing is stored below ``position`` (compacted or deleted): move past it."""
        if not self.blocked:
            self.watermark = max(self.watermark, min(position, self.target))


def _loop_name(value: bytes | None) -> str | None:
    try:
        request = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    name = request.get("loop_name") if isinstance(request, dict) else None
    return name if isinstance(name, str) and name else None


Resend = Callable[[bytes | None, bytes], Awaitable[None]]


class RequestAudit:
    """Sweeps owned review-requests partitions for requests never handled; see the module doc.

    ``group`` is the review application's consumer group (whose committed offsets bound the
    sweep); the watermark lives in the group ``group + "-audit"``. ``resend(key, value)`` sends
    a copy to review-requests and returns once it is acknowledged (the copies of a sweep are
    sent together); ``flush()`` returns once
    every ledger change written so far is acknowledged. Records older than ``max_age_s`` (less
    than the ledger's retention) are not judged. ``paused()`` says the ledger
    is not whole (a rebalance or table recovery began): the sweep then stops before re-sending
    anything and leaves the watermark where it was.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        group: str,
        *,
        known: Callable[[str], bool],
        in_hand: Callable[[str], bool],
        resend: Resend,
        flush: Callable[[], Awaitable[None]],
        max_age_s: float,
        paused: Callable[[], bool] = lambda: False,
        max_sweep_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.group = group
        self.known = known
        self.in_hand = in_hand
        self.resend = resend
        self.paused = paused
        self.flush = flush
        self.max_age_s = max_age_s
        self.max_sweep_s = max_sweep_s
        self.clock = clock
        self.monotonic = monotonic
        self.kafka = kafka
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect (aiokafka clients are made inside the running loop)."""
        options = self.kafka.client_options()
        self._admin = AIOKafkaAdminClient(**options)
        self._consumer = AIOKafkaConsumer(
            group_id=f"{self.group}-audit",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=MAX_FETCH_RECORDS,
            **options,
        )
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def sweep(self, partitions: Sequence[int]) -> int:
        """Audit ``partitions`` (owned by this instance); returns how many copies were sent.

        The partitions are read together, for at most ``max_sweep_s`` in all (so the caller's
        heartbeat holds whatever the backlog); what is left waits for the next sweep, the
        watermark keeping the place.
        """
        consumer, admin = self._consumer, self._admin
        if consumer is None or admin is None:
            raise RuntimeError("RequestAudit.sweep before start()")
        if not partitions:
            return 0
        tps = [TopicPartition(self.topic, p) for p in partitions]
        committed = await admin.list_consumer_group_offsets(self.group, partitions=tps)
        targets = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        if not targets:
            return 0  # the application has committed nothing: nothing to audit yet
        consumer.assign(list(targets))
        not_before_ms = int((self.clock() - self.max_age_s) * 1000)
        scans: dict[TopicPartition, Scan] = {}
        for tp, target in targets.items():
            # No watermark yet: offset 0; a fetch below the log's start moves to it (earliest).
            start = await consumer.committed(tp) or 0
            scans[tp] = Scan(start, target, self.known, self.in_hand, not_before_ms)
            consumer.seek(tp, start)
        deadline = self.monotonic() + self.max_sweep_s
        reading = [tp for tp, scan in scans.items() if not scan.done]
        consumer.pause(*(tp for tp in scans if tp not in reading))
        while reading and self.monotonic() < deadline:
            batches = await consumer.getmany(*reading, timeout_ms=FETCH_TIMEOUT_MS)
            for tp in list(reading):
                scans[tp].feed(batches.get(tp, []))
                scans[tp].skip_to(await consumer.position(tp))
                if scans[tp].done:
                    reading.remove(tp)
                    consumer.pause(tp)
        if self.paused():
            return 0
        missing = [record for scan in scans.values() for record in scan.missing]
        await asyncio.gather(*(self.resend(r.key, r.value or b"") for r in missing))
        for tp, scan in scans.items():
            _report(tp, scan)
        # Entries seen in the ledger may still be on their way to its changelog (a request
        # committed past while in hand): once the watermark passes them, they must survive a
        # crash. And the watermark is committed every sweep, changed or not, so the broker
        # never expires it.
        await self.flush()
        await consumer.commit({tp: scan.watermark for tp, scan in scans.items()})
        return sum(len(scan.missing) for scan in scans.values())


def _report(tp: TopicPartition, scan: Scan) -> None:
    if scan.unreadable:
        logger.warning(
            "audit of %s: %d record(s) are not review requests; skipped", tp, scan.unreadable
        )
    if scan.too_old:
        logger.info(
            "audit of %s: %d record(s) older than the ledger's retention were not checked",
            tp,
            scan.too_old,
        )
    if scan.missing:
        logger.warning(
            "audit of %s: %d review request(s) were committed but never handled; re-sent",
            tp,
            len(scan.missing),
        )
