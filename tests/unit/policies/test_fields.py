from __future__ import annotations

import copy
import math
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_router.models import Prediction
from stream_router.policies.fields import (
    MAPPED_FIELDS,
    MISSING,
    FieldRef,
    NumberDisplay,
    as_float,
    resolve,
    show_value,
)
from stream_router.testing import make_prediction

EVENT = {
    "label": "raw-label",
    "customer": {"id": "c-7", "address": {"country": "FR"}, "note": None},
    "amount": 12.5,
    "tags": ["a", "b"],
    "event": {"id": "inner"},
}


def prediction() -> Prediction:
    return make_prediction(
        event_id="evt-9",
        label="dog",
        confidence=0.42,
        scores={"dog": 0.42, "cat": 0.58},
        model_name="animals",
        model_version="7",
        timestamp_s=123.5,
        event=EVENT,
        topic="in",
        partition=3,
        offset=99,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("event_id", "evt-9"),
        ("label", "dog"),
        ("confidence", 0.42),
        ("scores", {"dog": 0.42, "cat": 0.58}),
        ("model_name", "animals"),
        ("model_version", "7"),
        ("timestamp", 123.5),
        ("topic", "in"),
        ("partition", 3),
        ("offset", 99),
    ],
)
def test_mapped_names_read_the_prediction(name: str, expected: object) -> None:
    ref = FieldRef(name)
    assert ref.mapped
    assert ref.get(prediction()) == expected


def test_every_mapped_name_resolves() -> None:
    for name in MAPPED_FIELDS:
        assert resolve(prediction(), name) is not MISSING


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("amount", 12.5),
        ("customer.id", "c-7"),
        ("customer.address.country", "FR"),
        ("tags", ["a", "b"]),
        ("event.label", "raw-label"),
        ("event.event.id", "inner"),
        ("event", EVENT),
    ],
)
def test_other_names_are_paths_into_the_event(name: str, expected: object) -> None:
    ref = FieldRef(name)
    assert not ref.mapped
    assert ref.get(prediction()) == expected


def test_mapped_name_wins_over_event_key_of_the_same_name() -> None:
    assert resolve(prediction(), "label") == "dog"
    assert resolve(prediction(), "event.label") == "raw-label"


@pytest.mark.parametrize(
    "name",
    ["nope", "customer.nope", "customer.address.country.more", "tags.0", "amount.x", "event.nope"],
)
def test_missing_steps_give_missing(name: str) -> None:
    assert resolve(prediction(), name) is MISSING


def test_null_is_not_missing() -> None:
    assert resolve(prediction(), "customer.note") is None
    assert resolve(prediction(), "customer.note.deeper") is MISSING


def test_any_mapping_is_walked() -> None:
    event = MappingProxyType({"outer": MappingProxyType({"inner": 1})})
    assert resolve(make_prediction(event=event), "outer.inner") == 1


@pytest.mark.parametrize("name", ["", "  ", "a..b", ".a", "a.", "."])
def test_malformed_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="field name"):
        FieldRef(name)


def test_missing_is_a_singleton_distinct_from_none() -> None:
    assert MISSING is not None
    assert repr(MISSING) == "MISSING"
    assert copy.deepcopy(MISSING) is MISSING


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (0.5, 0.5),
        (True, math.nan),
        ("1", math.nan),
        (None, math.nan),
        (10**400, math.inf),
    ],
)
def test_as_float(value: object, expected: float) -> None:
    result = as_float(value)
    assert result == expected or (math.isnan(expected) and math.isnan(result))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (MISSING, "missing"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        ("cat", "'cat'"),
        (1.5, "1.5"),
        (math.nan, "nan"),
        ([None, "x", 2], "[null, 'x', 2]"),
        ({"a": [True]}, "{'a': [true]}"),
        ([[[[1]]]], "[[[[...]]]]"),
    ],
)
def test_show_value_reads_like_yaml(value: object, shown: str) -> None:
    assert show_value(value) == shown


def test_show_value_is_short_and_cheap_for_large_values() -> None:
    huge = {str(i): {str(j): j for j in range(1000)} for i in range(1000)}
    for value in ("x" * 500, list(range(500)), huge):
        assert len(show_value(value)) <= 40


unit = st.floats(min_value=0.0, max_value=1.0)


@given(value=unit, bound=unit)
def test_number_display_never_puts_a_value_on_the_wrong_side(value: float, bound: float) -> None:
    # Bounds are shown with repr, i.e. exactly; the shown value must keep its side of the bound.
    shown = float(NumberDisplay(bound).show(value))
    if value < bound:
        assert shown < bound
    elif value > bound:
        assert shown > bound
    else:
        assert shown == bound


def test_number_display_rounds_only_when_unambiguous() -> None:
    display = NumberDisplay(0.7, 0.90625)
    assert display.show(0.623456) == "0.6235"
    assert display.show(math.nextafter(0.7, 0)) == repr(math.nextafter(0.7, 0))
    assert display.show(0.7) == "0.7"
    assert display.show(0.90625) == "0.90625"
