"""Configuration files: the one YAML reader for the router's, the demo's and the sandbox's.

Each problem raises ``ConfigError`` naming the file: it cannot be read, it is not YAML (where and
what, without the offending line: it may hold a secret), or its top level is not a mapping. An
empty file reads as an empty mapping (the defaults). What the mapping means is the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stream_router.config_errors import yaml_problem
from stream_router.errors import ConfigError


def load_yaml_mapping(path: Path, *, what: str, top_level: str) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` ({} when the file is empty).

    ``what`` names the file in "cannot read {what} {path}"; ``top_level`` says what the top
    level must be ("a mapping of sections").
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be {top_level}")
    return data
