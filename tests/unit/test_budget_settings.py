"""Review budgets fail closed: no route starts paid reviews without a limit unless it says so.

A route without a budget of its own spends the ``'*'`` entry, which is the documented default
(1,000 reviews a UTC day) when the configuration gives none, and ``config check`` prints it. A
budget that sets no limit is refused; only ``unlimited: true`` lifts the limits. Budget keys
must name configured routes. Every example configuration still loads, each of its review routes
under a limit it chose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_router.cli import main
from stream_router.demo.router import router_config, write_router_config
from stream_router.demo.settings import DemoSettings
from stream_router.errors import ConfigError
from stream_router.review.budget import UNLIMITED, BudgetLimits
from stream_router.review.shares import budget_notes, route_limits
from stream_router.settings import DEFAULT_ROUTE_BUDGET, Settings, load_settings
from tests.unit.test_demo_settings import info

REPO = Path(__file__).resolve().parents[2]
ROUTE = {"name": "general", "review_flow": "fd-general", "policy": {"type": "sample", "percent": 1}}


def config(
    tmp_path: Path, review: dict[str, Any], routes: list[dict[str, Any]] | None = None
) -> Path:
    path = tmp_path / "router.yaml"
    data = {"policies": {"routes": routes or [ROUTE]}, "review": review}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def example_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Settings]:
    """The router configurations of config/ and of the demo, loaded as their users load them
    (deploy/k8s's, which need their pods' environment: tests/deploy/test_kubernetes.py)."""
    found = {"router.yaml": load_settings(REPO / "config" / "router.yaml")}
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__BACKEND__API_TOKEN", "token")
    found["router-label-studio.yaml"] = load_settings(REPO / "config" / "router-label-studio.yaml")
    monkeypatch.delenv("STREAM_ROUTER_REVIEW__BACKEND__API_TOKEN")
    demo = router_config(DemoSettings(), info(), metrics_port=0, data_dir=tmp_path / "d")
    found["demo"] = write_router_config(demo, tmp_path / "demo-router.yaml")
    return found


def test_every_example_gives_each_review_route_a_limit_of_its_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = example_settings(tmp_path, monkeypatch)
    assert len(examples) == 3
    for name, settings in examples.items():
        limits = route_limits(settings)
        for route in settings.policies.routes:
            assert limits[route.name] != UNLIMITED, f"{name}: route {route.name} has no limit"
        # No route of an example rides on the default without saying so.
        assert budget_notes(settings) == [], name


def test_a_route_without_a_budget_gets_the_default_and_config_check_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, {})
    settings = load_settings(path)
    assert settings.review.budgets == {"*": DEFAULT_ROUTE_BUDGET}
    assert route_limits(settings) == {"general": BudgetLimits(per_day=1000)}
    (note,) = budget_notes(settings)
    assert note.startswith("route general has no budget of its own: it may start 1000 reviews")
    assert main(["config", "check", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["review"]["budgets"] == {
        "*": {"per_hour": None, "per_day": 1000, "unlimited": False}
    }


def test_listed_routes_keep_their_budget_and_the_rest_spend_star(tmp_path: Path) -> None:
    routes = [ROUTE, {**ROUTE, "name": "audit"}, {**ROUTE, "name": "trial", "shadow": True}]
    review = {"budgets": {"general": {"per_hour": 5}, "*": {"per_day": 7}}}
    settings = load_settings(config(tmp_path, review, routes))
    assert route_limits(settings) == {
        "general": BudgetLimits(per_hour=5),
        "audit": BudgetLimits(per_day=7),
        "trial": BudgetLimits(per_day=7),
    }
    assert budget_notes(settings) == []  # '*' was chosen, not defaulted


def test_the_default_is_filled_in_when_the_environment_gives_budgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__BUDGETS", '{"general": {"per_day": 3}}')
    settings = load_settings(config(tmp_path, {}))
    assert settings.review.budgets["*"] == DEFAULT_ROUTE_BUDGET
    assert route_limits(settings) == {"general": BudgetLimits(per_day=3)}


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({}, "review.budgets.general: .*sets no limit: give per_hour, per_day or both, or "
             "unlimited: true"),
        ({"per_hour": None}, "review.budgets.general: .*sets no limit"),
        ({"per_day": 5, "unlimited": True}, "review.budgets.general: .*unlimited: true goes "
                                            "without per_hour and per_day"),
    ],
)  # fmt: skip
def test_a_budget_without_a_limit_is_refused_naming_it(
    tmp_path: Path, budget: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(config(tmp_path, {"budgets": {"general": budget}}))


def test_no_limit_only_when_said_and_then_a_warning(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path, {"budgets": {"*": {"unlimited": True}}}))
    assert route_limits(settings) == {"general": UNLIMITED}
    assert budget_notes(settings) == [
        "route general starts paid reviews without a limit (review.budgets.*: unlimited: true)"
    ]


@pytest.mark.parametrize("setting", ["budgets", "escalation_flows"])
def test_keys_must_name_configured_routes(tmp_path: Path, setting: str) -> None:
    value = {"genral": {"per_day": 5}} if setting == "budgets" else {"genral": "fd-experts"}
    with pytest.raises(
        ConfigError, match=rf"review\.{setting}\.genral: no route is named 'genral'.*'general'"
    ):
        load_settings(config(tmp_path, {setting: value}))


def test_a_low_limit_is_noted() -> None:
    settings = Settings.model_validate(
        {
            "policies": {"routes": [ROUTE]},
            "review": {"topic_partitions": 4, "budgets": {"general": {"per_hour": 3}}},
        }
    )
    assert budget_notes(settings) == [
        "the budget of route general is below review.topic_partitions (4): partitions whose "
        "share is zero always apply the fallback"
    ]
