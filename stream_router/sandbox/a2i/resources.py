"""Durable control-plane resources of the A2I emulator: human task UIs and flow definitions.

They live in the same SQLite file as the loops (``store.py``), in two tables of their own, so a
flow definition a notebook created survives an emulator restart as its loops do. A flow
definition keeps the request it was created from (``HumanLoopConfig``, ``OutputConfig``,
``RoleArn``, tags) as JSON, plus a copy of its task UI's template taken at creation: deleting a
task UI does not change the flows that use it (an assumption; AWS documents no dependency).

Status is stored as what was decided and when (``active_at``, ``deleted_at``), and read against
the clock, so Initializing turns Active and Deleting turns gone without a timer.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS human_task_uis (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    created_at REAL NOT NULL,
    template TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_definitions (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    created_at REAL NOT NULL,
    active_at REAL NOT NULL,
    deleted_at REAL,
    request TEXT NOT NULL,
    template TEXT NOT NULL,
    source TEXT NOT NULL
);
"""

#: Where a resource came from: the sandbox settings (re-created at every start) or the API.
SETTINGS = "settings"
API = "api"


@dataclass(frozen=True)
class TaskUi:
    """A human task UI: a worker template under a name."""

    name: str
    arn: str
    created_at: float
    template: str
    tags: tuple[dict[str, str], ...]
    source: str


@dataclass(frozen=True)
class FlowRecord:
    """A flow definition as stored; :meth:`status` reads it against the clock."""

    name: str
    arn: str
    created_at: float
    active_at: float
    deleted_at: float | None
    request: dict[str, Any]
    template: str
    source: str

    def status(self, now: float) -> str:
        if self.deleted_at is not None:
            return "Deleting"
        return "Active" if now >= self.active_at else "Initializing"

    @property
    def human_loop_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.request["HumanLoopConfig"]
        return config

    @property
    def output_path(self) -> str:
        return str(self.request["OutputConfig"]["S3OutputPath"]).rstrip("/")


class ResourceStore:
    """SQLite-backed task UIs and flow definitions; single-threaded use (the event loop)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    # -- human task UIs ----------------------------------------------------------------------

    def task_ui(self, name: str) -> TaskUi | None:
        row = self._db.execute("SELECT * FROM human_task_uis WHERE name = ?", (name,)).fetchone()
        return _task_ui(row) if row else None

    def task_ui_by_arn(self, arn: str) -> TaskUi | None:
        row = self._db.execute("SELECT * FROM human_task_uis WHERE arn = ?", (arn,)).fetchone()
        return _task_ui(row) if row else None

    def put_task_ui(self, ui: TaskUi) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO human_task_uis VALUES (?, ?, ?, ?, ?, ?)",
            (ui.name, ui.arn, ui.created_at, ui.template, json.dumps(list(ui.tags)), ui.source),
        )

    def delete_task_ui(self, name: str) -> None:
        self._db.execute("DELETE FROM human_task_uis WHERE name = ?", (name,))

    def task_uis(self) -> list[TaskUi]:
        rows = self._db.execute("SELECT * FROM human_task_uis ORDER BY created_at, name")
        return [_task_ui(row) for row in rows]

    # -- flow definitions --------------------------------------------------------------------

    def flow(self, name: str) -> FlowRecord | None:
        row = self._db.execute("SELECT * FROM flow_definitions WHERE name = ?", (name,)).fetchone()
        return _flow(row) if row else None

    def put_flow(self, flow: FlowRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO flow_definitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                flow.name,
                flow.arn,
                flow.created_at,
                flow.active_at,
                flow.deleted_at,
                json.dumps(flow.request),
                flow.template,
                flow.source,
            ),
        )

    def delete_flow(self, name: str) -> None:
        self._db.execute("DELETE FROM flow_definitions WHERE name = ?", (name,))

    def flows(self) -> list[FlowRecord]:
        rows = self._db.execute("SELECT * FROM flow_definitions ORDER BY created_at, name")
        return [_flow(row) for row in rows]


def _task_ui(row: sqlite3.Row) -> TaskUi:
    return TaskUi(
        name=row["name"],
        arn=row["arn"],
        created_at=row["created_at"],
        template=row["template"],
        tags=tuple(json.loads(row["tags"])),
        source=row["source"],
    )


def _flow(row: sqlite3.Row) -> FlowRecord:
    return FlowRecord(
        name=row["name"],
        arn=row["arn"],
        created_at=row["created_at"],
        active_at=row["active_at"],
        deleted_at=row["deleted_at"],
        request=json.loads(row["request"]),
        template=row["template"],
        source=row["source"],
    )
