"""The router as a child process in tests, ready once its ingest owns partitions."""

from __future__ import annotations

import sys
from pathlib import Path

from stream_router.sandbox.process import ManagedProcess

READY = r"assigned \d+ partitions"


def router(config: Path, role: str, env: dict[str, str] | None = None) -> ManagedProcess:
    """``stream-router run``; the config must log at INFO so the ready line is printed."""
    return ManagedProcess(
        f"router-{role}",
        [sys.executable, "-m", "stream_router.cli", "run", "--role", role, "--config", str(config)],
        ready_pattern=READY,
        env=env,
        log_path=config.with_suffix(f".{role}.log"),
        stop_timeout_s=60,
    )
