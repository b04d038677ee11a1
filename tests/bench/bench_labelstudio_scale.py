"""Benchmark: Label Studio review starts per second against the project's size (not a test;
prints figures).

    nice -n 19 .venv/bin/python tests/bench/bench_labelstudio_scale.py \\
        [--sizes 0,10000,100000] [--starts 300] [--scan-starts 100] [--in-flight 100]

Starts a Label Studio of its own (``sandbox/labelstudio/server.py``, SQLite) in a temporary
folder and one project, and at each size (the project filled up to it by bulk imports of
untagged filler tasks, not timed) measures the tasks created per second by
``LabelStudioReviewBackend.start``, ``--in-flight`` starts at a time (they batch as the
scheduler's do), each mode on a backend just opened:

- ``fresh``: ``fresh=True``, the ledger's word that no start was sent before: no look-up;
- ``bounded``: not fresh, ``not_before_s`` taken after the backend opened (``--clock-skew``,
  default 0, is its ``clock_skew_s``): a look-up among the ids above the anchor of open;
- ``scan``: not fresh, no ``not_before_s``: the look-up of the whole project every start made
  before (and a start still makes when no anchor is old enough).

Prints the rates per size and mode, and the ratio of the largest size's rate to the first's.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.client import LabelStudioClient
from stream_router.labelstudio.settings import LabelStudioProject, LabelStudioSettings
from stream_router.labelstudio.tasks import labeling_config, task
from stream_router.sandbox.labelstudio.server import LabelStudioServer

CONTENT = {
    "event": {"text": "a photo", "id": "e-1"},
    "prediction": {"label": "cat", "confidence": 0.42, "scores": None},
    "reason": "confidence 0.42 below 0.7",
}
FILL_CHUNK = 5_000
MODES = ("fresh", "bounded", "scan")


async def fill(client: LabelStudioClient, project: int, have: int, want: int) -> None:
    """Import filler tasks until the project holds ``want``."""
    while have < want:
        count = min(FILL_CHUNK, want - have)
        filler = [task(f"filler-{have + i}", CONTENT) for i in range(count)]
        await client.import_tasks(project, filler)
        have += count


async def measure(settings: LabelStudioSettings, mode: str, names: list[str],
                  in_flight: int) -> float:  # fmt: skip
    """Tasks created per second by starting ``names`` in ``mode``."""
    slots = asyncio.Semaphore(in_flight)
    async with LabelStudioReviewBackend(settings) as backend:
        recorded_s = time.time()  # after open: the anchor of open precedes it

        async def start(name: str) -> bool:
            async with slots:
                outcome = await backend.start(
                    name,
                    "bench",
                    CONTENT,
                    fresh=mode == "fresh",
                    not_before_s=recorded_s if mode == "bounded" else None,
                )
            return outcome.already_started

        began = time.monotonic()
        repeated = await asyncio.gather(*(start(name) for name in names))
        elapsed = time.monotonic() - began
    if any(repeated):
        raise RuntimeError(f"{mode}: {sum(repeated)} new names answered already started")
    return len(names) / elapsed


async def main(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.sizes.split(",")]
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as folder:
        server = LabelStudioServer(state_dir=Path(folder))
        await server.start()
        try:
            async with LabelStudioClient(server.url, server.token, timeout_s=600) as client:
                made = await client.create_project(
                    "bench", labeling_config(["cat", "dog"]), maximum_annotations=1
                )
                project = int(made["id"])
                settings = LabelStudioSettings(
                    url=server.url,
                    api_token=SecretStr(server.token),
                    projects={"bench": LabelStudioProject(project=project)},
                    clock_skew_s=args.clock_skew,
                    request_timeout_s=600,
                )
                have = 0
                for size in sizes:
                    began = time.monotonic()
                    await fill(client, project, have, size)
                    filled_s = time.monotonic() - began
                    have = size
                    line = [f"{size:>7} tasks (filled in {filled_s:.0f} s):"]
                    for mode in MODES:
                        count = args.scan_starts if mode == "scan" else args.starts
                        names = [f"{mode}-{size}-{i}" for i in range(count)]
                        rate = await measure(settings, mode, names, args.in_flight)
                        rates[mode].append(rate)
                        have += count
                        line.append(f"{mode} {rate:.1f}/s")
                    print(" ".join(line), flush=True)
        finally:
            await server.stop()
    for mode in MODES:
        first, last = rates[mode][0], rates[mode][-1]
        figures = " / ".join(f"{rate:.1f}" for rate in rates[mode])
        print(f"{mode:>8}: {figures} tasks/s at {args.sizes}; "
              f"{sizes[-1]} vs {sizes[0]}: {last / first:.2f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--starts", type=int, default=300, help="starts per fresh, bounded run")
    parser.add_argument("--scan-starts", type=int, default=100, help="starts per scan run")
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--clock-skew", type=float, default=0.0, help="clock_skew_s")
    asyncio.run(main(parser.parse_args()))
