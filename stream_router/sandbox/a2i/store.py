"""Durable state of the A2I emulator: one SQLite file, so loops survive a restart.

A row per human loop holds what DescribeHumanLoop reports plus the emulator's own bookkeeping:
the reviewers' plan, when the next transition is due, and whether a status event still has to
be sent (set in the same transaction as the status change, cleared once EventBridge took it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stream_router.sandbox.a2i.reviewers import LoopPlan

ACTIVE = ("InProgress", "Stopping")
TERMINAL = ("Completed", "Failed", "Stopped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS loops (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    flow_definition_arn TEXT NOT NULL,
    flow_name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    input_content TEXT NOT NULL,
    content_classifiers TEXT NOT NULL,
    plan TEXT NOT NULL,
    due_at REAL,
    failure_code TEXT,
    failure_reason TEXT,
    output_s3_uri TEXT,
    event_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS loops_by_flow ON loops (flow_definition_arn, created_at, name);
CREATE INDEX IF NOT EXISTS loops_due ON loops (due_at) WHERE due_at IS NOT NULL;
"""


@dataclass(frozen=True)
class Loop:
    """One human loop as the emulator stores it."""

    name: str
    arn: str
    flow_definition_arn: str
    flow_name: str
    status: str
    created_at: float
    input_content: str
    content_classifiers: tuple[str, ...]
    plan: LoopPlan
    due_at: float | None
    failure_code: str | None = None
    failure_reason: str | None = None
    output_s3_uri: str | None = None
    event_pending: bool = False

    def evolve(self, **changes: Any) -> Loop:
        return replace(self, **changes)


class LoopStore:
    """SQLite-backed loops; single-threaded use from the emulator's event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    def get(self, name: str) -> Loop | None:
        row = self._db.execute("SELECT * FROM loops WHERE name = ?", (name,)).fetchone()
        return _to_loop(row) if row else None

    def put(self, loop: Loop) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO loops VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                loop.name,
                loop.arn,
                loop.flow_definition_arn,
                loop.flow_name,
                loop.status,
                loop.created_at,
                loop.input_content,
                json.dumps(list(loop.content_classifiers)),
                json.dumps(loop.plan.to_json()),
                loop.due_at,
                loop.failure_code,
                loop.failure_reason,
                loop.output_s3_uri,
                int(loop.event_pending),
            ),
        )

    def delete(self, name: str) -> None:
        self._db.execute("DELETE FROM loops WHERE name = ?", (name,))

    def count_active(self, flow_definition_arn: str | None = None) -> int:
        """Loops InProgress or Stopping (of one flow definition, when given)."""
        if flow_definition_arn is None:
            row = self._db.execute(
                "SELECT COUNT(*) FROM loops WHERE status IN (?, ?)", ACTIVE
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM loops WHERE status IN (?, ?) AND flow_definition_arn = ?",
                (*ACTIVE, flow_definition_arn),
            ).fetchone()
        return int(row[0])

    def count_by_status(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM loops GROUP BY status")
        return {str(status): int(count) for status, count in rows}

    def scheduled(self) -> Iterator[tuple[float, str]]:
        """(due_at, name) of every loop with a transition still to make."""
        rows = self._db.execute("SELECT due_at, name FROM loops WHERE due_at IS NOT NULL")
        for row in rows:
            yield float(row[0]), str(row[1])

    def in_progress(self, limit: int = 5_000) -> list[Loop]:
        """Loops InProgress, oldest first (at most ``limit``)."""
        rows = self._db.execute(
            "SELECT * FROM loops WHERE status = 'InProgress' ORDER BY created_at, name LIMIT ?",
            (limit,),
        )
        return [_to_loop(row) for row in rows]

    def pending_events(self) -> Iterator[Loop]:
        for row in self._db.execute("SELECT * FROM loops WHERE event_pending = 1"):
            yield _to_loop(row)

    def page(
        self,
        flow_definition_arn: str,
        *,
        after: float | None,
        before: float | None,
        descending: bool,
        start_key: tuple[float, str] | None,
        limit: int,
    ) -> list[Loop]:
        """Loops of one flow definition in creation order, from ``start_key`` on."""
        clauses = ["flow_definition_arn = ?"]
        args: list[Any] = [flow_definition_arn]
        if after is not None:
            clauses.append("created_at >= ?")
            args.append(after)
        if before is not None:
            clauses.append("created_at <= ?")
            args.append(before)
        if start_key is not None:
            clauses.append(
                "(created_at, name) < (?, ?)" if descending else "(created_at, name) > (?, ?)"
            )
            args.extend(start_key)
        order = "DESC" if descending else "ASC"
        sql = (
            f"SELECT * FROM loops WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed fragments
            f"ORDER BY created_at {order}, name {order} LIMIT ?"
        )
        args.append(limit)
        return [_to_loop(row) for row in self._db.execute(sql, args)]


def _to_loop(row: sqlite3.Row) -> Loop:
    return Loop(
        name=row["name"],
        arn=row["arn"],
        flow_definition_arn=row["flow_definition_arn"],
        flow_name=row["flow_name"],
        status=row["status"],
        created_at=row["created_at"],
        input_content=row["input_content"],
        content_classifiers=tuple(json.loads(row["content_classifiers"])),
        plan=LoopPlan.from_json(json.loads(row["plan"])),
        due_at=row["due_at"],
        failure_code=row["failure_code"],
        failure_reason=row["failure_reason"],
        output_s3_uri=row["output_s3_uri"],
        event_pending=bool(row["event_pending"]),
    )
