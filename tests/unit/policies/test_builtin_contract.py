"""What every built-in policy promises: its entry point loads, and it keeps the policy contract.

The contract is checked by :func:`stream_router.testing.check_policy`, the same call a plugin
author runs in their own tests: parameters documented, never raises, one verdict per prediction,
same input same verdicts, batch-independent, input left alone, fast.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from stream_router.policies.base import EventPolicy, Policy
from stream_router.policies.registry import PolicyRegistry
from stream_router.testing import check_policy

#: The entry points the project registers in pyproject.toml (group stream_router.policies).
BUILT_INS = {
    "confidence": "stream_router.policies.confidence:ConfidencePolicy",
    "margin": "stream_router.policies.scores:MarginPolicy",
    "entropy": "stream_router.policies.scores:EntropyPolicy",
    "required_fields": "stream_router.policies.required:RequiredFieldsPolicy",
    "sample": "stream_router.policies.sampling:SamplePolicy",
    "field": "stream_router.policies.field:FieldRulePolicy",
}
COMPOSITES = {
    "all": "stream_router.policies.composite:AllPolicy",
    "any": "stream_router.policies.composite:AnyPolicy",
    "not": "stream_router.policies.composite:NotPolicy",
}

#: Configurations of every built-in, each checked against the contract.
SPECS: list[dict[str, Any]] = [
    {"type": "confidence", "below": 0.7},
    {"type": "confidence", "ranges": [{"min": 0.0, "max": 0.3}, {"min": 0.9, "max": 1.0}]},
    {"type": "confidence", "per_label": {"cat": {"below": 0.95}, "猫 🐈": {"below": 0.5}}},
    {"type": "margin", "min_margin": 0.1},
    {"type": "margin", "min_margin": 1.0, "when_missing": "accept"},
    {"type": "entropy", "max_entropy": 0.8},
    {"type": "entropy", "max_entropy": 0.0, "when_missing": "accept"},
    {"type": "required_fields", "fields": ["model_version", "customer.id", "features.amount"]},
    {"type": "required_fields", "fields": ["scores", "timestamp", "event.text", "event"]},
    {"type": "sample", "percent": 2, "salt": "audit-2024-q3"},
    {"type": "sample", "percent": 100},
    {"type": "field", "field": "model_name", "op": "eq", "value": "fraud-v2"},
    {"type": "field", "field": "amount", "op": "ne", "value": None},
    {"type": "field", "field": "features.amount", "op": "gt", "value": 10_000},
    {"type": "field", "field": "text", "op": "le", "value": "m", "when_incomparable": "review"},
    {"type": "field", "field": "customer.country", "op": "in", "value": ["RU", "KP", 1, None]},
    {"type": "field", "field": "label", "op": "not_in", "value": ["cat", "dog"]},
    {"type": "field", "field": "customer.id", "op": "exists"},
    {"type": "field", "field": "nested.next.next", "op": "missing"},
    {"type": "field", "field": "text", "op": "matches", "value": "(?i).*refund.*"},
    {
        "type": "all",
        "policies": [
            {"type": "confidence", "below": 0.9},
            {"type": "field", "field": "features.amount", "op": "ge", "value": 10},
        ],
    },
    {
        "type": "any",
        "policies": [
            {"type": "margin", "min_margin": 0.2},
            {"type": "sample", "percent": 5, "salt": "s"},
            {"type": "required_fields", "fields": ["customer.id"], "shadow": True},
        ],
    },
    {"type": "not", "policy": {"type": "entropy", "max_entropy": 0.5}},
]


def load(name: str) -> type[Policy[Any]]:
    value = {**BUILT_INS, **COMPOSITES}[name]
    loaded = EntryPoint(name, value, "stream_router.policies").load()
    assert isinstance(loaded, type)
    assert issubclass(loaded, Policy)
    return loaded


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_entry_point_loads_an_event_policy(name: str) -> None:
    assert issubclass(load(name), EventPolicy)


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_entry_point_loads_a_composite(name: str) -> None:
    assert not issubclass(load(name), EventPolicy)


def test_every_built_in_is_checked() -> None:
    checked = {spec["type"] for spec in SPECS}
    assert checked == {*BUILT_INS, *COMPOSITES}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: f"{spec['type']}-{SPECS.index(spec)}")
def test_keeps_the_policy_contract(spec: dict[str, Any]) -> None:
    check_policy(PolicyRegistry().build(spec, "routes.0.policy"))
