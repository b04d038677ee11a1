"""Review probabilities (policies/propensity.py): exact over the sample policies' draws.

The check that could fail: for each configuration, the computed probability of a prediction is
compared with the share of many distinct event ids (same confidence and fields) that the real
routes, with the real keyed hash, send to review; per route too. A binomial tolerance of five
standard deviations at 20,000 ids.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from stream_router.errors import PolicyLoadError
from stream_router.policies.base import Policy, PolicyParams, Verdict
from stream_router.policies.propensity import MAX_WORLDS, NEVER, ReviewChances
from stream_router.policies.registry import PolicyRegistry
from stream_router.policies.routes import Routes
from stream_router.settings import PoliciesSettings
from stream_router.testing import make_prediction

IDS = 20_000


def _routes(*specs: tuple[str, dict[str, Any]], shadow: tuple[str, ...] = ()) -> Routes:
    settings = PoliciesSettings.model_validate(
        {
            "routes": [
                {
                    "name": name,
                    "review_flow": f"fd-{name}",
                    "policy": policy,
                    "shadow": name in shadow,
                }
                for name, policy in specs
            ]
        }
    )
    routes = Routes(settings)
    routes.start()
    return routes


def _empirical(routes: Routes, confidence: float, label: str = "cat") -> tuple[float, Counter[str]]:
    batch = [
        make_prediction(event_id=f"evt-{i}", confidence=confidence, label=label, offset=i)
        for i in range(IDS)
    ]
    decisions = routes.decide(batch)
    claimed: Counter[str] = Counter(d.route for d in decisions if d.review and d.route)
    return sum(claimed.values()) / IDS, claimed


def _close(expected: float, observed: float) -> bool:
    spread = math.sqrt(max(expected * (1 - expected), 1e-9) / IDS)
    return abs(expected - observed) <= 5 * spread + 1e-12


def _check(routes: Routes, confidence: float, label: str = "cat") -> dict[str, float]:
    """Computed vs empirical, in total and per route; returns the computed per-route map."""
    share, claimed = _empirical(routes, confidence, label)
    [decision] = routes.decide(
        [make_prediction(event_id="probe", confidence=confidence, label=label)]
    )
    propensity = decision.propensity
    assert propensity is not None
    assert _close(propensity.total, share), (propensity, share)
    for route in set(propensity.routes) | set(claimed):
        assert _close(propensity.routes.get(route, 0.0), claimed[route] / IDS), (route, propensity)
    assert math.isclose(sum(propensity.routes.values()), propensity.total, abs_tol=1e-12)
    return dict(propensity.routes)


LOW = ("low", {"type": "confidence", "below": 0.9})


def test_deterministic_routes_are_certain_or_never() -> None:
    routes = _routes(LOW)
    assert routes.chances.random is False
    high, low = routes.decide(
        [
            make_prediction(event_id="a", confidence=0.95),
            make_prediction(event_id="b", confidence=0.5),
        ]
    )
    assert high.propensity is NEVER
    assert low.propensity is not None
    assert low.propensity.wire == {
        "total": 1.0,
        "routes": {"low": 1.0},
    }


def test_audit_route_after_a_deterministic_one() -> None:
    routes = _routes(LOW, ("audit", {"type": "sample", "percent": 5}))
    assert _check(routes, 0.95) == {"audit": 0.05}
    assert _check(routes, 0.5) == {"low": 1.0}


def test_samples_with_one_salt_are_nested_not_independent() -> None:
    routes = _routes(
        ("a5", {"type": "sample", "percent": 5}),
        ("a10", {"type": "sample", "percent": 10}),
    )
    # Independent draws would give 0.05 + 0.95 * 0.10 = 0.145; one shared draw gives 0.10.
    assert _check(routes, 0.95) == pytest.approx({"a5": 0.05, "a10": 0.05})


def test_samples_with_different_salts_are_independent() -> None:
    routes = _routes(
        ("a5", {"type": "sample", "percent": 5, "salt": "one"}),
        ("a10", {"type": "sample", "percent": 10, "salt": "two"}),
    )
    assert _check(routes, 0.95) == pytest.approx({"a5": 0.05, "a10": 0.95 * 0.10})


def test_composites_over_samples() -> None:
    routes = _routes(
        (
            "mixed",
            {
                "type": "any",
                "policies": [
                    {
                        "type": "all",
                        "policies": [
                            {"type": "sample", "percent": 30, "salt": "x"},
                            {
                                "type": "not",
                                "policy": {"type": "sample", "percent": 10, "salt": "x"},
                            },
                        ],
                    },
                    {
                        "type": "all",
                        "policies": [LOW[1], {"type": "sample", "percent": 50, "salt": "y"}],
                    },
                ],
            },
        ),
        ("rest", {"type": "sample", "percent": 20, "salt": "y"}),
    )
    # High confidence: 10 % <= u_x < 30 % reviews on "mixed"; else u_y < 20 % on "rest".
    assert _check(routes, 0.95) == pytest.approx({"mixed": 0.2, "rest": 0.8 * 0.2})
    # Low confidence: also u_y < 50 % on "mixed", which covers "rest"'s u_y < 20 %.
    assert _check(routes, 0.5) == pytest.approx({"mixed": 1 - 0.8 * 0.5})


def test_deterministic_route_after_a_sample_route() -> None:
    routes = _routes(("audit", {"type": "sample", "percent": 5}), LOW)
    assert _check(routes, 0.5) == pytest.approx({"audit": 0.05, "low": 0.95})
    assert _check(routes, 0.95) == pytest.approx({"audit": 0.05})


def test_shadow_routes_and_policies_never_count() -> None:
    routes = _routes(
        ("watch", {"type": "sample", "percent": 50}),
        ("audit", {"type": "any", "policies": [{"type": "sample", "percent": 5, "shadow": True}]}),
        shadow=("watch",),
    )
    assert routes.chances.random is False
    [decision] = routes.decide([make_prediction(event_id="x", confidence=0.95)])
    assert decision.propensity is NEVER


def test_propensities_leave_shadow_hit_counts_alone() -> None:
    routes = _routes(
        ("audit", {"type": "sample", "percent": 5}),
        (
            "low",
            {
                "type": "any",
                "policies": [
                    LOW[1],
                    {"type": "confidence", "below": 0.99, "shadow": True, "name": "near"},
                ],
            },
        ),
    )
    batch = [make_prediction(event_id=f"e{i}", confidence=0.95, offset=i) for i in range(1000)]
    decisions = routes.decide(batch)
    hits = routes.drain_shadow_hits()
    not_sampled = sum(1 for d in decisions if d.route != "audit")
    assert hits[("low", "near")] == not_sampled  # counted once, by the real decision


class _Wrapper(Policy[PolicyParams]):
    """A third-party composite the router does not know."""

    params_model = PolicyParams

    def __init__(self, inner: Policy[Any]) -> None:
        super().__init__("wrapper", PolicyParams())
        self.inner = inner

    def evaluate(self, batch: Any) -> list[Verdict]:
        return self.inner.evaluate(batch)

    def children(self) -> tuple[Policy[Any], ...]:
        return (self.inner,)


def test_unknown_composite_around_a_sample_is_refused_at_start() -> None:
    sample = PolicyRegistry().build({"type": "sample", "percent": 5}, "p")
    with pytest.raises(PolicyLoadError, match=r"wrapper.*holds a sample policy"):
        ReviewChances([("audit", _Wrapper(sample))])


def test_too_many_worlds_are_refused() -> None:
    salts = [
        (f"s{i}", {"type": "sample", "percent": 1 + j, "salt": f"salt-{i}"})
        for i in range(6)
        for j in range(3)
    ]
    assert MAX_WORLDS < 4**6
    with pytest.raises(PolicyLoadError, match="combinations of draws"):
        _routes(*[(f"{name}-{k}", spec) for k, (name, spec) in enumerate(salts)])
