"""Sandbox settings: defaults work, bad values fail naming the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_router.errors import ConfigError
from stream_router.sandbox.a2i.server import TokenBucket
from stream_router.sandbox.settings import SandboxSettings

REPO = Path(__file__).resolve().parents[2]


def test_example_config_is_valid() -> None:
    settings = SandboxSettings.from_yaml(REPO / "config" / "sandbox.yaml")
    assert {fd.name for fd in settings.flow_definitions} >= {"sandbox-general", "sandbox-experts"}


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert SandboxSettings.from_yaml(path) == SandboxSettings()


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("flow_definitions: [{name: Bad_Name}]", "flow_definitions.0.name"),
        ("flow_definitions: [{name: ok, task_count: 4}]", "flow_definitions.0.task_count"),
        ("faults: {internal_error_rate: 1.5}", "faults.internal_error_rate"),
        ("faults: {surprise: 1}", "faults.surprise"),
        ("aws: {account_id: '12'}", "aws.account_id"),
        ("flow_definitions: [{name: a, s3_output_path: 'http://x'}]", "s3_output_path"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValidationError) as caught:
        SandboxSettings.from_yaml(path)
    locations = [".".join(str(p) for p in error["loc"]) for error in caught.value.errors()]
    assert any(field in location for location in locations), locations


def test_duplicate_flow_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="repeated"):
        SandboxSettings.model_validate({"flow_definitions": [{"name": "a"}, {"name": "a"}]})


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n")
    with pytest.raises(
        ConfigError, match=f"{re.escape(str(path))}: the top level must be a mapping"
    ):
        SandboxSettings.from_yaml(path)


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert bucket.take()
    assert not bucket.take()
    now[0] = 10.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]
