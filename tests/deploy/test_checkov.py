"""checkov over all of ``deploy/``: the Dockerfile, the raw Kubernetes manifests, what kustomize
renders from them, and the CloudFormation templates.

checkov runs offline (``--skip-download``): it then has no severities (they come from its
vendor's service), so every failed check counts, not only HIGH and CRITICAL ones. A finding that
is accepted is suppressed next to what it concerns, with its reason (``#checkov:skip=ID:reason``
in a Dockerfile or template, a ``checkov.io/skipN: ID=reason`` annotation in a manifest); a
suppression without a reason fails too.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from tests.deploy.conftest import DEPLOY, REPO, TOOLS_VENV, kubectl, require_tool

FRAMEWORKS = ("dockerfile", "kubernetes", "kustomize", "cloudformation")
GRAVE = {"HIGH", "CRITICAL"}
NO_REASON = {"", "No comment provided"}


def run_checkov() -> list[dict[str, Any]]:
    checkov = require_tool("checkov")
    # checkov's kustomize framework renders with kubectl from PATH.
    path = os.pathsep.join(
        [str(TOOLS_VENV / "bin"), os.path.dirname(kubectl()), os.environ.get("PATH", "")]
    )
    result = subprocess.run(
        [
            checkov,
            "--directory",
            str(DEPLOY.relative_to(REPO)),
            "--framework",
            *FRAMEWORKS,
            "--skip-download",
            "--output",
            "json",
            "--compact",  # no code excerpts; not --quiet, which drops the suppressions
        ],
        cwd=REPO,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # checkov exits 1 when a check failed; anything else but 0 is a crash.
    assert result.returncode in (0, 1), f"checkov crashed ({result.returncode}):\n{result.stderr}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_finds_nothing_unsuppressed_in_deploy() -> None:
    reports = run_checkov()
    by_type = {report["check_type"]: report for report in reports}
    scanned = {name: report["summary"]["resource_count"] for name, report in by_type.items()}
    # Each framework whose files are there must have scanned something.
    expected = {"dockerfile", "kubernetes", "kustomize"}
    if any((DEPLOY / "aws").glob("*.y*ml")) or any((DEPLOY / "aws").glob("*.json")):
        expected.add("cloudformation")
    missing = sorted(name for name in expected if not scanned.get(name))
    assert not missing, f"checkov scanned no resources of {missing} (got {scanned})"

    problems: list[str] = []
    for name, report in sorted(by_type.items()):
        summary = report["summary"]
        if summary.get("parsing_errors"):
            problems.append(f"{name}: {summary['parsing_errors']} files checkov cannot parse")
        for check in report["results"].get("failed_checks", []):
            severity = check.get("severity")
            if severity is None or severity in GRAVE:
                problems.append(
                    f"{check['check_id']} ({severity or 'no severity offline'}) "
                    f"{check['file_path']} {check['resource']}: {check['check_name']}"
                )
        for check in report["results"].get("skipped_checks", []):
            reason = (check.get("check_result") or {}).get("suppress_comment") or ""
            if reason.strip() in NO_REASON:
                problems.append(
                    f"{check['check_id']} suppressed without a reason in {check['file_path']}"
                )
    assert not problems, (
        "checkov findings in deploy/ (fix, or suppress inline with a reason):\n"
        + ("\n".join(sorted(set(problems))))
    )
