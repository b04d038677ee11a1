"""The audit monitor's settings: a target error per route and delta, checked at start-up.

A bad value fails naming the setting (``review.audit.<field>``); a per-route override must
name a configured route, like ``review.budgets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_router.errors import ConfigError
from stream_router.settings import load_settings

ROUTES = [
    {"name": "general", "review_flow": "fd", "policy": {"type": "confidence", "threshold": 0.8}},
    {"name": "audit", "review_flow": "fd", "policy": {"type": "sample", "percent": 2}},
]


def load(tmp_path: Path, audit: dict[str, Any]) -> Any:
    path = tmp_path / "router.yaml"
    data = {"policies": {"routes": ROUTES}, "review": {"audit": audit}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_settings(path)


def test_defaults_and_per_route_targets(tmp_path: Path) -> None:
    audit = load(tmp_path, {"routes": {"audit": {"target_error": 0.01}}}).review.audit
    assert (audit.target_error, audit.delta, audit.max_labels) == (0.02, 0.05, 20)
    assert audit.target_for("audit") == 0.01
    assert audit.target_for("general") == 0.02


@pytest.mark.parametrize(
    ("audit", "named"),
    [
        ({"target_error": 0}, "review.audit.target_error"),
        ({"target_error": 0.7}, "review.audit.target_error"),
        ({"delta": 1.5}, "review.audit.delta"),
        ({"delta": "often"}, "review.audit.delta"),
        ({"max_labels": 0}, "review.audit.max_labels"),
        ({"routes": {"audit": {"target_error": -1}}}, "review.audit.routes.audit.target_error"),
        ({"routes": {"audit": {}}}, "review.audit.routes.audit.target_error"),
        ({"routes": {"audti": {"target_error": 0.01}}}, "review.audit.routes.audti"),
        ({"target": 0.01}, "review.audit.target"),
    ],
)
def test_a_bad_value_fails_naming_the_setting(
    tmp_path: Path, audit: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(tmp_path, audit)
