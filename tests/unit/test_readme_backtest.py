"""The README's backtest walk-through, run as written, and its table is what the command prints.

The block between ``<!-- readme-scenario: backtest -->`` and ``<!-- readme-scenario-end -->``
is read from README.md and run line by line (a line ending in ``\\`` continues on the next) in a
fresh folder holding only a link to ``.venv``. Every line must exit 0, every file it names must
be written, and each row of the table the README shows must be a line of the command's output:
the figures a reader sees are the ones the project computes, and change with it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- readme-scenario: backtest -->\n```sh\n(.*?)```\n<!-- readme-scenario-end -->",
        text,
        re.S,
    )
    assert match, "README.md has no backtest scenario"
    joined = match.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _table() -> list[str]:
    """The rows of the table shown after the scenario (the header and one line per label)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text.split("<!-- readme-scenario: backtest -->", 1)[1]
    match = re.search(r"```\n(label +events threshold.*?)```", after, re.S)
    assert match, "no backtest table after the scenario"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_the_readme_backtest_runs_as_written_and_prints_its_table(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    outputs = []
    for command in _commands():
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        outputs.append(done.stdout)
    for name in ("history.jsonl", "report.json", "grid.csv", "thresholds.png", "policies.yaml"):
        assert (tmp_path / name).stat().st_size > 0, name
    printed = set(outputs[1].splitlines())
    for row in _table():
        assert row in printed, f"the README's row is not what the command prints: {row!r}"
    assert "# valid: 2 routes" in outputs[2]
