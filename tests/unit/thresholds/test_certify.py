"""The fixed-sequence scan, its outcomes and reasons, several labels, and the cost curve."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from stream_router.thresholds import (
    LabelHistory,
    Outcome,
    certify,
    certify_labels,
    chow_threshold,
    evaluate,
    plug_in_threshold,
    review_spend,
    scan,
    uniform_grid,
)
from stream_router.thresholds.certify import fixed_sequence

ALPHA, DELTA = 0.02, 0.05
GRID = uniform_grid(0.90, 0.999, 200)


def _router(
    rng: np.random.Generator, events: int, audit: float, slope: float = 1.5, t0: float = 0.985
) -> LabelHistory:
    scores = rng.random(events) ** (1 / 30)
    wrong = rng.random(events) < np.minimum(1.0, slope * (1 - scores))
    below = scores < t0
    propensity = np.where(below, 1.0, audit)
    labelled = below | (rng.random(events) < audit)
    return LabelHistory(scores, labelled, wrong & labelled, propensity)


def test_fixed_sequence_passes_until_the_first_failure() -> None:
    bounds = np.array([0.001, 0.03, 0.01, 0.01, 0.015, 0.5])
    certified, stop = fixed_sequence(bounds, ALPHA, start=4)
    assert certified.tolist() == [False, False, True, True, True, False]
    assert stop == 1  # 0.001 at index 0 is never reached: testing stopped at 0.03
    certified, stop = fixed_sequence(bounds[:5], ALPHA, start=4)
    assert stop == 1
    certified, stop = fixed_sequence(np.array([0.01, 0.01]), ALPHA, start=1)
    assert certified.all()
    assert stop is None


def test_scan_starts_at_the_strictest_threshold_that_could_pass() -> None:
    table = evaluate(_router(np.random.default_rng(0), 20_000, 0.05), GRID, DELTA)
    size = len(table)
    zero = np.linspace(0.05, 0.001, size)  # more labels as the threshold loosens
    bound = np.full(size, 0.015)
    bound[:40] = 0.03  # the error rises at loose thresholds
    shaped = dataclasses.replace(table, zero_error_bound=zero, error_bound=bound)
    result = scan(shaped, ALPHA, start_fraction=1.0)
    start = int(np.flatnonzero(zero <= ALPHA)[-1])
    assert result.start_index == start
    assert result.stop_index == 39
    assert result.index == 40
    assert result.certified.sum() == start - 40 + 1
    assert result.outcome is Outcome.CERTIFIED
    # A start with room for errors begins lower, where the zero-error bound is smaller.
    lower = scan(shaped, ALPHA, start_fraction=0.5)
    assert lower.start_index == int(np.flatnonzero(zero <= ALPHA / 2)[-1])


def test_certified_threshold_reports_reason_and_accept_rate() -> None:
    history = _router(np.random.default_rng(2), 100_000, 0.05)
    result = certify(history, GRID, alpha=ALPHA, delta=DELTA, start_fraction=0.5)
    assert result.outcome is Outcome.CERTIFIED
    assert result.threshold is not None
    index = result.index
    assert index is not None
    assert result.table.error_bound[index] <= ALPHA
    assert result.accept_rate == result.table.accept_rate[index]
    assert result.shortfall is None
    assert f"{result.threshold:.6g}" in result.reason
    # The loosest certified: everything from the start down to it passed, nothing below it.
    assert result.certified[index : result.start_index + 1].all()
    assert not result.certified[:index].any()


def test_no_audit_above_the_review_threshold_is_unknowable() -> None:
    rng = np.random.default_rng(4)
    history = _router(rng, 20_000, audit=0.0)
    result = certify(history, GRID, alpha=ALPHA, delta=DELTA)
    assert result.outcome is Outcome.UNKNOWABLE
    assert result.threshold is None
    assert result.accept_rate == 0.0
    assert "unknowable" in result.reason
    assert "sample route" in result.reason
    shortfall = result.shortfall
    assert shortfall is not None
    assert shortfall.needed_zero_errors == 149
    assert shortfall.needed_for_power == 969  # planning error alpha / 2 = 1 %
    assert shortfall.labelled == 0
    assert shortfall.more_zero_errors == 149


def test_too_few_labels_names_the_shortfall() -> None:
    # t0 at the top of the grid: labels above it come from a 0.1 % audit only, and the
    # reviewed band below t0 is too small to carry the bound.
    history = _router(np.random.default_rng(5), 3_000, audit=0.001, t0=0.999)
    history = LabelHistory(
        history.scores,
        history.labelled & (history.scores >= 0.995),
        history.wrong,
        np.where(history.scores >= 0.995, 0.001, history.propensity),
    )
    result = certify(history, GRID, alpha=ALPHA, delta=DELTA, planning_error=0.005)
    assert result.outcome is Outcome.TOO_FEW_LABELS
    assert "too few labels" in result.reason
    assert result.shortfall is not None
    assert result.shortfall.needed_for_power == 386
    assert result.shortfall.more_for_power == 386 - result.shortfall.labelled


def test_a_failing_first_test_says_so() -> None:
    rng = np.random.default_rng(6)
    history = _router(rng, 20_000, audit=0.05, slope=8.0)  # far above alpha everywhere
    result = certify(history, GRID, alpha=ALPHA, delta=DELTA)
    assert result.outcome is Outcome.FIRST_TEST_FAILED
    assert result.start_index is not None
    assert result.stop_index == result.start_index
    assert "failed" in result.reason
    assert result.shortfall is not None


def test_simultaneous_mode_spends_delta_over_the_labels() -> None:
    rng = np.random.default_rng(7)
    histories = {name: _router(rng, 5_000, 0.05) for name in ("a", "b", "c", "d")}
    together = certify_labels(histories, GRID, alpha=ALPHA, delta=DELTA)
    assert {r.delta for r in together.values()} == {DELTA / 4}
    assert {r.table.delta for r in together.values()} == {DELTA / 4}
    apart = certify_labels(
        histories,
        GRID,
        alpha={"a": 0.05, "b": 0.02, "c": 0.02, "d": 0.02},
        delta=DELTA,
        simultaneous=False,
    )
    assert {r.delta for r in apart.values()} == {DELTA}
    assert apart["a"].alpha == 0.05
    # A per-label bound at delta / K is higher than at delta: never looser than the separate one.
    for name in histories:
        assert np.all(together[name].table.error_bound >= apart[name].table.error_bound - 1e-12)


def test_review_spend_counts_reviews_below_and_the_audit_above() -> None:
    table = evaluate(_router(np.random.default_rng(8), 10_000, 0.05), GRID, DELTA)
    spend = review_spend(table, review_cost=0.08, audit_rate=0.02)
    below = table.events_total - table.events
    assert spend.reviews == pytest.approx(below + 0.02 * table.events)
    assert spend.spend == pytest.approx(spend.reviews * 0.08)
    assert np.all(np.diff(spend.reviews) >= 0)  # stricter thresholds review more


def test_chow_picks_the_least_expected_cost() -> None:
    table = evaluate(_router(np.random.default_rng(9), 50_000, 0.05), GRID, DELTA)
    choice = chow_threshold(table, review_cost=0.1, error_cost=5.0)
    by_hand = (table.events_total - table.events) * 0.1 + 5.0 * (
        table.joint_error_estimate * table.events_total
    )
    assert choice.index == int(np.argmin(by_hand))
    assert choice.threshold == table.thresholds[choice.index]
    # Cheap errors: accept as much as possible; dear errors: review more.
    assert chow_threshold(table, review_cost=0.1, error_cost=0.2).index == 0
    dear = chow_threshold(table, review_cost=0.1, error_cost=500.0).index
    assert dear is not None
    assert dear > choice.index


def test_plug_in_is_the_loosest_point_estimate_under_alpha() -> None:
    table = evaluate(_router(np.random.default_rng(10), 50_000, 0.05), GRID, DELTA)
    index = plug_in_threshold(table, ALPHA)
    assert index is not None
    assert table.error_estimate[index] <= ALPHA
    assert not np.any(table.error_estimate[:index] <= ALPHA)


def test_summary_is_plain_json() -> None:
    for history in (
        _router(np.random.default_rng(11), 50_000, 0.05),
        _router(np.random.default_rng(12), 5_000, 0.0),
    ):
        summary = certify(history, GRID, alpha=ALPHA, delta=DELTA).summary()
        text = json.dumps(summary, allow_nan=False)
        assert summary["outcome"] in text
