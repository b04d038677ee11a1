"""Routes: first match, shadow routes and policies, composites, start-up validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import Field

from stream_router.errors import PolicyLoadError
from stream_router.models import Prediction, SourceRef
from stream_router.policies.base import EventPolicy, Policy, PolicyParams, Verdict
from stream_router.policies.composite import AllPolicy, AnyPolicy, NotPolicy
from stream_router.policies.registry import PolicyRegistry
from stream_router.policies.routes import Routes
from stream_router.settings import PoliciesSettings


class BelowParams(PolicyParams):
    threshold: float = Field(ge=0, le=1)


class Below(EventPolicy[BelowParams]):
    """Test policy: review when confidence < threshold."""

    params_model = BelowParams

    def check(self, prediction: Prediction) -> Verdict:
        if prediction.confidence < self.params.threshold:
            return Verdict(True, f"{prediction.confidence} < {self.params.threshold}")
        return Verdict(False, f"{prediction.confidence} >= {self.params.threshold}")


class LabelParams(PolicyParams):
    label: str


class LabelIs(EventPolicy[LabelParams]):
    params_model = LabelParams

    def check(self, prediction: Prediction) -> Verdict:
        hit = prediction.label == self.params.label
        return Verdict(hit, f"label {prediction.label} {'==' if hit else '!='} {self.params.label}")


class Lifecycle(Policy[PolicyParams]):
    params_model = PolicyParams
    events: list[str] = []  # noqa: RUF012 - shared on purpose: the test reads it

    def start(self) -> None:
        self.events.append("start")

    def close(self) -> None:
        self.events.append("close")

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        return [Verdict(False, "fine") for _ in batch]


REGISTRY = PolicyRegistry(
    extra={
        "below": Below,
        "label_is": LabelIs,
        "lifecycle": Lifecycle,
        "all": AllPolicy,
        "any": AnyPolicy,
        "not": NotPolicy,
    }
)


def routes(*specs: dict[str, Any], version: str = "7") -> Routes:
    settings = PoliciesSettings.model_validate({"version": version, "routes": list(specs)})
    return Routes(settings, REGISTRY)


def prediction(event_id: str, label: str, confidence: float) -> Prediction:
    return Prediction(
        event_id=event_id,
        label=label,
        confidence=confidence,
        scores=None,
        model_name=None,
        model_version=None,
        timestamp_s=None,
        event={},
        source=SourceRef("t", 0, 0, None),
    )


def test_first_matching_route_wins() -> None:
    table = routes(
        {
            "name": "experts",
            "review_flow": "fd-x",
            "policy": {"type": "label_is", "label": "fraud"},
        },
        {"name": "general", "review_flow": "fd-g", "policy": {"type": "below", "threshold": 0.7}},
    )
    batch = [
        prediction("a", "fraud", 0.5),
        prediction("b", "cat", 0.5),
        prediction("c", "cat", 0.9),
    ]
    first, second, third = table.decide(batch)
    assert (first.review, first.route, first.review_flow, first.policy) == (
        True,
        "experts",
        "fd-x",
        "policies.routes.0.policy",
    )
    assert first.reason == "label fraud == fraud"
    assert (second.review, second.route) == (True, "general")
    assert (third.review, third.route, third.policy) == (False, None, "default")
    assert third.reason == "label cat != fraud; 0.9 >= 0.7"


def test_shadow_route_counts_but_never_routes() -> None:
    table = routes(
        {
            "name": "audit",
            "review_flow": "fd",
            "shadow": True,
            "policy": {"type": "below", "threshold": 0.8, "name": "audit-below"},
        },
    )
    decisions = table.decide([prediction("a", "x", 0.5), prediction("b", "x", 0.9)])
    assert [d.review for d in decisions] == [False, False]
    assert "shadow route audit would review" in decisions[0].reason
    assert table.drain_shadow_hits() == {("audit", "audit-below"): 1}
    assert table.drain_shadow_hits() == {}


def test_shadow_policy_inside_a_composite() -> None:
    table = routes(
        {
            "name": "general",
            "review_flow": "fd",
            "policy": {
                "type": "any",
                "policies": [
                    {"type": "label_is", "label": "fraud"},
                    {"type": "below", "threshold": 0.8, "shadow": True, "name": "trial"},
                ],
            },
        },
    )
    decisions = table.decide([prediction("a", "cat", 0.5), prediction("b", "fraud", 0.9)])
    assert [d.review for d in decisions] == [False, True]
    assert table.drain_shadow_hits() == {("general", "trial"): 1}


def test_all_and_not() -> None:
    table = routes(
        {
            "name": "r",
            "review_flow": "fd",
            "policy": {
                "type": "all",
                "policies": [
                    {"type": "below", "threshold": 0.9},
                    {"type": "not", "policy": {"type": "label_is", "label": "cat"}},
                ],
            },
        }
    )
    reviewed = [d.review for d in table.decide([prediction("a", "dog", 0.5),
                                                prediction("b", "cat", 0.5),
                                                prediction("c", "dog", 0.95)])]  # fmt: skip
    assert reviewed == [True, False, False]


def test_no_routes_accepts_everything() -> None:
    (decision,) = routes().decide([prediction("a", "x", 0.1)])
    assert not decision.review
    assert decision.reason == "no review route configured"


def test_lifecycle_hooks_reach_nested_policies() -> None:
    Lifecycle.events.clear()
    table = routes(
        {"name": "r", "review_flow": "fd", "policy": {"type": "any", "policies": [
            {"type": "lifecycle"}]}},
    )  # fmt: skip
    table.start()
    table.close()
    assert Lifecycle.events == ["start", "close"]


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ({"type": "nope"}, "policies.routes.0.policy.type: unknown policy type 'nope'"),
        ({"threshold": 0.5}, "policies.routes.0.policy.type: missing"),
        ({"type": "below", "threshold": 2}, "policies.routes.0.policy.threshold"),
        ({"type": "below", "threshold": 0.5, "typo": 1}, "policies.routes.0.policy.typo"),
        ({"type": "any", "policies": [{"type": "nope"}]}, "policies.routes.0.policy.policies.0"),
        ({"type": "any", "policies": []}, "policies.routes.0.policy.policies"),
    ],
)
def test_bad_policies_fail_at_start_naming_the_path(policy: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        routes({"name": "r", "review_flow": "fd", "policy": policy})
    assert fragment in str(caught.value)
