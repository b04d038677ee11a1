"""The names of one partition's closed reviews, kept compactly.

A week of closed reviews is most of what a review instance holds (``review.ledger_retention_s``):
at 10 reviews a second, 6 million names a partition. Kept as a dict of ``str``, a name cost
133 bytes; here it costs its UTF-8 bytes and 28 to 44 more (``tests/bench/bench_takeover.py``
prints both).

What is asked of them, and what answers it:

- **Is this name closed?** (``name in closed``): a copy of a request finds its review closed
  and starts nothing. The answer is exact: the hash only leads to a candidate, and the
  candidate's name is compared whole (a wrong "closed" would drop a new request's prediction; a
  wrong "not closed" would pay for a second review).
- **When did it close?** (:meth:`ClosedNames.get`), to the second.
- **Which closed first?** (:meth:`ClosedNames.oldest`): pruning deletes in closing order.
- A name leaves (:meth:`ClosedNames.discard`) when it is pruned or a later record of it is read.
  A name closed again while it is closed keeps its first place and takes the later second (so
  it, and those after it, are pruned late, never early).

The layout:

- **The names**, in closing order, in blocks of :data:`BLOCK`: a block keeps its names' bytes
  end to end (``data``, each ending at ``ends[i]``) and their closing seconds (a name discarded
  is only marked, its second made negative). A name's position is its block's number times
  :data:`BLOCK` plus its place there. A block leaves from the front once every name in it is
  gone (pruning deletes from the front).
- **The index**: an open-addressing table (linear probing, at most half full) of 64-bit slots,
  each holding 28 bits of the name's hash above its position plus one (0: empty). The slot a
  name starts from is those 28 bits masked to the table's size, so growing the table and
  closing the gap a deletion leaves need only the slots, never the names. A lookup compares the
  28 bits first and decodes a name only when they match.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

#: Names a block holds (a power of two: a position's block is a shift away).
BLOCK_BITS = 16
BLOCK = 1 << BLOCK_BITS
_POSITION_BITS = 36  #: a slot's low bits: position + 1 (64 G names)
_POSITION = (1 << _POSITION_BITS) - 1
_HASH_BITS = 28  #: a slot's high bits: enough to place a slot in a table of 2**28 slots
_HASH = (1 << _HASH_BITS) - 1
_FIRST_SIZE = 1 << 12
_GONE = -1.0  #: the second of a name discarded (closing seconds are never negative)


def _bits(name: str) -> int:
    return (hash(name) >> 8) & _HASH  # hash(str) is SipHash, keyed per process


class _Block:
    __slots__ = ("data", "ends", "first", "seconds")

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends = array("I")
        #: Each name's closing second; _GONE once it is discarded.
        self.seconds = array("d")
        self.first = 0  #: no name before this place is still closed

    def name(self, place: int) -> str:
        start = self.ends[place - 1] if place else 0
        return self.data[start : self.ends[place]].decode()

    def nbytes(self) -> int:
        return len(self.data) + 4 * len(self.ends) + 8 * len(self.seconds)


class ClosedNames:
    """The closed names of a partition and when each closed (see the module doc)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._blocks: list[_Block] = []
        self._base = 0  #: the number of ``_blocks[0]``
        self._next = 0  #: the position the next name takes
        self._slots = array("Q", bytes(8 * _FIRST_SIZE))
        self._mask = _FIRST_SIZE - 1
        self._live = 0

    def __len__(self) -> int:
        return self._live

    # -- positions ------------------------------------------------------------------------------

    def _block(self, position: int) -> tuple[_Block, int]:
        return self._blocks[(position >> BLOCK_BITS) - self._base], position & (BLOCK - 1)

    def _find(self, name: str, bits: int) -> tuple[int, int]:
        """(slot, position) of ``name`` (its hash's ``bits``), or (the empty slot it would
        take, -1)."""
        slots, mask, blocks, base = self._slots, self._mask, self._blocks, self._base
        at = bits & mask
        while value := slots[at]:
            if value >> _POSITION_BITS == bits:
                position = (value & _POSITION) - 1
                block = blocks[(position >> BLOCK_BITS) - base]
                if block.name(position & (BLOCK - 1)) == name:
                    return at, position
            at = (at + 1) & mask
        return at, -1

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name, _bits(name))[1] >= 0

    def get(self, name: str) -> float | None:
        """When ``name`` closed; None when it is not closed."""
        position = self._find(name, _bits(name))[1]
        if position < 0:
            return None
        block, place = self._block(position)
        return block.seconds[place]

    # -- changes --------------------------------------------------------------------------------

    def close(self, name: str, second: float) -> None:
        """``name`` closed at ``second`` (a name closed already keeps its place)."""
        # _find inlined: a takeover closes millions of names, and each call costs.
        bits = _bits(name)
        slots, mask, blocks, base = self._slots, self._mask, self._blocks, self._base
        at = bits & mask
        while value := slots[at]:
            if value >> _POSITION_BITS == bits:
                position = (value & _POSITION) - 1
                block = blocks[(position >> BLOCK_BITS) - base]
                place = position & (BLOCK - 1)
                if block.name(place) == name:
                    block.seconds[place] = second
                    return
            at = (at + 1) & mask
        position = self._next
        self._next = position + 1
        if not position & (BLOCK - 1):
            blocks.append(_Block())
        block = blocks[-1]
        data = block.data
        data += name.encode()
        block.ends.append(len(data))
        block.seconds.append(second)
        slots[at] = (bits << _POSITION_BITS) | (position + 1)
        self._live += 1
        if self._live * 2 > len(slots):
            self._grow()

    def discard(self, name: str) -> None:
        """``name`` is no longer closed (pruned, or a later record of it read)."""
        at, position = self._find(name, _bits(name))
        if position < 0:
            return
        block, place = self._block(position)
        block.seconds[place] = _GONE
        self._live -= 1
        self._vacate(at)

    def _vacate(self, at: int) -> None:
        """Empty slot ``at`` and move back the slots after it that it kept from their place
        (linear probing's deletion: no marker left behind)."""
        slots, mask = self._slots, self._mask
        gap, at = at, (at + 1) & mask
        while value := slots[at]:
            home = (value >> _POSITION_BITS) & mask
            # The slot may fill the gap unless its home lies after the gap, up to it (cyclic).
            if (at - home) & mask >= (at - gap) & mask:
                slots[gap] = value
                gap = at
            at = (at + 1) & mask
        slots[gap] = 0

    def _grow(self) -> None:
        size = 2 * len(self._slots)
        if size > 1 << _HASH_BITS:  # the most a slot can place: fuller, then full
            if self._live * 10 > 9 * len(self._slots):
                raise OverflowError(
                    f"{self._live:,} closed reviews in one ledger partition, more than it can "
                    "hold: lower review.ledger_retention_s, or spread reviews over more "
                    "partitions (review.topic_partitions)"
                )
            return
        slots, mask = array("Q", bytes(8 * size)), size - 1
        for value in self._slots:
            if value:
                at = (value >> _POSITION_BITS) & mask
                while slots[at]:
                    at = (at + 1) & mask
                slots[at] = value
        self._slots, self._mask = slots, mask

    # -- order ----------------------------------------------------------------------------------

    def oldest(self) -> tuple[str, float] | None:
        """The name that closed first, and when; None when none is closed. Blocks passed
        whole (every name in them gone: pruning deletes from the front) leave."""
        blocks = self._blocks
        while blocks:
            block = blocks[0]
            seconds, place = block.seconds, block.first
            while place < len(seconds) and seconds[place] == _GONE:
                place += 1
            block.first = place
            if place < len(seconds):
                return block.name(place), seconds[place]
            if len(blocks) == 1:
                break  # the block names are added to stays
            blocks.pop(0)
            self._base += 1
        return None

    def items(self) -> Iterator[tuple[str, float]]:
        """Every closed name and its second, in closing order."""
        for block in self._blocks:
            seconds = block.seconds
            for place in range(block.first, len(seconds)):
                if seconds[place] != _GONE:
                    yield block.name(place), seconds[place]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items())

    def nbytes(self) -> int:
        """Bytes held: the names' blocks and the index."""
        return sum(block.nbytes() for block in self._blocks) + 8 * len(self._slots)
