"""Exact binomial upper bounds on an error rate, and the label counts they imply.

Everything here is about one question: after ``k`` errors among ``n`` reviewed predictions,
how high can the true error rate still be? The answer used throughout is the exact one-sided
Clopper-Pearson bound, ``beta.ppf(1 - delta, k + 1, n - k)``: the true rate exceeds it with
probability at most ``delta`` whatever the rate is, for every ``n`` (no normal approximation).
Its dual is the binomial test of H0 "error > alpha" with p-value ``binom.cdf(k, n, alpha)``: the
bound is at most alpha exactly when that p-value is at most delta.

:func:`stratified_upper_bound` extends it to labels that come from several sampling strata (a
fully reviewed band and audit samples at known rates); see its docstring for the assumptions.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "clopper_pearson_upper",
    "labels_needed_for_power",
    "labels_needed_zero_errors",
    "split_delta",
    "stratified_upper_bound",
]

#: Largest sample size :func:`labels_needed_for_power` searches before giving up.
MAX_LABELS: int = 50_000_000


def clopper_pearson_upper(errors: ArrayLike, n: ArrayLike, delta: ArrayLike) -> NDArray[np.float64]:
    """Exact one-sided (1 - delta) upper confidence bound on a binomial error rate.

    ``errors``, ``n`` and ``delta`` broadcast against each other. With ``n == 0`` (nothing
    observed) or ``errors == n`` the bound is 1.0. Guarantee: if ``errors ~ Binomial(n, p)``
    then ``P(p > bound) <= delta`` for every p.
    """
    k = np.asarray(errors, dtype=np.float64)
    trials = np.asarray(n, dtype=np.float64)
    level = np.asarray(delta, dtype=np.float64)
    if np.any(k < 0) or np.any(k > trials):
        raise ValueError("errors must lie in [0, n]")
    if np.any(level <= 0) or np.any(level >= 1):
        raise ValueError(f"delta must lie in (0, 1), got {level}")
    k, trials, level = np.broadcast_arrays(k, trials, level)
    bound = np.ones(k.shape, dtype=np.float64)
    open_ = (trials > 0) & (k < trials)
    if np.any(open_):
        bound[open_] = stats.beta.ppf(1.0 - level[open_], k[open_] + 1.0, trials[open_] - k[open_])
    return bound


@lru_cache(maxsize=256)
def labels_needed_zero_errors(alpha: float, delta: float) -> int:
    """Fewest labelled predictions whose bound can reach ``alpha``: all must be correct.

    ``ceil(ln(1/delta) / -ln(1 - alpha))``: 149 for alpha 2 %, delta 5 %. With fewer, even zero
    errors leave the Clopper-Pearson bound above alpha.
    """
    _check_rate("alpha", alpha)
    _check_rate("delta", delta)
    return math.ceil(math.log(1.0 / delta) / -math.log1p(-alpha) - 1e-9)


@lru_cache(maxsize=256)
def labels_needed_for_power(
    true_error: float, alpha: float, delta: float, power: float = 0.8
) -> int:
    """Fewest labelled predictions for which the bound passes alpha with probability ``power``.

    If the true error of the region is ``true_error`` (< alpha) and ``n`` uniformly sampled
    predictions are labelled, the Clopper-Pearson bound at delta is at most alpha with
    probability ``P(Binomial(n, true_error) <= k_max(n))``, ``k_max`` the most errors the test
    tolerates at ``n``. The result is the first ``n`` at which that reaches ``power`` (about 390,
    970 and 4,320 for true errors of 0.5, 1 and 1.5 % at alpha 2 %, delta 5 %). Power is a
    sawtooth in ``n`` (discrete errors), so a few sizes just above may dip slightly below it.
    """
    _check_rate("alpha", alpha)
    _check_rate("delta", delta)
    _check_rate("power", power)
    if not 0.0 <= true_error < alpha:
        raise ValueError(
            f"true_error {true_error} must lie in [0, alpha={alpha}): at or above alpha no "
            "number of labels certifies it"
        )
    low = 1
    high = labels_needed_zero_errors(alpha, delta) * 2
    while low <= MAX_LABELS:
        sizes = np.arange(low, high + 1, dtype=np.float64)
        achieved = _power(sizes, true_error, alpha, delta)
        reached = np.flatnonzero(achieved >= power)
        if reached.size:
            return int(sizes[reached[0]])
        low, high = high + 1, high * 2
    raise ValueError(
        f"more than {MAX_LABELS} labels would be needed for power {power} at true error "
        f"{true_error} (alpha {alpha}): pick a lower planning error"
    )


def _power(
    sizes: NDArray[np.float64], true_error: float, alpha: float, delta: float
) -> NDArray[np.float64]:
    """P(the bound at delta is <= alpha) when errors ~ Binomial(size, true_error)."""
    # k_max: the largest k with binom.cdf(k, n, alpha) <= delta (-1 when even 0 errors fail).
    k = stats.binom.ppf(delta, sizes, alpha)
    k = np.where(stats.binom.cdf(k, sizes, alpha) <= delta, k, k - 1)
    return np.asarray(np.where(k >= 0, stats.binom.cdf(k, sizes, true_error), 0.0), np.float64)


def split_delta(
    stratum_events: NDArray[np.float64], propensities: NDArray[np.float64], delta: float
) -> NDArray[np.float64]:
    """Share ``delta`` among strata (rows) for every threshold (column), Bonferroni style.

    Each non-empty stratum gets a share proportional to ``sqrt(events / propensity)``, the scale
    of its estimate's standard error if every stratum had the same error rate (a stratum with
    few labels for its events needs the larger share); empty strata get nothing, and columns
    with no event at all get zeros. The shares depend on event counts and logged propensities,
    never on answers. The bounds treat them as fixed: event counts move by about
    ``1 / sqrt(events)``, little next to the labels' noise (the simulations in
    tests/unit/thresholds check the procedure as a whole, shares included).
    """
    scale = np.sqrt(stratum_events / propensities[:, None])
    total = scale.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, scale / total, 0.0)
    return np.asarray(share * delta, dtype=np.float64)


def stratified_upper_bound(
    errors: NDArray[np.float64],
    trials: NDArray[np.float64],
    propensities: NDArray[np.float64],
    deltas: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Upper bound on ``sum_h q_h / propensity_h`` from per-stratum error counts.

    ``errors`` has one row per stratum and one column per threshold (leading axes, if any, are
    separate problems computed together); ``trials`` one value per column (with the same
    leading axes); ``deltas`` the rows' shares of delta (:func:`split_delta`; a row with share
    0 must have no error). Model: ``errors[h] ~ Binomial(trials, q_h)`` for each stratum, where
    ``q_h = propensity_h * P(stratum h and wrong)`` -- each of ``trials`` independent events is
    an *observed* error of stratum h with that probability when stratum-h events are reviewed
    with probability ``propensity_h`` independently of whether they are wrong. The target
    ``sum_h q_h / propensity_h`` is then ``P(wrong)``. Each stratum gets a Clopper-Pearson bound
    at its share of delta, so by the union bound the sum is exceeded with probability at most
    ``sum(deltas)``. The result is capped at 1.
    """
    counts = np.asarray(errors, dtype=np.float64)
    n = np.broadcast_to(np.asarray(trials, dtype=np.float64)[..., None, :], counts.shape)
    shares = np.broadcast_to(deltas, counts.shape)
    live = shares > 0
    if np.any(counts[~live] > 0):
        raise ValueError("a stratum with errors was given no share of delta")
    per_stratum = np.zeros(counts.shape, dtype=np.float64)
    per_stratum[live] = clopper_pearson_upper(counts[live], n[live], shares[live])
    total = (per_stratum / propensities[:, None]).sum(axis=-2)
    return np.asarray(np.minimum(total, 1.0), dtype=np.float64)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
