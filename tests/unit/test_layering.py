"""The layering the architecture promises, read from the imports of every module.

- ``review/`` (the review core) imports no framework or client library and no review backend's
  package: faust and the Kafka and AWS clients belong to the review role (``review_role.py``,
  ``review_topics.py``) and to the adapters (``aws/``, ``labelstudio/``).
- ``policies/`` (the domain) imports no client library either.
- No two of the packages import each other (a cycle), at the top level or inside functions.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import stream_router

ROOT = Path(stream_router.__file__).parent
CLIENTS = {"faust", "mode", "aiokafka", "aioboto3", "aiobotocore", "boto3", "botocore", "aiohttp"}
ADAPTERS = {"aws", "labelstudio", "sandbox", "demo"}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def package_of(module: str) -> str | None:
    """The subpackage of ``stream_router`` a module is in (None: a top-level module)."""
    parts = module.split(".")
    if parts[0] != "stream_router" or len(parts) < 2:
        return None
    return parts[1] if (ROOT / parts[1]).is_dir() else None


def offenders(package: str, forbidden_roots: set[str], forbidden_packages: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in sorted(imports(path)):
            if module.split(".")[0] in forbidden_roots or package_of(module) in forbidden_packages:
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


def test_the_review_core_imports_no_framework_client_or_backend() -> None:
    assert offenders("review", CLIENTS, ADAPTERS) == []


def test_the_policies_import_no_client_library() -> None:
    assert offenders("policies", CLIENTS, ADAPTERS | {"review", "ingest"}) == []


def test_no_two_packages_import_each_other() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).parts
        if len(relative) < 2:
            continue  # top-level modules (the CLI, the roles, settings) compose the packages
        source = relative[0]
        for module in imports(path):
            target = package_of(module)
            if target is not None and target != source:
                edges[source].add(target)
    cycles = sorted(
        f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and a in edges.get(b, set())
    )
    assert cycles == []
