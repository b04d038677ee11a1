from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from stream_router.policies.required import RequiredFieldsPolicy
from stream_router.testing import make_prediction
from tests.unit.policies.conftest import build


def policy(*fields: str) -> RequiredFieldsPolicy:
    return build(RequiredFieldsPolicy, {"fields": list(fields)})


def test_all_present_is_accepted() -> None:
    p = policy("model_version", "customer.id", "amount")
    verdict = p.check(make_prediction(event={"customer": {"id": "c-1"}, "amount": 0}))
    assert not verdict.review
    assert verdict.reason == "all 3 required fields present"


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({}, "missing"),
        ({"customer": "c-1"}, "missing"),
        ({"customer": {}}, "missing"),
        ({"customer": {"id": None}}, "null"),
        ({"customer": {"id": ""}}, "empty string"),
        ({"customer": {"id": math.nan}}, "nan"),
        ({"customer": {"id": -math.inf}}, "-inf"),
    ],
)
def test_each_kind_of_problem_is_reviewed(event: dict[str, Any], problem: str) -> None:
    verdict = policy("customer.id").check(make_prediction(event=event))
    assert verdict.review
    assert verdict.reason == f"missing or invalid required fields: customer.id ({problem})"


@pytest.mark.parametrize("value", [" ", 0, 0.0, False, [], {}, "x"])
def test_present_values_count_as_present(value: Any) -> None:
    assert not policy("x").check(make_prediction(event={"x": value})).review


def test_every_failing_field_is_listed_in_order() -> None:
    p = policy("a", "model_version", "b", "confidence")
    verdict = p.check(make_prediction(model_version=None, confidence=math.nan, event={"b": 1}))
    assert verdict.review
    assert verdict.reason == (
        "missing or invalid required fields: a (missing), model_version (null), confidence (nan)"
    )


def test_mapped_fields_are_checked_too() -> None:
    p = policy("timestamp", "model_name")
    assert p.check(make_prediction(timestamp_s=None)).review
    assert not p.check(make_prediction()).review


def test_single_field_reason_is_singular() -> None:
    assert policy("label").check(make_prediction()).reason == "all 1 required field present"


@pytest.mark.parametrize(
    ("params", "loc", "message"),
    [
        ({}, ("fields",), "Field required"),
        ({"fields": []}, ("fields",), "at least 1"),
        ({"fields": ["a", "a"]}, ("fields",), "'a' is listed twice"),
        ({"fields": ["a..b"]}, ("fields",), "empty step"),
        ({"fields": "a"}, ("fields",), "valid list"),
    ],
)
def test_bad_params_name_the_field(
    params: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        build(RequiredFieldsPolicy, params)
    errors = caught.value.errors()
    assert [error["loc"] for error in errors] == [loc]
    assert message in errors[0]["msg"]
