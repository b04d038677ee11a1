"""Benchmark: certified auto-accept thresholds against the truth, at scale.

    .venv/bin/python tests/bench/bench_thresholds.py [--draws 1000] [--only NAME]

The larger version of tests/unit/thresholds/test_validity.py, on the same synthetic router
(tests/unit/thresholds/simulation.py: confidences ~ Beta(30, 1), P(wrong | s) = min(1, c (1 - s)),
everything below t0 reviewed, an audit sample above it). For every scenario it prints, per
label: the share of draws whose certified threshold's true selective error exceeds alpha
(``viol``: at most delta = 5 % plus noise is the promise), the certified auto-accept rate, the
naive plug-in's violations and accept rate, the oracle's accept rate (the loosest grid threshold
whose true error meets alpha), and a deliberately anti-conservative scan (bounds at 60 %) to
show the check can fail. Sections:

- ``economics``: economics.md's setting (one label, c = 1.5, t0 0.985 / 0.975, audit 2 % / 5 %,
  20,000 and 100,000 events), to set beside its figures (naive 44-50 % violations, stratified
  Clopper-Pearson 0-0.7 %, certified accept 15-37 % against an oracle 61.5 %);
- ``labels``: five labels with unequal error, audit 5 %, 1 % and 1 % then 5 %, at 20,000 and
  100,000 events per label;
- ``simultaneous``: delta / 5 per label, judged by the share of draws where any label violates;
- ``start``: the scan's start rule (``start_fraction`` 1.0 against 0.5).

Takes a few minutes at the default 1,000 draws.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from stream_router.thresholds import uniform_grid
from tests.unit.thresholds.simulation import Scenario, simulate

ALPHA, DELTA = 0.02, 0.05
GRID = uniform_grid(0.90, 0.999, 200)
SLOPES = (1.0, 1.5, 2.0, 3.0, 4.0)


def economics(draws: int) -> None:
    for events in (20_000, 100_000):
        for t0 in (0.985, 0.975):
            for audit in (0.02, 0.05):
                name = f"economics.md c=1.5 N={events} t0={t0} audit={audit}"
                _show(Scenario(name, (1.5,), events, t0, (audit,)), draws)


def labels(draws: int) -> None:
    for events in (20_000, 100_000):
        five = Scenario(f"five labels, audit 5 %, N={events}", SLOPES, events, 0.985, (0.05,))
        _show(five, draws)
        one = Scenario(f"five labels, audit 1 %, N={events}", SLOPES, events, 0.975, (0.01,))
        _show(one, draws)
        mixed = Scenario(
            f"five labels, audit 1 % then 5 %, 0.1 % of reviews unanswered, N={events}",
            SLOPES,
            events,
            0.975,
            (0.01, 0.05),
            expired_share=0.001,
        )
        _show(mixed, draws)


def simultaneous(draws: int) -> None:
    scenario = Scenario("five labels, audit 5 %, N=100000", SLOPES, 100_000, 0.985, (0.05,))
    _show(scenario, draws, simultaneous=True)


def start(draws: int) -> None:
    for events in (20_000, 100_000):
        scenario = Scenario(f"five labels, audit 5 %, N={events}", SLOPES, events, 0.985, (0.05,))
        for fraction in (1.0, 0.5):
            _show(scenario, draws, start_fraction=fraction)


def _show(
    scenario: Scenario, draws: int, *, simultaneous: bool = False, start_fraction: float = 1.0
) -> None:
    started = time.perf_counter()
    outcomes = simulate(
        scenario,
        GRID,
        draws=draws,
        alpha=ALPHA,
        delta=DELTA,
        seed=1,
        simultaneous=simultaneous,
        start_fraction=start_fraction,
    )
    took = time.perf_counter() - started
    print(outcomes.report())
    print(f"  start_fraction {start_fraction}; {took:.1f} s\n", flush=True)


SECTIONS = {
    "economics": economics,
    "labels": labels,
    "simultaneous": simultaneous,
    "start": start,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args()
    for name in args.only or SECTIONS:
        print(f"== {name} ==\n", flush=True)
        SECTIONS[name](args.draws)


if __name__ == "__main__":
    main()
