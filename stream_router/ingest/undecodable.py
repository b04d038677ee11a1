"""Record batches the Kafka client cannot decode: where they are, and what a failed fetch took.

aiokafka decodes fetched record batches lazily, inside ``getmany``. A batch it cannot read (CRC
mismatch, corrupt compressed data, an unknown codec, a malformed record or header) raises out of
``getmany`` whatever the exception (``CorruptRecordException``, ``UnsupportedCodecError``,
``zlib.error``, ``cramjam.DecompressionError``, ``UnicodeDecodeError``, ...), and:

- names neither the partition nor the offset, and gives no API to ask;
- leaves the partition's position where the fetch began, so the next ``getmany`` fetches the
  same batch and raises again: the partition never moves, however often the process restarts;
- drops the records the same call had already taken, from other partitions and from the bad
  partition before the bad batch: their positions moved past them (at-least-once is lost if the
  caller just carries on).

All of that is still in the frames of the exception's traceback (aiokafka 0.11 to 0.14):
``Fetcher.fetched_records`` holds ``drained`` (records taken from other partitions),
``FetchResult.getall`` holds ``ret_list`` (the bad partition's records before the failure) and
the ``PartitionRecords._unpack_records`` generator holds ``tp``, ``next_batch`` (the batch being
read: ``base_offset``, ``next_offset``) and ``self.next_fetch_offset`` (the first offset not yet
returned). :func:`locate` reads them; ``tests/unit/test_undecodable.py`` drives aiokafka's own
fetcher over broken batches, so an aiokafka release that changes them fails a test rather than
production.

What ingest does with it (``loop.py``): when the bad batch's extent is known and the codec is
not merely missing from this installation, it returns the taken records, seeks past the batch
and dead-letters a stand-in (reason_class ``undecodable``, the offsets, the error); otherwise it
raises :class:`~stream_router.errors.UndecodableRecords` naming the partition and offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka import codec as codecs
from aiokafka.consumer.fetcher import PartitionRecords

#: Compression codec ids of Kafka record batches (``aiokafka.codec.has_<name>`` says whether
#: this installation can decode them).
_CODECS = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class Undecodable(NamedTuple):
    """Where a fetch failed, and what it had taken before it did."""

    tp: TopicPartition
    #: The first offset of the partition not returned (the failure is at or after it).
    position: int
    #: The offset after the bad batch (None: unknown, the batch framing itself is broken).
    next_offset: int | None
    #: Set when the batch uses a codec this installation lacks (e.g. "snappy").
    missing_codec: str | None
    #: Records the failed call had taken and not returned, by partition (in order).
    taken: dict[TopicPartition, list[ConsumerRecord]]
    #: Whether ``taken`` is known to be complete (the frames holding it were found).
    taken_known: bool

    @property
    def skippable(self) -> bool:
        """Whether ingest may step past the bad batch: its extent is known, every record the
        call took is recovered, and the cause is the data, not this installation."""
        return self.next_offset is not None and self.taken_known and self.missing_codec is None


def locate(error: BaseException) -> Undecodable | None:
    """Where ``error``, raised by ``AIOKafkaConsumer.getmany``, met an undecodable batch.

    None when it did not come from decoding records (a broker or coordination error, ...).
    """
    generator: Any = None
    drained: Any = None
    ret_list: Any = None
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        name = frame.f_code.co_name
        if name == "fetched_records":
            drained = frame.f_locals.get("drained")
        elif name == "getall":
            ret_list = frame.f_locals.get("ret_list")
        elif name == "_unpack_records" and isinstance(frame.f_locals.get("self"), PartitionRecords):
            generator = frame.f_locals
        traceback = traceback.tb_next
    if generator is None:
        return None
    records: PartitionRecords = generator["self"]
    tp = generator.get("tp")
    if not isinstance(tp, TopicPartition):
        return None
    position = records.next_fetch_offset
    batch = generator.get("next_batch")
    next_offset: int | None = None
    missing: str | None = None
    # ``next_batch`` is stale when the framing of the next batch failed before it was read:
    # then the position is already past it.
    batch_end = getattr(batch, "next_offset", None)
    if isinstance(batch_end, int) and batch_end > position:
        next_offset = batch_end
        # Legacy (v0, v1) message sets do not expose their codec.
        codec = _CODECS.get(getattr(batch, "compression_type", 0))
        if codec is not None and not getattr(codecs, f"has_{codec}")():
            missing = codec
    taken, known = _taken(tp, drained, ret_list)
    return Undecodable(tp, position, next_offset, missing, taken, known)


def _taken(
    tp: TopicPartition, drained: Any, ret_list: Any
) -> tuple[dict[TopicPartition, list[ConsumerRecord]], bool]:
    if not isinstance(drained, Mapping) or not isinstance(ret_list, list):
        return {}, False
    taken = {
        part: list(records)
        for part, records in drained.items()
        if isinstance(part, TopicPartition) and records
    }
    if ret_list:
        taken[tp] = list(ret_list)
    every = [record for records in taken.values() for record in records]
    return taken, all(isinstance(record, ConsumerRecord) for record in every)


def describe(error: BaseException, where: Undecodable) -> str:
    """A one-line description of the failure, for logs, dead letters and the fatal error."""
    span = (
        f"offsets {where.position} to {where.next_offset - 1}"
        if where.next_offset is not None
        else f"offset {where.position} (the batch's extent is unreadable)"
    )
    text = f"{type(error).__name__}: {error}".strip()
    return f"records of {where.tp.topic}[{where.tp.partition}] at {span} cannot be decoded ({text})"
