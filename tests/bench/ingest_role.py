"""``stream-router run --role ingest`` with its garbage collections timed, for the latency runs.

    python tests/bench/ingest_role.py --config FILE --gc-log OUT.json [--no-freeze]

Runs the command line's own entry point (``stream_router.cli.main``: settings, topic checks,
readiness, SIGTERM drain, exactly as a deployment runs it) after adding a ``gc.callbacks``
hook that records every collection of the cyclic garbage collector: its wall-clock start
(``time.time()``), its duration and its generation. On exit it writes them to ``OUT.json`` with
how many objects the collector tracked and how many were frozen.

``--no-freeze`` replaces the command's ``freeze_start_up_objects`` with a collection alone,
to compare the router with and without ``gc.freeze`` after start-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout, from anywhere

from stream_router import cli


class CollectionTimer:
    """A ``gc.callbacks`` hook: one ``(start_wall_s, duration_s, generation)`` per collection."""

    def __init__(self) -> None:
        self.collections: list[tuple[float, float, int]] = []
        self._started = 0.0
        self._started_wall = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_wall = time.time()
            self._started = time.perf_counter()
        else:
            took = time.perf_counter() - self._started
            self.collections.append((self._started_wall, took, info["generation"]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--gc-log", type=Path, required=True)
    parser.add_argument("--no-freeze", action="store_true")
    args = parser.parse_args()
    if args.no_freeze:
        cli.freeze_start_up_objects = gc.collect  # type: ignore[assignment]
    timer = CollectionTimer()
    gc.callbacks.append(timer)
    try:
        return cli.main(["run", "--role", "ingest", "--config", str(args.config)])
    finally:
        gc.callbacks.remove(timer)
        report = {
            "collections": timer.collections,
            "frozen": gc.get_freeze_count(),
            "tracked": len(gc.get_objects()),
        }
        args.gc_log.write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
