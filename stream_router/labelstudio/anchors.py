"""What the backend has seen of Label Studio's task ids over time, to bound a look-up by id.

An *anchor* ``(seen_s, task_id)`` says: task ``task_id`` existed when this process's clock read
``seen_s`` (taken *after* the answer that showed it arrived). Label Studio's task id is the
primary key of one table for every project, handed out in increasing order and never reused
(SQLite's ``AUTOINCREMENT``, a PostgreSQL sequence), so every task with an id at most
``task_id`` was given its id before ``seen_s``, and so was created by a request sent before then.
A task created by a request sent after ``seen_s`` has a greater id, however long Label Studio
took to apply it.

:meth:`IdAnchors.before` answers the greatest id anchored at or before a time: a look-up for the
tasks of requests all sent after that time need only read the ids above it
(``labelstudio/backend.py`` says which time that is). Pure; no I/O, no clock of its own.
"""

from __future__ import annotations

import bisect

_SPACING_S = 1.0  #: an anchor less than this after the last one kept is not kept
_KEPT = 4_096  #: anchors kept at most; past it every other one of the older half goes (the
#: oldest stays): an old request's look-up then reads a few more ids, never fewer


class IdAnchors:
    """Anchors in increasing order of both time and id (one that another makes redundant, an
    earlier time with a greater id, is dropped); see the module docstring."""

    def __init__(self, spacing_s: float = _SPACING_S, kept: int = _KEPT) -> None:
        self.spacing_s = spacing_s
        self.kept = kept
        self._times: list[float] = []
        self._ids: list[int] = []

    def __len__(self) -> int:
        return len(self._times)

    def saw(self, seen_s: float, task_id: int) -> None:
        """Task ``task_id`` existed at ``seen_s`` (this process's clock, read after the answer
        that showed it)."""
        times, ids = self._times, self._ids
        at = bisect.bisect_right(times, seen_s)
        if at > 0 and ids[at - 1] >= task_id:
            return  # an anchor as early or earlier says as much
        if at == len(times) and times and seen_s < times[-1] + self.spacing_s:
            return  # too soon after the last one: it still holds, a little less tight
        end = at
        while end < len(ids) and ids[end] <= task_id:
            end += 1  # later anchors with ids no greater: this one says more
        times[at:end] = [seen_s]
        ids[at:end] = [task_id]
        if len(times) > self.kept:
            older = len(times) // 2
            del times[1:older:2]
            del ids[1:older:2]

    def before(self, time_s: float) -> int | None:
        """The greatest id anchored at or before ``time_s``: every task created by a request
        sent after ``time_s`` has a greater one. None if no anchor is that old."""
        at = bisect.bisect_right(self._times, time_s)
        return self._ids[at - 1] if at else None
