from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from stream_router.policies.confidence import ConfidencePolicy
from stream_router.testing import make_prediction
from tests.unit.policies.conftest import build

unit = st.floats(min_value=0.0, max_value=1.0)
positive_unit = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)


def policy(**params: Any) -> ConfidencePolicy:
    return build(ConfidencePolicy, params)


def reviews(p: ConfidencePolicy, confidence: float, label: str = "cat") -> bool:
    return p.check(make_prediction(confidence=confidence, label=label)).review


def test_below_reviews_low_confidence_with_a_readable_reason() -> None:
    p = policy(below=0.7)
    low = p.check(make_prediction(confidence=0.62, label="cat"))
    high = p.check(make_prediction(confidence=0.75, label="cat"))
    assert low.review
    assert low.reason == "confidence 0.62 < 0.7 (label cat)"
    assert not high.review
    assert high.reason == "confidence 0.75 >= 0.7 (label cat)"


@given(below=positive_unit)
def test_below_edge_is_exact(below: float) -> None:
    p = policy(below=below)
    assert not reviews(p, below), "a confidence equal to below is accepted"
    assert reviews(p, math.nextafter(below, 0.0))
    if below < 1.0:
        assert not reviews(p, math.nextafter(below, 1.0))


@given(below=positive_unit, confidence=unit)
def test_below_means_strictly_less(below: float, confidence: float) -> None:
    assert reviews(policy(below=below), confidence) == (confidence < below)


def test_below_one_accepts_exactly_one() -> None:
    p = policy(below=1.0)
    assert reviews(p, math.nextafter(1.0, 0.0))
    assert not reviews(p, 1.0)


@given(a=unit, b=unit)
def test_range_edges_are_exact(a: float, b: float) -> None:
    assume(a != b)
    low, high = min(a, b), max(a, b)
    p = policy(ranges=[{"min": low, "max": high}])
    assert reviews(p, low), "min is inclusive"
    assert reviews(p, math.nextafter(high, 0.0))
    if low > 0.0:
        assert not reviews(p, math.nextafter(low, 0.0))
    if high < 1.0:
        assert not reviews(p, high), "max is exclusive below 1"
    else:
        assert reviews(p, 1.0), "max 1 includes a confidence of exactly 1"


@given(confidence=unit)
def test_ranges_are_a_union(confidence: float) -> None:
    p = policy(ranges=[{"min": 0.8, "max": 1.0}, {"min": 0.0, "max": 0.3}])
    assert reviews(p, confidence) == (confidence < 0.3 or confidence >= 0.8)


def test_range_reasons_name_the_range() -> None:
    p = policy(ranges=[{"min": 0.3, "max": 0.7}, {"min": 0.9, "max": 1.0}])
    assert (
        p.check(make_prediction(confidence=0.5)).reason
        == "confidence 0.5 in [0.3, 0.7) (label cat)"
    )
    assert p.check(make_prediction(confidence=1.0)).reason == (
        "confidence 1.0 in [0.9, 1.0] (label cat)"
    )
    outside = p.check(make_prediction(confidence=0.8))
    assert not outside.review
    assert outside.reason == "confidence 0.8 outside [0.3, 0.7), [0.9, 1.0] (label cat)"


def test_reason_shows_full_precision_at_an_edge() -> None:
    just_below = math.nextafter(0.7, 0.0)
    verdict = policy(below=0.7).check(make_prediction(confidence=just_below))
    assert verdict.reason == f"confidence {just_below!r} < 0.7 (label cat)"


def test_per_label_rule_replaces_the_global_rule() -> None:
    p = policy(below=0.7, per_label={"fraud": {"ranges": [{"min": 0.0, "max": 0.95}]}})
    assert not reviews(p, 0.8, label="cat")
    assert reviews(p, 0.8, label="fraud")
    assert not reviews(p, 0.96, label="fraud")
    # the global rule does not add to the per-label one
    p = policy(below=0.7, per_label={"cat": {"below": 0.5}})
    assert not reviews(p, 0.6, label="cat")
    assert reviews(p, 0.6, label="dog")


def test_label_without_any_rule_is_accepted() -> None:
    p = policy(per_label={"fraud": {"below": 0.9}})
    verdict = p.check(make_prediction(confidence=0.1, label="cat"))
    assert not verdict.review
    assert verdict.reason == "no confidence rule for label cat"


@pytest.mark.parametrize(
    ("confidence", "shown"),
    [(math.nan, "nan"), (math.inf, "inf"), (-0.1, "-0.1"), (87.0, "87.0"), ("0.5", "'0.5'")],
)
def test_invalid_confidence_is_reviewed(confidence: Any, shown: str) -> None:
    verdict = policy(below=0.1).check(make_prediction(confidence=confidence))
    assert verdict.review
    assert verdict.reason == f"confidence {shown} is not in [0, 1] (label cat)"


def test_integer_confidence_is_a_number() -> None:
    p = policy(below=0.5)
    assert reviews(p, 0)
    assert not reviews(p, 1)


def test_evaluate_gives_one_verdict_per_prediction_in_order() -> None:
    p = policy(below=0.5)
    batch = [make_prediction(confidence=c) for c in (0.1, 0.9, 0.4)]
    assert [v.review for v in p.evaluate(batch)] == [True, False, True]


@pytest.mark.parametrize(
    ("params", "loc", "message"),
    [
        ({"below": 0}, ("below",), "greater than 0"),
        ({"below": 1.5}, ("below",), "less than or equal to 1"),
        ({"below": math.nan}, ("below",), "finite"),
        ({"below": 0.5, "ranges": [{"min": 0, "max": 0.2}]}, ("ranges",), "not both"),
        ({"ranges": []}, ("ranges",), "at least 1"),
        ({"ranges": [{"min": 0.5, "max": 0.5}]}, ("ranges", 0), "min 0.5 must be below max 0.5"),
        ({"ranges": [{"min": 0.2, "max": 1.1}]}, ("ranges", 0, "max"), "less than or equal"),
        ({"ranges": [{"min": 0.0, "max": 0.6}, {"min": 0.5, "max": 0.8}]}, ("ranges",), "overlap"),
        ({}, (), "set 'below', 'ranges' or 'per_label'"),
        ({"per_label": {"cat": {}}}, ("per_label", "cat"), "needs 'below' or 'ranges'"),
        ({"per_label": {"cat": {"below": 2}}}, ("per_label", "cat", "below"), "less than"),
        ({"per_label": {"": {"below": 0.5}}}, ("per_label",), "non-empty"),
        ({"bellow": 0.5}, ("bellow",), "Extra inputs"),
    ],
)
def test_bad_params_name_the_field(
    params: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        policy(**params)
    errors = caught.value.errors()
    assert [error["loc"] for error in errors] == [loc]
    assert message in errors[0]["msg"]


def test_touching_ranges_are_allowed() -> None:
    p = policy(ranges=[{"min": 0.5, "max": 0.7}, {"min": 0.0, "max": 0.5}])
    assert reviews(p, 0.5)
    assert not reviews(p, 0.7)
