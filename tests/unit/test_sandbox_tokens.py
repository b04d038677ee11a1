"""Secrets and ids the sandbox generates never start with "-" (issue 18, item 10).

``label-studio start --password -Xq...`` reads the password as an option; URL-safe base64 starts
with "-" once in 64 draws, so before ``sandbox/tokens.py`` one sandbox start in 64 failed.
10,000 draws of a plain ``secrets.token_urlsafe`` include one starting with "-" all but
(63/64)**10000 ~ 1e-68 of the time.
"""

from __future__ import annotations

import ast
import json
import re
import string
from collections.abc import Callable
from pathlib import Path

import pytest

from stream_router.sandbox import tokens
from stream_router.sandbox.labelstudio.server import Credentials

DRAWS = 10_000
URLSAFE = frozenset(string.ascii_letters + string.digits + "-_")
HEX = frozenset(string.hexdigits.lower())


@pytest.mark.parametrize(
    ("draw", "length", "alphabet"),
    [
        pytest.param(lambda: tokens.urlsafe_token(18), 24, URLSAFE, id="password-18-bytes"),
        pytest.param(lambda: tokens.urlsafe_token(48), 64, URLSAFE, id="secret-key-48-bytes"),
        pytest.param(lambda: tokens.hex_token(20), 40, HEX, id="api-token-20-bytes"),
        pytest.param(tokens.kafka_cluster_id, 22, URLSAFE, id="kafka-cluster-id"),
    ],
)
def test_no_generated_value_starts_with_a_dash_and_each_keeps_its_shape(
    draw: Callable[[], str], length: int, alphabet: frozenset[str]
) -> None:
    values = [draw() for _ in range(DRAWS)]
    assert [v for v in values if v.startswith("-")] == []
    assert {len(v) for v in values} == {length}
    assert set("".join(values)) <= alphabet
    assert len(set(values)) == DRAWS  # random, not a constant that happens to pass
    if alphabet is URLSAFE:  # "-" stays in the alphabet, only not first
        assert any("-" in v[1:] for v in values)


def test_label_studio_credentials_do_not_start_with_a_dash(tmp_path: Path) -> None:
    for index in range(2_000):
        folder = tmp_path / str(index)
        folder.mkdir()
        made = Credentials.of(folder)
        assert not made.password.startswith("-")
        assert not made.token.startswith("-")
        assert Credentials.of(folder) == made  # kept for the folder's next start


def test_stored_credentials_whose_password_starts_with_a_dash_are_replaced(
    tmp_path: Path,
) -> None:
    """An older sandbox may have stored one: Label Studio never started with it."""
    stored = {"email": "admin@example.com", "password": "-Xq3", "token": "a" * 40}
    (tmp_path / "credentials.json").write_text(json.dumps(stored), encoding="utf-8")
    made = Credentials.of(tmp_path)
    assert not made.password.startswith("-")
    assert Credentials.of(tmp_path) == made


def test_no_other_sandbox_module_draws_a_secret_itself() -> None:
    """Everything random the sandbox passes on goes through sandbox/tokens.py."""
    root = Path(tokens.__file__).parent  # stream_router/sandbox
    drawing = re.compile(r"\b(token_urlsafe|token_hex|token_bytes|urlsafe_b64encode)\b")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "tokens.py" and path.parent == root:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                flagged = any(alias.name == "secrets" for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                flagged = node.module == "secrets"
            elif isinstance(node, ast.Attribute):
                flagged = drawing.fullmatch(node.attr) is not None
            else:
                continue
            if flagged:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    allowed = {"a2i/api.py", "a2i/shapes.py"}  # NextToken: base64 of a listing position
    assert [o for o in offenders if o.split(":")[0] not in allowed] == []
