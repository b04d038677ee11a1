"""The README's configuration table is generated from the settings and kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from stream_router import config_docs
from stream_router.backends import BACKENDS
from stream_router.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert config_docs.with_table(text) == text, (
        "README.md's configuration table is stale: run "
        "`.venv/bin/python -m stream_router.config_docs --write README.md`"
    )


def test_every_setting_is_described() -> None:
    missing = [row.key for row in config_docs.rows() if not row.description]
    assert missing == []


def test_every_leaf_setting_has_a_row() -> None:
    keys = {row.key for row in config_docs.rows()}
    dumped = Settings().model_dump()
    leaves = [f"{section}.{name}" for section, values in dumped.items() for name in values]
    assert [key for key in leaves if key not in keys] == []
    assert "ingest.mapping.label" in keys
    assert "policies.routes[].review_flow" in keys
    assert "review.budgets.<route>.per_day" in keys


def test_every_backend_setting_has_a_row_marked_with_its_backend() -> None:
    rows = {row.key: row for row in config_docs.rows() if row.key.startswith("review.backend.")}
    assert rows["review.backend.name"].type == " \\| ".join(BACKENDS)
    assert rows["review.backend.name"].env == "STREAM_ROUTER_REVIEW__BACKEND__NAME"
    for name, entry in BACKENDS.items():
        for field in set(entry.settings.model_fields) - {"name"}:
            row = rows[f"review.backend.{field}"]
            assert row.description.startswith(f"[{name}] ")


def test_rows_name_environment_variables_for_scalars_only() -> None:
    by_key = {row.key: row for row in config_docs.rows()}
    assert by_key["kafka.bootstrap_servers"].env == "STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS"
    assert by_key["ingest.mapping.label"].env == "STREAM_ROUTER_INGEST__MAPPING__LABEL"
    assert by_key["policies.routes[].name"].env == ""
    assert by_key["kafka"].env == ""


def test_the_table_escapes_pipes_and_marks_required_and_secret_fields() -> None:
    class Inner(BaseModel):
        choice: str = Field("a|b", description="x | y")

    class Outer(BaseModel):
        inner: Inner = Field(Inner(), description="The inner part.")
        needed: int = Field(description="Must be given.")

    rows = {row.key: row for row in config_docs.rows(Outer)}
    assert rows["needed"].default == "required"
    assert rows["inner.choice"].env == "STREAM_ROUTER_INNER__CHOICE"
    table = config_docs.table()
    assert "| `kafka.sasl_password` | secret (optional) |" in table
    assert "SASL_PLAINTEXT \\| SASL_SSL" in table


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        config_docs.with_table("# no table here\n")


def test_write_refreshes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "doc.md"
    target.write_text(f"intro\n{config_docs.BEGIN}\nold\n{config_docs.END}\nend\n")
    assert config_docs.main(["--write", str(target)]) == 0
    text = target.read_text()
    assert "\nold\n" not in text
    assert text.startswith("intro\n")
    assert text.endswith("end\n")
    assert "`metrics.port`" in text
