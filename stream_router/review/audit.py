"""The request audit: finds review requests whose offset was committed but that were never handled.

faust-streaming (0.15.3) can commit the review application's offsets past review requests no
agent handled, and Kafka never delivers those again:

- records fetched while a worker finishes recovering its tables (after a restart or a
  rebalance) can be dropped before they reach the agent (faust-streaming issue #596);
- its commit accepts a hole of one offset at the head of a partition, so with several actors a
  request still being started is committed past as soon as the one after it is done; a crash
  before the start finishes leaves it behind the committed offset.

Every request the review path handles leaves a ledger entry before its offset can be committed
(an open review, a held request or a closed outcome), and faust flushes the ledger's changelog
before each commit. So, for each review-requests partition this instance owns, the audit
re-reads the records between its watermark and the application's committed offset and re-sends
to review-requests each one whose review has no ledger entry and that no actor has in hand. A
copy is handled like any request: the ledger turns a second copy into a no-op, and a review
started already is found under its name by the backend (never started twice).

The watermark is the audit's own consumer group (``<app_id>-audit``, offsets only, it never
joins). It passes a record once the record has a ledger entry or a copy of it was sent, and it
stops at the first record an actor still has in hand: that one is checked again on the next
sweep, since a crash before it finishes would leave it behind. Every sweep commits it, changed
or not, so the broker never expires it (offsets of a group without members expire after
``offsets.retention.minutes``). Without a watermark the audit starts at the beginning of the
partition: closed ledger entries are kept, so handled requests are recognised however old they
are.

A record that is not a review request (not JSON, no ``loop_name``) is skipped: the agent that
met it died and said so (see ``review/supervision.py``); the audit does not resend it. A record
older than the ledger's retention (``review.ledger_retention_s``) is skipped too: its entry may
have been deleted since, and re-sending it would start a finished review again.
"""

from __future__ import annotations

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
    a copy to review-requests and returns once it is acknowledged. Records older than
    ``max_age_s`` (the ledger's retention) are not judged. ``paused()`` says the ledger
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
        self.max_age_s = max_age_s
        self.max_sweep_s = max_sweep_s
        self.clock = clock
        self.monotonic = monotonic
        self.kafka = kafka
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._sweeps = 0

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

        A sweep reads for at most ``max_sweep_s`` in all (so its caller's heartbeat holds
        whatever the backlog); what is left waits for the next sweep, the watermark keeping the
        place. Each sweep begins one partition further on, so a partition with a long backlog
        does not starve the others.
        """
        if self._admin is None:
            raise RuntimeError("RequestAudit.sweep before start()")
        if not partitions:
            return 0
        first = self._sweeps % len(partitions)
        self._sweeps += 1
        tps = [TopicPartition(self.topic, p) for p in [*partitions[first:], *partitions[:first]]]
        offsets = await self._admin.list_consumer_group_offsets(self.group, partitions=tps)
        deadline = self.monotonic() + self.max_sweep_s
        sent = 0
        for tp in tps:
            committed = offsets.get(tp)
            if committed is None or committed.offset < 0:
                continue  # the application has committed nothing here: nothing to audit yet
            if self.monotonic() >= deadline:
                break
            sent += await self._sweep_partition(tp, committed.offset, deadline)
        return sent

    async def _sweep_partition(self, tp: TopicPartition, target: int, deadline: float) -> int:
        consumer = self._consumer
        assert consumer is not None  # started: sweep checks
        consumer.assign([tp])
        start = await consumer.committed(tp)
        if start is None:
            start = (await consumer.beginning_offsets([tp]))[tp]
        if start >= target:
            await consumer.commit({tp: start})  # unchanged: refreshed so it never expires
            return 0
        not_before_ms = int((self.clock() - self.max_age_s) * 1000)
        scan = Scan(start, target, self.known, self.in_hand, not_before_ms)
        consumer.seek(tp, start)
        while not scan.done and self.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS)
            scan.feed(batches.get(tp, []))
            scan.skip_to(await consumer.position(tp))
        if self.paused():
            return 0
        for record in scan.missing:
            await self.resend(record.key, record.value or b"")
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
        await consumer.commit({tp: scan.watermark})
        return len(scan.missing)
