"""The Quix Streams side of ``bench_ingest.py``: its virtual environment, made on demand, and a run.

quixstreams 3.28.1 pins ``confluent-kafka<2.13`` and ``pydantic<2.14``; stream_router needs
confluent-kafka 2.13 or later (librdkafka's murmur2) and runs pydantic 2.14. So the Quix
application (``quix_routing.py``) runs in an environment of its own, made with pip from
``quix_requirements.txt`` beside this file (every package pinned) under the cache folder
(``$STREAM_ROUTER_CACHE_DIR`` or ``~/.cache/stream-router``), keyed by that file's digest, on
first use (about half a minute), as the sandbox does for Label Studio. stream_router itself is
not installed there: the application imports it from this checkout. When the environment
cannot be made (no PyPI), :class:`QuixUnavailable` says why and the benchmark runs the rest.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from stream_router.sandbox.kafka import cache_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REQUIREMENTS = HERE / "quix_requirements.txt"


class QuixUnavailable(RuntimeError):
    """The Quix Streams environment could not be made; the message says why."""


def quix_python() -> Path:
    """The Python of the Quix Streams environment, made first if missing."""
    pinned = REQUIREMENTS.read_bytes()
    root = cache_dir() / f"quix-streams-{hashlib.sha256(pinned).hexdigest()[:12]}"
    python = root / "venv" / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs wait for one install
        if (root / "complete").is_file():
            return python
        venv = root / "venv"
        if venv.exists():  # an install that was interrupted
            shutil.rmtree(venv)
        print(f"installing Quix Streams into {venv} (once)", file=sys.stderr)
        for command in (
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)],
        ):  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise QuixUnavailable(
                    f"installing Quix Streams failed ({' '.join(command[:4])} ...): "
                    f"{(done.stderr or done.stdout)[-1500:]}"
                )
        (root / "complete").write_text("ok\n", encoding="ascii")
    return python


async def quix_run(
    python: Path, bootstrap: str, topic: str, tag: str, count: int
) -> dict[str, float]:
    """Run the Quix application over the first ``count`` records of ``topic``; its figures
    (``count``, ``seconds`` and ``cpu_s`` from its first message to its final commit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_ROUTER_")}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        *[str(python), str(HERE / "quix_routing.py"), "--bootstrap", bootstrap],
        *["--topic", topic, "--tag", tag, "--count", str(count)],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"the Quix application failed ({process.returncode}):\n{err.decode()[-3000:]}"
        )
    figures: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return figures
