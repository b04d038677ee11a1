"""Proof by simulation: certified thresholds meet alpha on future traffic at least 1 - delta of
the time; the naive plug-in does not.

Each draw is a fresh history of five labels (unequal error, equal traffic) from an
over-confident model (simulation.py), routed like the router: everything below t0 reviewed,
an audit sample above it. Every label is certified per label (delta each) and its recommended
threshold judged by its exact true selective error. Over DRAWS draws the share of violations
may exceed delta only by sampling noise (three standard errors). The check is shown able to
fail: the same scan over bounds shrunk to 60 % of their value (anti-conservative) violates far
more often than allowed in the scenario that certifies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_router.thresholds import uniform_grid
from tests.unit.thresholds.simulation import Outcomes, Scenario, simulate

ALPHA, DELTA, DRAWS = 0.02, 0.05, 1000
ALLOWANCE = DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / DRAWS)
GRID = uniform_grid(0.90, 0.999, 200)
SLOPES = (1.0, 1.5, 2.0, 3.0, 4.0)

AUDIT_5 = Scenario("audit 5 %", SLOPES, 20_000, current_threshold=0.985, audit_rates=(0.05,))
# A 1 % audit needs more traffic for the same labels: 50,000 events per label give about 180
# audited answers above t0 per label and draw.
AUDIT_1 = Scenario("audit 1 %", SLOPES, 50_000, current_threshold=0.985, audit_rates=(0.01,))
# The audit share raised from 1 % to 5 % half-way (two audited strata), and 0.1 % of reviews
# never answered (counted as errors): valid, but it certifies almost nothing (the bench has the
# figures), so it is not among the scenarios here.


_RUNS: dict[str, Outcomes] = {}


def _run(scenario: Scenario) -> Outcomes:
    """Simulate a scenario once per test session (the tests share the draws)."""
    if scenario.name not in _RUNS:
        result = simulate(scenario, GRID, draws=DRAWS, alpha=ALPHA, delta=DELTA, seed=20260601)
        print("\n" + result.report())
        _RUNS[scenario.name] = result
    return _RUNS[scenario.name]


@pytest.fixture(params=[AUDIT_5, AUDIT_1], ids=lambda s: s.name)
def outcomes(request: pytest.FixtureRequest) -> Outcomes:
    return _run(request.param)


def test_certified_thresholds_meet_alpha_on_future_traffic(outcomes: Outcomes) -> None:
    violations = outcomes.violation_rate()
    assert np.all(violations <= ALLOWANCE), (violations, ALLOWANCE)


def test_the_naive_plug_in_misses_alpha_in_many_draws(outcomes: Outcomes) -> None:
    naive = outcomes.naive_violation_rate()
    assert np.all(naive >= 0.30), naive


def test_certification_costs_accept_rate_but_never_exceeds_the_oracle(outcomes: Outcomes) -> None:
    assert np.all(outcomes.accept_rate() <= outcomes.oracle_accept_rate() + 1e-12)


def test_the_check_catches_an_anti_conservative_bound() -> None:
    # In the scenario that certifies, the scan over bounds at 60 % of the real ones (computed on
    # the same draws) must fail the same check.
    shrunk = _run(AUDIT_5).shrunk_violation_rate()
    assert shrunk.max() > ALLOWANCE, shrunk
