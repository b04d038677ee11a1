from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from stream_router.policies.base import Verdict
from stream_router.policies.field import FieldRulePolicy
from stream_router.testing import make_prediction
from tests.unit.policies.conftest import build

EVENT = {
    "amount": 1200,
    "ratio": 0.25,
    "country": "FR",
    "flag": True,
    "note": None,
    "text": "please refund me",
    "nested": {"level": 3},
    "items": [1, 2],
    "bad": math.nan,
}


def check(field: str, op: str, value: Any = ..., **extra: Any) -> Verdict:
    params: dict[str, Any] = {"field": field, "op": op, **extra}
    if value is not ...:
        params["value"] = value
    return build(FieldRulePolicy, params).check(make_prediction(event=EVENT, model_name="fraud-v2"))


@pytest.mark.parametrize(
    ("field", "op", "value", "review", "reason"),
    [
        ("model_name", "eq", "fraud-v2", True, "model_name 'fraud-v2' == 'fraud-v2'"),
        ("model_name", "eq", "other", False, "model_name 'fraud-v2' != 'other'"),
        ("model_name", "ne", "other", True, "model_name 'fraud-v2' != 'other'"),
        ("model_name", "ne", "fraud-v2", False, "model_name 'fraud-v2' == 'fraud-v2'"),
        ("amount", "gt", 1000, True, "amount 1200 > 1000"),
        ("amount", "gt", 1200, False, "amount 1200 <= 1200"),
        ("amount", "ge", 1200, True, "amount 1200 >= 1200"),
        ("amount", "lt", 1200.5, True, "amount 1200 < 1200.5"),
        ("amount", "le", 1199, False, "amount 1200 > 1199"),
        ("country", "lt", "GB", True, "country 'FR' < 'GB'"),
        ("country", "in", ["FR", "DE"], True, "country 'FR' in ['FR', 'DE']"),
        ("country", "in", ["US"], False, "country 'FR' not in ['US']"),
        ("country", "not_in", ["US"], True, "country 'FR' not in ['US']"),
        ("country", "not_in", ["FR"], False, "country 'FR' in ['FR']"),
        ("nested.level", "eq", 3.0, True, "nested.level 3 == 3.0"),
        ("note", "eq", None, True, "note null == null"),
        ("note", "in", [None, "x"], True, "note null in [null, 'x']"),
        ("flag", "eq", True, True, "flag true == true"),
    ],
)
def test_comparisons(field: str, op: str, value: Any, review: bool, reason: str) -> None:
    verdict = check(field, op, value)
    assert verdict == Verdict(review, reason)


def test_booleans_are_not_numbers() -> None:
    assert not check("flag", "eq", 1).review
    assert not check("flag", "in", [1, 0]).review
    assert check("flag", "in", [True]).review
    assert not check("amount", "in", [True]).review
    assert check("amount", "in", [1200.0, "x"]).review


def test_structured_values_equal_no_scalar() -> None:
    assert not check("items", "eq", "[1, 2]").review
    assert check("items", "ne", 1).review
    assert not check("nested", "in", [3]).review


@pytest.mark.parametrize(
    ("field", "op", "review", "reason"),
    [
        ("customer.id", "exists", False, "customer.id is missing"),
        ("customer.id", "missing", True, "customer.id is missing"),
        ("note", "exists", True, "note is present (null)"),
        ("note", "missing", False, "note is present (null)"),
        ("nested.level", "exists", True, "nested.level is present (3)"),
    ],
)
def test_exists_and_missing(field: str, op: str, review: bool, reason: str) -> None:
    assert check(field, op) == Verdict(review, reason)


def test_matches_is_a_full_match() -> None:
    assert not check("text", "matches", "refund").review
    verdict = check("text", "matches", ".*refund.*")
    assert verdict == Verdict(True, "text 'please refund me' matches '.*refund.*'")
    assert check("text", "matches", "(?i).*REFUND.*").review
    assert check("country", "matches", "[A-Z]{2}").review
    miss = check("country", "matches", "[a-z]{2}")
    assert miss == Verdict(False, "country 'FR' does not match '[a-z]{2}'")


@pytest.mark.parametrize(
    ("field", "op", "value", "reason"),
    [
        ("country", "gt", 5, "cannot test country > 5: country is 'FR', not a number"),
        ("amount", "lt", "5", "cannot test amount < '5': amount is 1200, not a string"),
        ("note", "ge", 1, "cannot test note >= 1: note is null, not a number"),
        ("flag", "gt", 0, "cannot test flag > 0: flag is true, not a number"),
        ("bad", "gt", 0, "cannot test bad > 0: bad is nan, not a number"),
        (
            "amount",
            "matches",
            "1.*",
            "cannot test amount matches '1.*': amount is 1200, not a string",
        ),
        ("customer.id", "eq", "x", "cannot test customer.id == 'x': customer.id is missing"),
        ("customer.id", "ne", "x", "cannot test customer.id != 'x': customer.id is missing"),
        (
            "customer.id",
            "not_in",
            ["x"],
            "cannot test customer.id not in ['x']: customer.id is missing",
        ),
    ],
)
def test_incomparable_values_follow_when_incomparable(
    field: str, op: str, value: Any, reason: str
) -> None:
    assert check(field, op, value) == Verdict(False, reason)
    assert check(field, op, value, when_incomparable="review") == Verdict(True, reason)


def test_long_values_are_cut_in_reasons() -> None:
    verdict = build(FieldRulePolicy, {"field": "text", "op": "eq", "value": "x"}).check(
        make_prediction(event={"text": "y" * 1000})
    )
    assert len(verdict.reason) < 100


@pytest.mark.parametrize(
    ("params", "loc", "message"),
    [
        ({"op": "eq", "value": 1}, ("field",), "Field required"),
        ({"field": "a..b", "op": "exists"}, ("field",), "empty step"),
        ({"field": "a", "op": "like", "value": 1}, ("op",), "'eq'"),
        ({"field": "a", "op": "eq"}, ("value",), "op 'eq' needs a value"),
        ({"field": "a", "op": "exists", "value": None}, ("value",), "takes no value"),
        ({"field": "a", "op": "missing", "value": 1}, ("value",), "takes no value"),
        ({"field": "a", "op": "eq", "value": [1]}, ("value",), "use op 'in'"),
        ({"field": "a", "op": "in", "value": 1}, ("value",), "non-empty list"),
        ({"field": "a", "op": "not_in", "value": []}, ("value",), "non-empty list"),
        ({"field": "a", "op": "lt", "value": True}, ("value",), "a number or a string"),
        ({"field": "a", "op": "gt", "value": None}, ("value",), "a number or a string"),
        ({"field": "a", "op": "eq", "value": math.nan}, ("value",), "NaN"),
        ({"field": "a", "op": "matches", "value": 5}, ("value",), "regex string"),
        ({"field": "a", "op": "matches", "value": "("}, ("value",), "not a valid RE2 regex"),
        (
            {"field": "a", "op": "matches", "value": r"(a)\1"},
            ("value",),
            "backreferences and lookaround are not available",
        ),
        ({"field": "a", "op": "eq", "value": {"k": 1}}, ("value",), ""),
        (
            {"field": "a", "op": "exists", "when_incomparable": "maybe"},
            ("when_incomparable",),
            "'review' or 'accept'",
        ),
    ],
)
def test_bad_params_name_the_field(
    params: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        build(FieldRulePolicy, params)
    errors = caught.value.errors()
    assert {error["loc"][:1] for error in errors} == {loc[:1]}
    assert any(message in error["msg"] for error in errors)


def test_a_hostile_text_cannot_stall_a_match() -> None:
    """RE2 runs in time linear in the text: ``(a+)+`` against a megabyte of ``a`` ending in
    ``b`` (exponential for a backtracking engine) finishes in one call."""
    policy = build(FieldRulePolicy, {"field": "t", "op": "matches", "value": "(a+)+"})
    hostile = make_prediction(event={"t": "a" * 1_000_000 + "b"})
    assert not policy.check(hostile).review
