"""The one YAML reader of the router's, the demo's and the sandbox's configuration files: each
problem a ``ConfigError`` naming the file, in the words each of them used before."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_router.config_files import load_yaml_mapping
from stream_router.demo.settings import load_demo_settings
from stream_router.errors import ConfigError
from stream_router.sandbox.settings import SandboxSettings
from stream_router.settings import load_settings

LOADERS: dict[str, tuple[Callable[[Path], Any], str, str]] = {
    "router": (load_settings, "configuration", "a mapping of sections"),
    "demo": (load_demo_settings, "demo configuration", "a mapping (producer, sandbox, router)"),
    "sandbox": (SandboxSettings.from_yaml, "sandbox settings", "a mapping"),
}


def test_an_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_yaml_mapping(path, what="configuration", top_level="a mapping") == {}


@pytest.mark.parametrize("loader", LOADERS)
def test_a_missing_file_is_named(tmp_path: Path, loader: str) -> None:
    load, what, _ = LOADERS[loader]
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"cannot read {what} {path}: ")


@pytest.mark.parametrize("loader", LOADERS)
def test_invalid_yaml_is_placed_without_the_line(tmp_path: Path, loader: str) -> None:
    load, _, _ = LOADERS[loader]
    path = tmp_path / "bad.yaml"
    path.write_text("kafka: {sasl_password: hunter2\n")  # unclosed
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert re.match(rf"{re.escape(str(path))} is not valid YAML: line \d+, column \d+: ", message)
    assert "hunter2" not in message


@pytest.mark.parametrize("loader", LOADERS)
def test_the_top_level_must_be_a_mapping(tmp_path: Path, loader: str) -> None:
    load, _, top_level = LOADERS[loader]
    path = tmp_path / "list.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: the top level must be {top_level}"
