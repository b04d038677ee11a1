"""Exact bounds and label counts against scipy's own binomial test and economics.md's figures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stream_router.thresholds import (
    clopper_pearson_upper,
    labels_needed_for_power,
    labels_needed_zero_errors,
)
from stream_router.thresholds.bounds import split_delta, stratified_upper_bound

ALPHA, DELTA = 0.02, 0.05


def test_clopper_pearson_is_the_exact_binomial_interval() -> None:
    # The one-sided (1 - delta) bound is the upper end of the two-sided exact interval at
    # 1 - 2 delta, computed by an independent scipy path.
    for k, n in [(0, 10), (1, 149), (3, 300), (17, 1000), (99, 100)]:
        exact = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * DELTA).high
        assert clopper_pearson_upper(k, n, DELTA) == pytest.approx(exact, rel=1e-9)


def test_clopper_pearson_edges_and_broadcasting() -> None:
    bounds = clopper_pearson_upper([0, 5, 0, 3], [0, 5, 149, 300], DELTA)
    assert bounds[0] == 1.0  # nothing observed
    assert bounds[1] == 1.0  # every one wrong
    assert bounds[2] == pytest.approx(1 - DELTA ** (1 / 149))
    assert bounds.shape == (4,)
    per_delta = clopper_pearson_upper(2, 500, np.array([0.01, 0.05, 0.2]))
    assert np.all(np.diff(per_delta) < 0)  # more confidence, higher bound


def test_bound_at_most_alpha_exactly_when_the_binomial_test_rejects() -> None:
    n = np.arange(1, 2000)[:, None]
    k = np.arange(0, 40)[None, :]
    k, n = np.broadcast_arrays(k, n)
    valid = k <= n
    passes = clopper_pearson_upper(k[valid], n[valid], DELTA) <= ALPHA
    rejects = stats.binom.cdf(k[valid], n[valid], ALPHA) <= DELTA
    assert np.array_equal(passes, rejects)


def test_clopper_pearson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match=r"\[0, n\]"):
        clopper_pearson_upper(5, 4, DELTA)
    with pytest.raises(ValueError, match="delta"):
        clopper_pearson_upper(0, 4, 1.0)


def test_zero_error_minimum_is_149_for_two_percent_at_five() -> None:
    needed = labels_needed_zero_errors(ALPHA, DELTA)
    assert needed == 149
    assert clopper_pearson_upper(0, needed, DELTA) <= ALPHA
    assert clopper_pearson_upper(0, needed - 1, DELTA) > ALPHA


@pytest.mark.parametrize(("true_error", "about"), [(0.005, 390), (0.01, 970), (0.015, 4320)])
def test_labels_for_eighty_percent_power_match_the_figures(true_error: float, about: int) -> None:
    needed = labels_needed_for_power(true_error, ALPHA, DELTA)
    assert round(needed, -1) == about
    # It is the first size that reaches the power: check by the definition, on its own.
    for n, reaches in [(needed, True), (needed - 1, False)]:
        ks = np.arange(n + 1)
        k_max = ks[stats.binom.cdf(ks, n, ALPHA) <= DELTA].max()
        assert bool(stats.binom.cdf(k_max, n, true_error) >= 0.8) == reaches


def test_labels_for_power_refuses_an_error_at_or_above_alpha() -> None:
    with pytest.raises(ValueError, match="no number of labels"):
        labels_needed_for_power(ALPHA, ALPHA, DELTA)


def test_split_delta_follows_label_free_scale_and_skips_empty_strata() -> None:
    events = np.array([[400.0, 0.0], [1000.0, 1000.0]])  # reviewed band, audit stratum
    propensities = np.array([1.0, 0.05])
    shares = split_delta(events, propensities, DELTA)
    assert shares.sum(axis=0) == pytest.approx([DELTA, DELTA])
    assert shares[0, 1] == 0.0  # no reviewed event above t0: no share
    ratio = np.sqrt(1000 / 0.05) / np.sqrt(400 / 1.0)
    assert shares[1, 0] / shares[0, 0] == pytest.approx(ratio)


def test_stratified_bound_is_a_union_of_per_stratum_bounds() -> None:
    errors = np.array([[10.0], [3.0]])
    trials = np.array([5000.0])
    propensities = np.array([1.0, 0.05])
    deltas = np.array([[0.01], [0.04]])
    bound = stratified_upper_bound(errors, trials, propensities, deltas)
    expected = clopper_pearson_upper(10, 5000, 0.01) + clopper_pearson_upper(3, 5000, 0.04) / 0.05
    assert bound == pytest.approx([expected])
