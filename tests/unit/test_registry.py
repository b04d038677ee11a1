"""The registry loads policies through entry points: a third-party package and the built-ins."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_router.errors import PolicyLoadError
from stream_router.models import Prediction, SourceRef
from stream_router.policies.registry import PolicyRegistry

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "plugin"
BUILT_INS = {"all", "any", "not", "confidence", "margin", "entropy", "required_fields", "sample",
             "field"}  # fmt: skip


@pytest.fixture
def plugin_on_path() -> Iterator[None]:
    sys.path.insert(0, str(PLUGIN_DIR))
    yield
    sys.path.remove(str(PLUGIN_DIR))
    sys.modules.pop("example_policy", None)


def prediction(label: str) -> Prediction:
    return Prediction("e", label, 0.9, None, None, None, None, {}, SourceRef("t", 0, 0, None))


def test_built_ins_come_through_the_entry_point_group() -> None:
    registry = PolicyRegistry()
    assert set(registry.types()) >= BUILT_INS
    for name in BUILT_INS:
        assert registry.load(name).__module__.startswith("stream_router.policies.")


@pytest.mark.usefixtures("plugin_on_path")
def test_third_party_policy_loads_and_runs() -> None:
    registry = PolicyRegistry()
    assert "watch_list" in registry.types()
    policy = registry.build({"type": "watch_list", "labels": ["fraud"]}, "routes.0.policy")
    verdicts = policy.evaluate([prediction("fraud"), prediction("cat")])
    assert [v.review for v in verdicts] == [True, False]
    assert verdicts[0].reason == "label fraud is on the watch list"


@pytest.mark.usefixtures("plugin_on_path")
def test_third_party_params_are_validated() -> None:
    with pytest.raises(PolicyLoadError, match=r"routes\.0\.policy\.labels"):
        PolicyRegistry().build({"type": "watch_list", "labels": []}, "routes.0.policy")


@pytest.mark.usefixtures("plugin_on_path")
def test_broken_plugins_fail_with_a_clear_error() -> None:
    registry = PolicyRegistry()
    with pytest.raises(PolicyLoadError, match="failed to import"):
        registry.load("broken")
    with pytest.raises(PolicyLoadError, match="not a stream_router Policy"):
        registry.load("not_a_policy")


def test_only_named_types_are_imported(plugin_on_path: None) -> None:
    sys.modules.pop("example_policy", None)
    registry = PolicyRegistry()
    registry.build({"type": "confidence", "below": 0.5}, "p")
    assert "example_policy" not in sys.modules  # loaded lazily, only when a config names it


def test_readme_shows_the_tested_plugin_example() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    source = (PLUGIN_DIR / "example_policy" / "__init__.py").read_text()
    example = source[source.index("from __future__") :]
    assert f"```python\n{example}```" in readme
