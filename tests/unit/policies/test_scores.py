from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stream_router.policies.scores import EntropyPolicy, MarginPolicy
from stream_router.testing import make_prediction
from tests.unit.policies.conftest import build


def margin(**params: Any) -> MarginPolicy:
    return build(MarginPolicy, params)


def entropy(**params: Any) -> EntropyPolicy:
    return build(EntropyPolicy, params)


# --- margin ---------------------------------------------------------------------------------


def test_margin_reviews_a_close_call_and_names_both_classes() -> None:
    verdict = margin(min_margin=0.1).check(
        make_prediction(scores={"cat": 0.48, "dog": 0.44, "bird": 0.08})
    )
    assert verdict.review
    assert verdict.reason.startswith("margin 0.04")
    assert verdict.reason.endswith("< 0.1 between cat and dog")


def test_margin_accepts_a_clear_winner() -> None:
    verdict = margin(min_margin=0.1).check(make_prediction(scores={"cat": 0.25, "dog": 0.75}))
    assert not verdict.review
    assert verdict.reason == "margin 0.5 >= 0.1 between dog and cat"


def test_margin_equal_to_min_margin_is_accepted() -> None:
    p = margin(min_margin=0.5)
    assert not p.check(make_prediction(scores={"cat": 0.75, "dog": 0.25})).review
    assert p.check(make_prediction(scores={"cat": 0.75, "dog": math.nextafter(0.25, 1)})).review


@given(
    scores=st.dictionaries(
        st.text(max_size=3), st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=6
    ),
    min_margin=st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
)
def test_margin_is_top_one_minus_top_two(scores: dict[str, float], min_margin: float) -> None:
    top, second = sorted(scores.values(), reverse=True)[:2]
    verdict = margin(min_margin=min_margin).check(make_prediction(scores=scores))
    if top == 0.0:
        assert verdict.review
        assert "are 0" in verdict.reason
    else:
        assert verdict.review == (top - second < min_margin)


def test_margin_tie_is_zero() -> None:
    verdict = margin(min_margin=0.01).check(make_prediction(scores={"cat": 0.4, "dog": 0.4}))
    assert verdict.review
    assert verdict.reason.startswith("margin 0 < 0.01")


def test_integer_scores_count() -> None:
    assert not margin(min_margin=0.5).check(make_prediction(scores={"cat": 1, "dog": 0})).review


# --- entropy --------------------------------------------------------------------------------


def test_uniform_scores_have_entropy_one() -> None:
    verdict = entropy(max_entropy=0.9).check(
        make_prediction(scores={"cat": 0.25, "dog": 0.25, "bird": 0.25, "fish": 0.25})
    )
    assert verdict.review
    assert verdict.reason == "normalized entropy 1 > 0.9 over 4 classes"


def test_one_hot_scores_have_entropy_zero() -> None:
    verdict = entropy(max_entropy=0.0).check(
        make_prediction(scores={"cat": 1.0, "dog": 0.0, "bird": 0.0})
    )
    assert not verdict.review
    assert verdict.reason == "normalized entropy 0.0 <= 0.0 over 3 classes"


def test_entropy_divides_by_log_of_all_classes() -> None:
    # two equal classes out of three: ln 2 / ln 3 = 0.6309...
    scores = {"cat": 0.5, "dog": 0.5, "bird": 0.0}
    assert entropy(max_entropy=0.63).check(make_prediction(scores=scores)).review
    verdict = entropy(max_entropy=0.64).check(make_prediction(scores=scores))
    assert not verdict.review
    assert verdict.reason == "normalized entropy 0.6309 <= 0.64 over 3 classes"


def test_entropy_normalizes_scores_to_sum_one() -> None:
    p = entropy(max_entropy=0.5)
    small = p.check(make_prediction(scores={"cat": 0.3, "dog": 0.1}))
    large = p.check(make_prediction(scores={"cat": 30, "dog": 10}))
    assert small == large


@given(
    scores=st.dictionaries(
        st.text(max_size=3), st.floats(min_value=0.0, max_value=1e6), min_size=2, max_size=8
    )
)
def test_normalized_entropy_stays_in_zero_one(scores: dict[str, float]) -> None:
    verdict = entropy(max_entropy=0.5).check(make_prediction(scores=scores))
    if sum(scores.values()) == 0.0:
        assert verdict.review
        assert "are 0" in verdict.reason
    else:
        value = float(verdict.reason.split()[2])
        assert 0.0 <= value <= 1.0


def test_huge_scores_that_overflow_the_sum_are_reviewed() -> None:
    verdict = entropy(max_entropy=0.5).check(make_prediction(scores={"a": 1e308, "b": 1e308}))
    assert verdict.review
    assert "float range" in verdict.reason


# --- both: odd scores -----------------------------------------------------------------------

POLICIES = [
    pytest.param(MarginPolicy, {"min_margin": 0.1}, id="margin"),
    pytest.param(EntropyPolicy, {"max_entropy": 0.5}, id="entropy"),
]


@pytest.mark.parametrize(("cls", "params"), POLICIES)
def test_missing_scores_follow_when_missing(cls: Any, params: dict[str, Any]) -> None:
    prediction = make_prediction(scores=None, label="cat")
    verdict = build(cls, params).check(prediction)
    assert verdict.review
    assert verdict.reason == "class scores are missing (label cat)"
    accepted = build(cls, {**params, "when_missing": "accept"}).check(prediction)
    assert not accepted.review
    assert accepted.reason == verdict.reason


@pytest.mark.parametrize(("cls", "params"), POLICIES)
@pytest.mark.parametrize(("scores", "shown"), [({}, "0 (none)"), ({"cat": 0.9}, "1 (cat)")])
def test_fewer_than_two_classes_follow_when_missing(
    cls: Any, params: dict[str, Any], scores: dict[str, float], shown: str
) -> None:
    verdict = build(cls, params).check(make_prediction(scores=scores))
    assert verdict.review
    assert verdict.reason.endswith(f"needs at least 2 class scores, got {shown}")
    assert (
        not build(cls, {**params, "when_missing": "accept"})
        .check(make_prediction(scores=scores))
        .review
    )


@pytest.mark.parametrize(("cls", "params"), POLICIES)
@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (-0.1, "-0.1"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        ("0.5", "'0.5'"),
        (None, "null"),
        (True, "true"),
    ],
)
def test_invalid_scores_are_reviewed_whatever_when_missing(
    cls: Any, params: dict[str, Any], bad: Any, shown: str
) -> None:
    p = build(cls, {**params, "when_missing": "accept"})
    verdict = p.check(make_prediction(scores={"cat": 0.5, "dog": bad}))
    assert verdict.review
    assert verdict.reason.startswith(f"class score of dog is {shown}, not a number in")


def test_margin_refuses_scores_above_one() -> None:
    verdict = margin(min_margin=0.1).check(make_prediction(scores={"cat": 87, "dog": 13}))
    assert verdict.review
    assert verdict.reason == "class score of cat is 87, not a number in [0, 1]"


@pytest.mark.parametrize(("cls", "params"), POLICIES)
def test_all_zero_scores_are_reviewed(cls: Any, params: dict[str, Any]) -> None:
    verdict = build(cls, params).check(make_prediction(scores={"cat": 0.0, "dog": 0, "b": 0.0}))
    assert verdict.review
    assert verdict.reason == "all 3 class scores are 0"


@pytest.mark.parametrize(("cls", "params"), POLICIES)
def test_scores_that_are_not_a_mapping_are_reviewed(cls: Any, params: dict[str, Any]) -> None:
    verdict = build(cls, params).check(make_prediction(scores=[0.5, 0.5]))  # type: ignore[arg-type]
    assert verdict.review
    assert verdict.reason == "class scores are [0.5, 0.5], not a mapping"


# --- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "params", "loc", "message"),
    [
        (MarginPolicy, {}, ("min_margin",), "Field required"),
        (MarginPolicy, {"min_margin": 0}, ("min_margin",), "greater than 0"),
        (MarginPolicy, {"min_margin": 1.5}, ("min_margin",), "less than or equal to 1"),
        (MarginPolicy, {"min_margin": math.nan}, ("min_margin",), "finite"),
        (EntropyPolicy, {"max_entropy": 1}, ("max_entropy",), "less than 1"),
        (EntropyPolicy, {"max_entropy": -0.1}, ("max_entropy",), "greater than or equal to 0"),
        (EntropyPolicy, {"max_entropy": 0.5, "when_missing": "skip"}, ("when_missing",), "review"),
    ],
)
def test_bad_params_name_the_field(
    cls: Any, params: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        build(cls, params)
    errors = caught.value.errors()
    assert [error["loc"] for error in errors] == [loc]
    assert message in errors[0]["msg"]
