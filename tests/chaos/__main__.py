"""``python -m tests.chaos [--long | --flood | --soak SECONDS] [--seed N]
[--backend a2i|label-studio] [--brokers 3]``: one chaos run, its figures, exit 1 if unclean."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.chaos.harness import Plan, run
from tests.chaos.soak import plot


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos")
    parser.add_argument("--long", action="store_true", help="the on-demand run (15 minutes)")
    parser.add_argument(
        "--flood", action="store_true",
        help="every prediction to review for a minute, against a budget and its fallback (A2I)",
    )  # fmt: skip
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS",
        help="a steady stream this long, faults spread through it (no kills), memory, file "
        "descriptors, the ledger's size, lag and backlog sampled; a table and soak.png",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("a2i", "label-studio"), default="a2i")
    parser.add_argument(
        "--brokers", type=int, default=1,
        help="Apache Kafka nodes: 3 runs on a cluster, with a cluster's faults",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, help="keep the logs and state in this directory")
    args = parser.parse_args()
    if args.flood and args.backend != "a2i":
        parser.error("--flood runs on A2I")
    plan = (Plan.flood() if args.flood else Plan.soak(args.soak) if args.soak
            else Plan.long(args.backend) if args.long else Plan.short(args.backend))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="stream-router-chaos-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(
            run(plan, work, seed=args.seed, backend=args.backend, brokers=args.brokers)
        )
    for line in report.lines():
        print(line)
    if report.samples:
        picture = (args.keep or Path.cwd()) / "soak.png"
        if plot(report.samples, picture):
            print(f"soak samples drawn in {picture}")
        else:
            print("soak.png not drawn: matplotlib is not installed (the analysis extra)")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
