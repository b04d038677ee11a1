"""``field``: review when a comparison on one field holds.

::

    {type: field, field: model_name, op: eq, value: fraud-v2}
    {type: field, field: features.amount, op: gt, value: 10000}
    {type: field, field: country, op: in, value: [RU, KP]}
    {type: field, field: text, op: matches, value: "(?i).*refund.*"}
    {type: field, field: customer.id, op: missing}

``field`` is a name as in :mod:`stream_router.policies.fields` (a mapped prediction field or a
dotted path into the event). Operators:

==========  ======================================================================
op          holds when the field's value ...
==========  ======================================================================
eq, ne      equals / differs from ``value`` (one scalar; ``null`` allowed)
lt, le,     is below / at most / above / at least ``value``: a number (numbers compare with
gt, ge      numbers) or a string (strings compare with strings, by code point)
in, not_in  is / is not one of ``value`` (a non-empty list of scalars)
exists      is present in the event (``null`` counts as present)
missing     is absent from the event
matches     is a string that ``value`` (a regex) matches **in full**; write ``.*foo.*`` to
            find ``foo`` anywhere, ``(?i)`` to ignore case. Patterns run in RE2 (google-re2):
            time linear in the text whatever the pattern, so a hostile event cannot stall a
            partition (Python's ``re`` backtracks: ``(a+)+`` on 24 characters took 0.47 s,
            doubling with each one more); RE2 has no backreferences or lookaround
==========  ======================================================================

Equality follows JSON: ``true`` is not ``1``, ``1`` equals ``1.0``, a list or mapping in the
event equals no scalar (so ``ne`` holds for it).

**Incomparable values.** When the comparison cannot be made, the rule neither holds nor fails;
the verdict is ``when_incomparable`` (default ``accept``) and the reason says why. That is the
case for every op but ``exists``/``missing`` when the field is missing; for ``lt``..``ge`` when
the value is of the other kind (a string against a number, ``null``, a boolean, NaN); for
``matches`` when the value is not a string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import isnan
from typing import Any, Final, Literal, get_args

import re2  # type: ignore[import-untyped]
from pydantic import (
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from stream_router.models import Prediction
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.fields import MISSING, FieldRef, show_value

Scalar = str | int | float | bool | None
Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "exists", "missing", "matches"]

#: How each op reads in a reason when it holds, and when it does not.
_WORDS: Final[dict[str, tuple[str, str]]] = {
    "eq": ("==", "!="),
    "ne": ("!=", "=="),
    "lt": ("<", ">="),
    "le": ("<=", ">"),
    "gt": (">", "<="),
    "ge": (">=", "<"),
    "in": ("in", "not in"),
    "not_in": ("not in", "in"),
    "matches": ("matches", "does not match"),
}
_ORDERING: Final = frozenset({"lt", "le", "gt", "ge"})
_NO_VALUE: Final = frozenset({"exists", "missing"})
#: Stands for a missing ``value`` during validation only, told apart from an explicit null.
_NOT_GIVEN: Final = object()

#: A test of a field value: True (holds), False (does not), None (cannot be compared).
Test = Callable[[Any], bool | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FieldRuleParams(PolicyParams):
    field: str = Field(description="Field to test: a mapped name or a dotted path into the event.")
    op: Op = Field(description="Comparison: " + ", ".join(get_args(Op)) + ".")
    value: Scalar | list[Scalar] = Field(
        default=None,
        description="Operand: a scalar; a list for in/not_in; a regex for matches; "
        "none for exists/missing.",
    )
    when_incomparable: Literal["review", "accept"] = Field(
        default="accept",
        description="Verdict when the comparison cannot be made (field missing, wrong type).",
    )

    @field_validator("field")
    @classmethod
    def _valid_field(cls, field: str) -> str:
        FieldRef(field)
        return field

    @model_validator(mode="before")
    @classmethod
    def _mark_missing_value(cls, data: Any) -> Any:
        """Lets the value validator tell a missing value from null (and report it as value's)."""
        if isinstance(data, Mapping) and "value" not in data:
            return {**data, "value": _NOT_GIVEN}
        return data

    @field_validator("value", mode="wrap")
    @classmethod
    def _value_fits_op(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        """Runs for a missing value too (``_NOT_GIVEN``); ``op`` is validated first."""
        op = info.data.get("op")
        if value is _NOT_GIVEN:
            if op is not None and op not in _NO_VALUE:
                raise ValueError(f"op {op!r} needs a value")
            return None
        value = handler(value)
        if op is None:  # op itself is invalid; that error is reported
            return value
        if op in _NO_VALUE:
            raise ValueError(f"op {op!r} takes no value, got {value!r}")
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, float) and isnan(item) for item in items):
            raise ValueError("must not be NaN: NaN equals and orders with nothing")
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"op {op!r} needs a non-empty list, got {value!r}")
        elif isinstance(value, list):
            hint = "; for a list of values use op 'in'" if op == "eq" else ""
            raise ValueError(f"op {op!r} needs a single value, got the list {value!r}{hint}")
        elif op in _ORDERING and not (_is_number(value) or isinstance(value, str)):
            raise ValueError(f"op {op!r} needs a number or a string, got {value!r}")
        elif op == "matches":
            if not isinstance(value, str):
                raise ValueError(f"op 'matches' needs a regex string, got {value!r}")
            try:
                _compile(value)
            except re2.error as exc:
                raise ValueError(
                    f"{value!r} is not a valid RE2 regex ({_reason(exc)}); patterns run in RE2, "
                    "in time linear in the text, so backreferences and lookaround are not "
                    "available"
                ) from exc
        return value


def _equals(target: Scalar) -> Test:
    if target is None:
        return lambda value: value is None
    if isinstance(target, bool):
        return lambda value: value is target
    if isinstance(target, str):
        return lambda value: isinstance(value, str) and value == target
    return lambda value: _is_number(value) and value == target


def _member_of(targets: list[Scalar]) -> Test:
    strings = frozenset(t for t in targets if isinstance(t, str))
    numbers = frozenset(t for t in targets if _is_number(t))
    booleans = frozenset(t for t in targets if isinstance(t, bool))
    has_null = None in targets

    def member(value: Any) -> bool:
        if value is None:
            return has_null
        if value.__class__ is bool:
            return value in booleans
        if isinstance(value, str):
            return value in strings
        if isinstance(value, int | float):
            return value in numbers
        return False

    return member


_ORDERS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
}


def _ordered(op: str, target: Any) -> Test:
    compare = _ORDERS[op]
    if isinstance(target, str):

        def with_string(value: Any) -> bool | None:
            return compare(value, target) if isinstance(value, str) else None

        return with_string

    def with_number(value: Any) -> bool | None:
        if not _is_number(value) or (isinstance(value, float) and isnan(value)):
            return None
        return compare(value, target)

    return with_number


def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised, with its reason, instead
    return re2.compile(pattern, options)


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def _matching(pattern: str) -> Test:
    fullmatch = _compile(pattern).fullmatch

    def matches(value: Any) -> bool | None:
        return fullmatch(value) is not None if isinstance(value, str) else None

    return matches


def _test_for(op: str, target: Any) -> Test:
    if op == "eq":
        return _equals(target)
    if op == "ne":
        equal = _equals(target)
        return lambda value: not equal(value)
    if op == "in":
        return _member_of(target)
    if op == "not_in":
        member = _member_of(target)
        return lambda value: not member(value)
    if op == "matches":
        return _matching(target)
    return _ordered(op, target)


class FieldRulePolicy(EventPolicy[FieldRuleParams]):
    """Review when ``field op value`` holds; see the module docstring."""

    params_model = FieldRuleParams
    summary = "review when a comparison on one field holds (eq, lt, in, matches, missing, ...)"

    def __init__(self, name: str, params: FieldRuleParams) -> None:
        super().__init__(name, params)
        self._ref = FieldRef(params.field)
        self._op = params.op
        self._incomparable_review = params.when_incomparable == "review"
        self._test: Test | None = None
        self._holds_text = self._fails_text = self._expected = ""
        if params.op not in _NO_VALUE:
            self._test = _test_for(params.op, params.value)
            holds, fails = _WORDS[params.op]
            target = show_value(params.value)
            self._holds_text = f"{holds} {target}"
            self._fails_text = f"{fails} {target}"
            if params.op == "matches" or isinstance(params.value, str):
                self._expected = "a string"
            else:
                self._expected = "a number"

    def check(self, prediction: Prediction) -> Verdict:
        field = self._ref.name
        value = self._ref.get(prediction)
        test = self._test
        if test is None:
            absent = value is MISSING
            review = absent if self._op == "missing" else not absent
            if absent:
                return Verdict(review, f"{field} is missing")
            return Verdict(review, f"{field} is present ({show_value(value)})")
        if value is MISSING:
            return Verdict(
                self._incomparable_review,
                f"cannot test {field} {self._holds_text}: {field} is missing",
            )
        outcome = test(value)
        shown = show_value(value)
        if outcome is None:
            return Verdict(
                self._incomparable_review,
                f"cannot test {field} {self._holds_text}: {field} is {shown}, not {self._expected}",
            )
        if outcome:
            return Verdict(True, f"{field} {shown} {self._holds_text}")
        return Verdict(False, f"{field} {shown} {self._fails_text}")
