"""pyproject.toml's dependency floors against constraints.txt and the published advisories.

constraints.txt (written by scripts/lock) is what CI, the sandbox and the image install; the
floors in pyproject.toml are what anyone installing the package may get. They must agree: every
direct dependency, extras included, pinned in constraints.txt at a version its specifier admits.
And the floors of the dependencies that handle untrusted input must be past the releases that
fixed their known advisories, so no install, pinned or not, can pick a vulnerable version.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Advisory:
    fixed_in: str
    ids: str


# The first release past each advisory, as the advisory databases (OSV/PyPA, GitHub) give it.
# Raise a floor in pyproject.toml with its comment, then add or update the row here.
ADVISORIES: dict[str, Advisory] = {
    # 3.14.4: request smuggling in the pure-Python parser, unbounded memory and CPU use
    # (PYSEC-2026-4369, -4371, -4389, -4395, -4399, -4400); 3.14.5: three more.
    "aiohttp": Advisory(
        "3.14.5", "PYSEC-2026-4371, GHSA-2g87-pp6c-29x5, GHSA-5wr8-gcqf-gqf3, GHSA-494j-54xm-rwp3"
    ),
    # Recursion without a limit: in loads below 3.9.15, in dumps below 3.11.6.
    "orjson": Advisory("3.11.6", "CVE-2024-27454, CVE-2025-67221"),
    "cryptography": Advisory("50.0.0", "CVE-2026-69247"),
    "pydantic": Advisory("2.4.0", "CVE-2024-3772"),
    "pyyaml": Advisory("5.4", "CVE-2020-14343"),
    "pytest": Advisory("9.0.3", "CVE-2025-71176"),
}


def direct_requirements() -> list[tuple[str, Requirement]]:
    """(group, requirement) for every dependency pyproject.toml names, extras included, except
    the project's own extras (``stream-router[sandbox]``)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    own = canonicalize_name(project["name"])
    return [
        (group, requirement)
        for group, lines in groups.items()
        for requirement in map(Requirement, lines)
        if canonicalize_name(requirement.name) != own
    ]


def pins() -> dict[NormalizedName, Version]:
    """constraints.txt as name -> version; every line that is not a comment is ``name==version``."""
    found: dict[NormalizedName, Version] = {}
    for number, line in enumerate((REPO / "constraints.txt").read_text("utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert [s.operator for s in specifiers] == ["=="], (
            f"constraints.txt:{number}: {line!r} is not an exact pin (name==version)"
        )
        found[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return found


def floor(specifier: SpecifierSet) -> Version | None:
    """The lowest version a specifier can admit, as far as its lower bounds say."""
    bounds = [Version(s.version) for s in specifier if s.operator in {">=", "==", "~=", ">"}]
    return max(bounds, default=None)


def test_constraints_pin_every_direct_dependency_within_its_specifier() -> None:
    pinned = pins()
    problems = []
    for group, requirement in direct_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            problems.append(f"{requirement} ({group}): not pinned in constraints.txt")
        elif not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{requirement} ({group}): constraints.txt pins {pinned[name]}")
    assert not problems, "run scripts/lock after changing pyproject.toml:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", sorted(ADVISORIES))
def test_floors_are_past_the_known_advisories(package: str) -> None:
    advisory = ADVISORIES[package]
    named = [
        (group, requirement)
        for group, requirement in direct_requirements()
        if canonicalize_name(requirement.name) == package
    ]
    assert named, f"{package} is no longer a direct dependency: drop its row from ADVISORIES"
    for group, requirement in named:
        below = (
            f"{requirement} ({group}) admits versions below {advisory.fixed_in}, "
            f"the first without {advisory.ids}"
        )
        lowest = floor(requirement.specifier)
        assert lowest is not None, below
        assert lowest >= Version(advisory.fixed_in), below
