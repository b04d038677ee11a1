"""Benchmark: sandbox start-up time and resident memory (not a test; prints figures).

    .venv/bin/python tests/bench/bench_sandbox.py [--runs 5] [--broker kafka|tansu]

Measures, per run: the wall time of ``stream-router sandbox up`` from process start to its
ready line (what a user waits for), the sandbox's own start-up time, and the resident memory
of every process (the CLI process plus broker, moto and emulator), read from /proc.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stream_router.sandbox.process import tree_rss_bytes


def one_run(broker: str) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "STREAM_ROUTER_SANDBOX_FILE": str(Path(tmp) / "sandbox.json")}
        began = time.monotonic()
        up = subprocess.Popen(
            [sys.executable, "-m", "stream_router.cli", "sandbox", "up", "--broker", broker],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert up.stdout is not None
        first = up.stdout.readline()
        if first.startswith("# broker:"):  # which broker, and why
            first = up.stdout.readline()
        wall = time.monotonic() - began
        if not first.startswith("sandbox ready in"):
            raise RuntimeError(f"unexpected output: {first!r}")
        internal = float(first.split()[3])
        rss = tree_rss_bytes(up.pid)
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
        up.stdout.close()
        return wall, internal, rss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    args = parser.parse_args()
    results = [one_run(args.broker) for _ in range(args.runs)]
    walls, internals, rss = zip(*results, strict=True)
    print(f"runs: {args.runs}, broker: {args.broker}")
    print(
        f"sandbox up -> ready (wall, incl. Python start): median {statistics.median(walls):.2f} s, "
        f"max {max(walls):.2f} s"
    )
    print(
        f"sandbox start (broker + moto + resources + emulator): median "
        f"{statistics.median(internals):.2f} s, max {max(internals):.2f} s"
    )
    print(f"resident memory, all sandbox processes: median {statistics.median(rss):.0f} MB")


if __name__ == "__main__":
    main()
