"""On fully labelled, uniform data the certification is MAPIE's fixed-sequence LTT.

Made comparable thus: MAPIE's ``BinaryClassificationController`` with the precision risk
(``1 - precision`` of the auto-accepted = our selective error, ``y_true`` = the model was right,
``predict_proba[:, 1]`` = the confidence), ``target_level = 1 - alpha``,
``confidence_level = 1 - delta``, ``fwer_method="fixed_sequence"``, and our grid from our scan's
start down, strictest first (MAPIE's fixed sequence starts at the first parameter; our start
rule is label-free, so handing it the same sequence changes nothing it guarantees). For binary
losses MAPIE's p-value is min(Hoeffding, ``binom.cdf(ceil(n * r_hat), n, alpha)``), the exact
binomial test, which is our Clopper-Pearson bound's dual.

One difference is MAPIE's arithmetic: ``r_hat = 1 - (n - k) / n`` in floating point, and
``ceil(n * r_hat)`` is ``k + 1`` instead of ``k`` for about half of the (k, n) pairs, so MAPIE
now and then tests one error more than there was and stops earlier. The test computes that
count the way MAPIE does, checks MAPIE's p-values against it (equal to ours where the count
is right, between ours and the inflated count's otherwise), and requires our recommendation
within one grid step of MAPIE's wherever the extra error did not move the first failure, and never
stricter than MAPIE's.
"""

from __future__ import annotations

import warnings

import numpy as np
from mapie.risk_control import BinaryClassificationController, precision
from numpy.typing import NDArray
from scipy import stats

from stream_router.thresholds import LabelHistory, certify, uniform_grid

ALPHA, DELTA = 0.02, 0.05
GRID = uniform_grid(0.90, 0.999, 200)


def _confidence_columns(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.column_stack([1.0 - scores, scores])


def _mapie_index(
    scores: NDArray[np.float64], wrong: NDArray[np.bool_], sequence: NDArray[np.float64]
) -> tuple[int | None, NDArray[np.float64]]:
    controller = BinaryClassificationController(
        predict_function=_confidence_columns,
        risk=precision,
        target_level=1 - ALPHA,
        confidence_level=1 - DELTA,
        list_predict_params=sequence,
        fwer_method="fixed_sequence",
    )
    with warnings.catch_warnings():
        # Raised when the empirical risk is not monotone along the sequence; the order is the
        # one given (strictest first) either way.
        warnings.filterwarnings("ignore", message="Fixed sequence testing requires a monotonic")
        # Raised when nothing is certified; compared below like any other outcome.
        warnings.filterwarnings("ignore", message="No predict parameters were found")
        controller.calibrate(scores, (~wrong).astype(int))
    assert controller.p_values is not None
    best = controller.best_predict_param
    index = None if best is None else int(np.argmin(np.abs(GRID - float(best))))  # type: ignore[arg-type]
    return index, np.asarray(controller.p_values[:, 0])


def _first_failure(p_values: NDArray[np.float64]) -> int:
    """Where a fixed-sequence scan over these p-values stops (their count if it never does)."""
    failures = np.flatnonzero(p_values > DELTA)
    return int(failures[0]) if failures.size else int(p_values.size)


def test_matches_mapie_fixed_sequence_on_fully_labelled_data() -> None:
    compared = exact_decisions = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        events = 5_000
        scores = rng.random(events) ** (1 / 30)
        wrong = rng.random(events) < np.minimum(1.0, 1.5 * (1 - scores))
        history = LabelHistory(scores, np.ones(events, bool), wrong, np.ones(events))
        ours = certify(history, GRID, alpha=ALPHA, delta=DELTA)
        assert ours.start_index is not None
        sequence = GRID[: ours.start_index + 1][::-1]
        mapie_index, p_values = _mapie_index(scores, wrong, sequence)

        n = ours.table.labelled[: ours.start_index + 1][::-1].astype(float)
        k = ours.table.errors[: ours.start_index + 1][::-1].astype(float)
        mapie_k = np.ceil(n * (1 - (n - k) / n))  # MAPIE's count, its arithmetic
        assert np.all((mapie_k == k) | (mapie_k == k + 1))
        ours_p = stats.binom.cdf(k, n, ALPHA)
        exact = mapie_k == k
        assert np.allclose(p_values[exact], ours_p[exact], rtol=1e-9, atol=0)
        # With the extra error, MAPIE's Hoeffding term may undercut its binomial one.
        inflated = stats.binom.cdf(mapie_k, n, ALPHA)
        assert np.all(p_values >= ours_p * (1 - 1e-9))
        assert np.all(p_values <= inflated * (1 + 1e-9))

        # Never stricter than MAPIE: its p-values are never below ours.
        if mapie_index is not None:
            assert ours.index is not None
            assert ours.index <= mapie_index
        if _first_failure(ours_p) == _first_failure(p_values):
            exact_decisions += 1
            if ours.index is None or mapie_index is None:
                assert ours.index == mapie_index  # both certify nothing
            else:
                assert abs(ours.index - mapie_index) <= 1
        compared += 1
    # The comparison must bite: in most datasets MAPIE's round-off moves no decision that counts.
    assert exact_decisions >= compared // 2
