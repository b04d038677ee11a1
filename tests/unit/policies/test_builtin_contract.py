"""What every built-in policy promises: its entry point loads, its parameters are documented."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import BaseModel

from stream_router.policies.base import EventPolicy, Policy, PolicyParams

#: The entry points the project registers in pyproject.toml (group stream_router.policies).
BUILT_INS = {
    "confidence": "stream_router.policies.confidence:ConfidencePolicy",
    "margin": "stream_router.policies.scores:MarginPolicy",
    "entropy": "stream_router.policies.scores:EntropyPolicy",
    "required_fields": "stream_router.policies.required:RequiredFieldsPolicy",
    "sample": "stream_router.policies.sampling:SamplePolicy",
    "field": "stream_router.policies.field:FieldRulePolicy",
}


def load(name: str) -> type[Policy[Any]]:
    loaded = EntryPoint(name, BUILT_INS[name], "stream_router.policies").load()
    assert isinstance(loaded, type)
    assert issubclass(loaded, Policy)
    return loaded


def models_in(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and the models nested in its fields (ranges, per-label rules, ...)."""
    found = [model]
    for field in model.model_fields.values():
        for arg in _type_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in found:
                found.extend(m for m in models_in(arg) if m not in found)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for arg in getattr(annotation, "__args__", ()):
        args.extend(_type_args(arg))
    return args


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_entry_point_loads_an_event_policy(name: str) -> None:
    cls = load(name)
    assert issubclass(cls, EventPolicy)
    assert issubclass(cls.params_model, PolicyParams)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_summary_is_one_line(name: str) -> None:
    summary = load(name).summary
    assert summary.strip()
    assert "\n" not in summary
    assert len(summary) <= 100


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_every_parameter_is_described(name: str) -> None:
    for model in models_in(load(name).params_model):
        assert issubclass(model, PolicyParams), f"{model.__name__} must refuse unknown keys"
        for field_name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{field_name} has no description"


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_parameters_have_a_json_schema(name: str) -> None:
    # Docs tables are generated from it; warnings (e.g. unserializable defaults) fail here.
    schema = load(name).params_model.model_json_schema()
    assert json.loads(json.dumps(schema))["properties"]
