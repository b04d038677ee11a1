"""Per-threshold counts, Horvitz-Thompson estimates and stratified bounds, worked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_router.thresholds import (
    LabelHistory,
    clopper_pearson_upper,
    evaluate,
    quantile_grid,
    uniform_grid,
)
from stream_router.thresholds.bounds import split_delta

DELTA = 0.05
GRID = np.array([0.5, 0.8])


def _events(
    count: int, score: float, propensity: float, labelled: int, wrong: int, requested: int = 0
) -> dict[str, np.ndarray]:
    """``count`` events at one score: the first ``labelled`` answered (``wrong`` of them wrong),
    the next ``requested`` sent to review without an answer."""
    index = np.arange(count)
    return {
        "scores": np.full(count, score),
        "propensity": np.full(count, propensity),
        "labelled": index < labelled,
        "wrong": index < wrong,
        "requested": index < labelled + requested,
    }


def _history(*parts: dict[str, np.ndarray]) -> LabelHistory:
    joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return LabelHistory(**joined)


def _router_history() -> LabelHistory:
    return _history(
        _events(500, 0.3, 1.0, labelled=500, wrong=100),  # reviewed, below the grid
        _events(1000, 0.6, 1.0, labelled=990, wrong=20, requested=10),  # reviewed band
        _events(2000, 0.9, 0.05, labelled=100, wrong=1),  # audited above t0 = 0.8
    )


def test_counts_and_horvitz_thompson_estimates() -> None:
    table = evaluate(_router_history(), GRID, DELTA)
    assert table.events_total == 3500
    assert table.events.tolist() == [3000, 2000]
    assert table.accept_rate == pytest.approx([3000 / 3500, 2000 / 3500])
    assert table.labelled.tolist() == [1090, 100]
    assert table.errors.tolist() == [21, 1]
    assert table.unanswered.tolist() == [10, 0]
    assert table.unknowable.tolist() == [0, 0]
    # economics.md: [sum over reviewed errors + sum over audited errors / pi] / N(s >= t)
    assert table.error_estimate == pytest.approx([(20 + 1 / 0.05) / 3000, (1 / 0.05) / 2000])
    assert table.joint_error_estimate == pytest.approx([40 / 3500, 20 / 3500])
    assert table.strata == (1.0, 0.05)


def test_bound_combines_the_strata_and_counts_unanswered_reviews_as_errors() -> None:
    table = evaluate(_router_history(), GRID, DELTA)
    shares = split_delta(np.array([[1000.0], [2000.0]]), np.array([1.0, 0.05]), DELTA)[:, 0]
    below_t0 = clopper_pearson_upper(20 + 10, 3000, shares[0]) + (
        clopper_pearson_upper(1, 3000, shares[1]) / 0.05
    )
    above_t0 = clopper_pearson_upper(1, 2000, DELTA) / 0.05  # one stratum: all of delta
    assert table.error_bound == pytest.approx([below_t0, above_t0])
    zero = [
        clopper_pearson_upper(10, 3000, shares[0])
        + clopper_pearson_upper(0, 3000, shares[1]) / 0.05,
        clopper_pearson_upper(0, 2000, DELTA) / 0.05,
    ]
    assert table.zero_error_bound == pytest.approx(zero)
    joint_above = clopper_pearson_upper(1, 3500, DELTA) / 0.05
    assert table.joint_error_bound[1] == pytest.approx(joint_above)


def test_fully_labelled_uniform_data_gets_plain_clopper_pearson() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(3000)
    wrong = rng.random(3000) < 0.3 * (1 - scores)
    history = LabelHistory(scores, np.ones(3000, bool), wrong, np.ones(3000))
    grid = uniform_grid(0.0, 0.99, 50)
    table = evaluate(history, grid, DELTA)
    assert np.array_equal(table.labelled, table.events)
    assert table.error_bound == pytest.approx(
        clopper_pearson_upper(table.errors, table.labelled, DELTA)
    )
    assert table.error_estimate == pytest.approx(table.errors / table.events)


def test_unreviewable_events_make_every_region_above_them_unknowable() -> None:
    history = _history(
        _events(1000, 0.6, 1.0, labelled=1000, wrong=5),
        _events(300, 0.9, 0.0, labelled=0, wrong=0),  # accepted, no route could review them
    )
    table = evaluate(history, GRID, DELTA)
    assert table.unknowable.tolist() == [300, 300]
    assert table.error_bound.tolist() == [1.0, 1.0]
    assert table.zero_error_bound.tolist() == [1.0, 1.0]
    assert np.isnan(table.error_estimate).all()


def test_an_answered_event_of_propensity_zero_counts_as_reviewed() -> None:
    history = _history(
        _events(1000, 0.6, 1.0, labelled=1000, wrong=5),
        _events(10, 0.9, 0.0, labelled=10, wrong=1),  # answered anyway: its truth is known
    )
    table = evaluate(history, GRID, DELTA)
    assert table.unknowable.tolist() == [0, 0]
    assert table.strata == (1.0,)
    assert table.error_bound[0] == pytest.approx(clopper_pearson_upper(6, 1010, DELTA))


def test_audit_strata_are_kept_apart_and_binned_beyond_the_limit() -> None:
    few = _history(
        _events(1000, 0.9, 0.05, labelled=50, wrong=0),
        _events(1000, 0.9, 0.01, labelled=10, wrong=0),
    )
    assert evaluate(few, GRID, DELTA).strata == (1.0, 0.05, 0.01)
    rates = np.geomspace(0.01, 0.2, 12)
    many = _history(*(_events(500, 0.9, rate, labelled=int(500 * rate), wrong=0) for rate in rates))
    strata = evaluate(many, GRID, DELTA).strata
    audit = np.array(strata[1:])
    assert 1 < audit.size < rates.size
    # Each bin is bounded with its smallest member, so never above any member's propensity.
    assert np.isclose(audit[:, None], rates[None, :]).any(axis=1).all()
    assert audit.min() == pytest.approx(rates[0])


def test_rows_are_plain_json() -> None:
    history = _history(_events(10, 0.6, 0.0, labelled=0, wrong=0))
    rows = evaluate(history, GRID, DELTA).rows()
    text = json.dumps(rows)
    assert rows[0]["threshold"] == 0.5
    assert rows[0]["error_estimate"] is None
    assert "NaN" not in text


def test_grids_use_label_free_information() -> None:
    assert uniform_grid(0.9, 0.999).shape == (200,)
    scores = np.random.default_rng(1).random(10_000)
    grid = quantile_grid(scores, points=11, min_accept_rate=0.5)
    accept = [(scores >= t).mean() for t in grid]
    assert accept == pytest.approx(np.linspace(1.0, 0.5, 11), abs=1e-3)
    assert np.all(np.diff(grid) > 0)


def test_history_checks_name_the_field() -> None:
    with pytest.raises(ValueError, match="propensity must lie"):
        LabelHistory(np.ones(2), np.ones(2, bool), np.zeros(2, bool), np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="wrong has shape"):
        LabelHistory(np.ones(2), np.ones(2, bool), np.zeros(3, bool), np.ones(2))
    with pytest.raises(ValueError, match="strictly increasing"):
        evaluate(
            LabelHistory(np.ones(2), np.ones(2, bool), np.zeros(2, bool), np.ones(2)),
            [0.5, 0.5],
            DELTA,
        )


def test_unanswered_audits_count_as_errors_only_when_known() -> None:
    audit = _events(2000, 0.9, 0.05, labelled=90, wrong=1, requested=10)
    with_requests = evaluate(_history(audit), GRID, DELTA)
    assert with_requests.unanswered.tolist() == [10, 10]
    assert with_requests.error_bound[1] == pytest.approx(
        clopper_pearson_upper(1 + 10, 2000, DELTA) / 0.05
    )
    # Without ``requested`` an unanswered audit cannot be told from an undrawn event.
    audit_only = {key: value for key, value in audit.items() if key != "requested"}
    without = evaluate(LabelHistory(**audit_only), GRID, DELTA)
    assert without.unanswered.tolist() == [0, 0]
    assert without.error_bound[1] == pytest.approx(clopper_pearson_upper(1, 2000, DELTA) / 0.05)
    # A propensity-1 event was sent whatever ``requested`` says.
    band = _events(100, 0.6, 1.0, labelled=95, wrong=0)
    assert evaluate(_history(band), GRID, DELTA).unanswered.tolist() == [5, 0]
