"""``required_fields``: review when a listed field is missing, null or invalid.

::

    {type: required_fields, fields: [model_version, customer.id, features.amount]}

Field names are those of :mod:`stream_router.policies.fields` (mapped prediction fields, or a
dotted path into the event). A field fails when it is:

- missing (the event has no such path),
- null (``None``: a JSON null, or a mapped field the event did not provide),
- a float that is NaN or infinite,
- an empty string (``""``; a string of spaces counts as present).

Empty lists and mappings count as present. The reason lists every failing field in the order
configured.
"""

from __future__ import annotations

from math import isfinite
from typing import Any

from pydantic import Field, field_validator

from stream_router.models import Prediction
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.fields import MISSING, FieldRef


class RequiredFieldsParams(PolicyParams):
    fields: list[str] = Field(
        min_length=1,
        description="Fields that must be present, non-null, non-empty and (for floats) finite.",
    )

    @field_validator("fields")
    @classmethod
    def _valid_names(cls, fields: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in fields:
            FieldRef(name)
            if name in seen:
                raise ValueError(f"field {name!r} is listed twice")
            seen.add(name)
        return fields


def _problem(value: Any) -> str | None:
    """What is wrong with a required field's value, or None when it is fine."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if value.__class__ is float or isinstance(value, float):
        return None if isfinite(value) else repr(value)
    if isinstance(value, str) and not value:
        return "empty string"
    return None


class RequiredFieldsPolicy(EventPolicy[RequiredFieldsParams]):
    """Review when any listed field is missing, null or invalid."""

    params_model = RequiredFieldsParams
    summary = "review when a listed field is missing, null, NaN/infinite or an empty string"

    def __init__(self, name: str, params: RequiredFieldsParams) -> None:
        super().__init__(name, params)
        self._refs = tuple(FieldRef(field) for field in params.fields)
        count = len(self._refs)
        noun = "field" if count == 1 else "fields"
        self._present = Verdict(False, f"all {count} required {noun} present")

    def check(self, prediction: Prediction) -> Verdict:
        problems: list[str] | None = None
        for ref in self._refs:
            problem = _problem(ref.get(prediction))
            if problem is not None:
                if problems is None:
                    problems = []
                problems.append(f"{ref.name} ({problem})")
        if problems is None:
            return self._present
        return Verdict(True, "missing or invalid required fields: " + ", ".join(problems))
