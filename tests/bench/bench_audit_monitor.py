"""Benchmark: the audit monitor's confidence sequence, by simulation (no broker, no backend).

    .venv/bin/python tests/bench/bench_audit_monitor.py [--reps 20000] [--share 0.02]

The larger version of ``tests/unit/review/test_confidence.py`` (whose simulation helpers it
uses: the production bound, exact on one partition, numpy over several). Target error 2 %,
delta 0.05. Prints:

- false alarms: the share of streams, at the target and at half of it, on which the alert
  (lower bound above the target, checked after every audited review) ever fires within 10,000
  audited reviews, with the Monte-Carlo slack 3 sqrt(delta (1 - delta) / reps); the same for the
  exact fixed-n binomial bound re-checked after every review;
- detection delay of a step from 1 % to 4 % error after 0, 1,000 and 5,000 audited reviews at
  1 %: median and 90th percentile in audited reviews after the step, and in predictions at
  the audit share (``--share``: the audit samples that share of accepted predictions), on one
  partition and on four (the review role's default; each partition keeps its own counts);
- the same delay (step at 0) for other priors of the mixture, which is how
  ``BetaPrior.for_target`` was chosen.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stream_router.review.confidence import BetaPrior, estimate
from tests.unit.review.test_confidence import (
    DELTA,
    HORIZON,
    TARGET,
    first_alarm,
    last_alarms,
    naive_last_alarms,
    simulate_partitions,
)

STEP_FROM, STEP_TO = 0.01, 0.04
CHANGES = (0, 1000, 5000)


def slack(reps: int) -> float:
    return 3 * math.sqrt(DELTA * (1 - DELTA) / reps)


def false_alarms(reps: int) -> None:
    print(f"False alarms within {HORIZON:,} audited reviews (target {TARGET:.0%}, delta {DELTA}):")
    rng = random.Random(1)
    last = last_alarms(HORIZON)
    for rate in (TARGET, TARGET / 2):
        found = sum(first_alarm(rng, last, rate) is not None for _ in range(reps)) / reps
        print(f"  1 partition, error {rate:.0%}: {found:.4f} of {reps:,} streams "
              f"(bound {DELTA} + slack {slack(reps):.4f})")  # fmt: skip
    naive = naive_last_alarms(HORIZON)
    found = sum(first_alarm(rng, naive, TARGET) is not None for _ in range(reps)) / reps
    print(f"  fixed-n exact binomial bound re-checked after every review, error {TARGET:.0%}: "
          f"{found:.4f}")  # fmt: skip
    generator = np.random.default_rng(2)
    for partitions, many in ((4, reps // 5), (12, reps // 10)):
        first = simulate_partitions(generator, TARGET, partitions, many)
        found = float(np.mean(first <= HORIZON))
        print(f"  {partitions} partitions, error {TARGET:.0%}: {found:.4f} of {many:,} streams "
              f"(slack {slack(many):.4f})")  # fmt: skip


def describe(delays: list[float], share: float) -> str:
    median = statistics.median(delays)
    p90 = statistics.quantiles(delays, n=10)[-1]
    return (f"median {median:,.0f} (predictions {median / share:,.0f}), 90th percentile "
            f"{p90:,.0f} (predictions {p90 / share:,.0f})")  # fmt: skip


def delays(reps: int, share: float) -> None:
    print(f"\nDetection delay, audited reviews after a step from {STEP_FROM:.0%} to "
          f"{STEP_TO:.0%} (target {TARGET:.0%}; predictions at a {share:.0%} audit "
          "share):")  # fmt: skip
    horizon = 30_000
    last = last_alarms(horizon)
    rng = random.Random(3)
    generator = np.random.default_rng(4)
    for change in CHANGES:
        found = []
        for _ in range(reps):
            at = first_alarm(rng, last, STEP_TO, before=STEP_FROM, change_at=change,
                             horizon=horizon)  # fmt: skip
            found.append(float(at - change) if at is not None else math.inf)
        print(f"  1 partition, after {change:,} at {STEP_FROM:.0%}: {describe(found, share)}")
        first = simulate_partitions(generator, STEP_TO, 4, max(200, reps // 10), horizon,
                                    before=STEP_FROM, change_at=change)  # fmt: skip
        four = [float(f - change) if f <= horizon else math.inf for f in first]
        print(f"  4 partitions, after {change:,} at {STEP_FROM:.0%}: {describe(four, share)}")


def priors(reps: int, share: float) -> None:
    print(f"\nDelay by prior (step to {STEP_TO:.0%} at 0): 1 partition | 4 partitions")
    horizon = 20_000
    candidates = {
        "uniform Beta(1, 1)": BetaPrior(1, 1),
        "Jeffreys Beta(1/2, 1/2)": BetaPrior(0.5, 0.5),
        "mean target, Beta(1, 1/t - 1)": BetaPrior(1, 1 / TARGET - 1),
        "mean 2 target, Beta(1, 1/(2t) - 1)": BetaPrior(1, 1 / (2 * TARGET) - 1),
        "mean 3 target, Beta(1, 1/(3t) - 1)": BetaPrior(1, 1 / (3 * TARGET) - 1),
        "for_target: Beta(2, 1/t - 2)": BetaPrior.for_target(TARGET),
    }
    rng = random.Random(5)
    generator = np.random.default_rng(6)
    for name, prior in candidates.items():

        def decide(n: int, k: int, prior: BetaPrior = prior) -> bool:
            return estimate([(n, k)], prior, DELTA, TARGET).lower > TARGET

        last = last_alarms(horizon, decide)
        one = []
        for _ in range(reps):
            at = first_alarm(rng, last, STEP_TO, horizon=horizon)
            one.append(float(at) if at is not None else math.inf)
        first = simulate_partitions(generator, STEP_TO, 4, max(200, reps // 10), horizon,
                                    prior=prior)  # fmt: skip
        four = [float(f) if f <= horizon else math.inf for f in first]
        one_p90 = statistics.quantiles(one, n=10)[-1]
        four_p90 = statistics.quantiles(four, n=10)[-1]
        print(f"  {name:36} median {statistics.median(one):6,.0f} p90 {one_p90:6,.0f} | "
              f"median {statistics.median(four):6,.0f} p90 {four_p90:6,.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20_000, help="simulated streams per case")
    parser.add_argument("--share", type=float, default=0.02, help="audit share of predictions")
    args = parser.parse_args()
    false_alarms(args.reps)
    delays(args.reps // 4, args.share)
    priors(args.reps // 10, args.share)


if __name__ == "__main__":
    main()
