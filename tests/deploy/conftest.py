"""Shared helpers of the deployment checks: where the tools are, and rendering the manifests.

The tools (kubectl for kustomize, checkov, promtool) are installed by ``scripts/test``
(``scripts/_deploy_tools.sh``). A missing tool fails the test with that instruction rather than
skipping it: a check that silently does not run is no check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS_VENV = REPO / ".venv-checkov"


def require_tool(name: str) -> str:
    """Path of ``name``: the tools venv first (scripts/test installs there), then PATH."""
    candidate = TOOLS_VENV / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed (looked in {TOOLS_VENV / 'bin'} and PATH); "
            "run scripts/test, which installs the deployment tools (scripts/_deploy_tools.sh)"
        )
    return found


def kubectl() -> str:
    """kubectl for `kubectl kustomize`: the one scripts/test put in the tools venv when the
    machine's could not render, else the machine image's."""
    return require_tool("kubectl")


def render(kustomization: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders from a kustomization directory."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
