"""The README's Quickstart, run line by line as written.

The blocks between ``<!-- readme-scenario: NAME -->`` and ``<!-- readme-scenario-end -->`` are
read from README.md itself, so the commands run here are the ones a reader copies. The first
block of a scenario is the sandbox's shell (``sandbox up``, kept running); the second is the
other shell, whose lines run in order in a fresh folder holding only ``config/`` and a link to
``.venv``, as a fresh clone would have them:

- ``eval "$(...)"`` runs the command and takes its exports into the environment;
- a line ending in ``&`` starts a process that keeps running (a role);
- ``tail ... --follow`` runs until every event of the sample file has its outcome;
- any other line must exit 0.

The only environment the README does not show is ``STREAM_ROUTER_SANDBOX_FILE`` (so the test's
sandbox never meets a developer's) and the broker choice of the session.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stream_router.sandbox.process import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "config" / "sample-events.jsonl"

pytestmark = [pytest.mark.integration]


def scenario(name: str) -> list[list[str]]:
    """The shell blocks of one README scenario, each as its command lines."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- readme-scenario: {re.escape(name)} -->\n(.*?)<!-- readme-scenario-end -->",
        text,
        re.S,
    )
    assert match, f"README.md has no scenario {name!r}"
    blocks = re.findall(r"```sh\n(.*?)```", match.group(1), re.S)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def expected_outcomes() -> set[str]:
    """Event ids of the sample lines that are predictions (the others are dead letters)."""
    ids = set()
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and {"event_id", "label", "confidence"} <= event.keys():
            ids.add(event["event_id"])
    return ids


def fresh_clone(tmp_path: Path) -> Path:
    folder = tmp_path / "clone"
    folder.mkdir()
    shutil.copytree(REPO / "config", folder / "config")
    (folder / ".venv").symlink_to(REPO / ".venv")
    return folder


def exports_of(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        found[key] = shlex.split(value)[0]
    return found


class Shell:
    """The second shell of a scenario: its environment, its background jobs."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd, self.env, self.logs = cwd, env, logs
        self.jobs: list[ManagedProcess] = []

    def process(self, name: str, line: str, ready: str = r"(?!)") -> ManagedProcess:
        process = ManagedProcess(
            name, ["bash", "-c", line], ready_pattern=ready, env=self.env, cwd=self.cwd,
            log_path=self.logs / f"{name}.log", stop_timeout_s=60,
        )  # fmt: skip
        process.start()
        self.jobs.append(process)
        return process

    async def run(self, line: str) -> str:
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", line], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{line!r} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    async def line(self, line: str) -> ManagedProcess | None:
        if line.startswith('eval "$(') and line.endswith(')"'):
            self.env.update(exports_of(await self.run(line[len('eval "$(') : -2])))
        elif line.endswith("&"):
            self.process(f"job{len(self.jobs)}", line.removesuffix("&").strip())
        elif "--follow" in line:
            return self.process("follow", line)
        else:
            await self.run(line)
        return None


async def outcomes_of(follow: ManagedProcess, jobs: list[ManagedProcess]) -> list[dict[str, Any]]:
    """Wait until ``tail --follow`` has printed an outcome for every sample prediction."""
    assert follow.log_path is not None
    wanted = expected_outcomes()
    deadline = time.monotonic() + 240
    while True:
        text = follow.log_path.read_text(encoding="utf-8") if follow.log_path.exists() else ""
        results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if {result["event_id"] for result in results} >= wanted:
            return results
        for job in jobs:
            assert job.running(), f"{job.name} exited:\n{job.output_tail()}"
        assert time.monotonic() < deadline, (
            f"{len({r['event_id'] for r in results})} of {len(wanted)} outcomes after 240 s"
        )
        await asyncio.sleep(0.5)  # polling a file another process appends to


async def run_scenario(
    tmp_path: Path, broker_kind: str, blocks: list[list[str]]
) -> list[dict[str, Any]]:
    (sandbox_line,), shell_lines = blocks
    clone = fresh_clone(tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAM_ROUTER_")},
        "STREAM_ROUTER_SANDBOX_FILE": str(tmp_path / "sandbox.json"),
        "STREAM_ROUTER_SANDBOX_BROKER": broker_kind,
    }
    shell = Shell(clone, env, tmp_path)
    sandbox = ManagedProcess(
        "sandbox", ["bash", "-c", sandbox_line], cwd=clone, ready_pattern="Ctrl-C stops",
        env=env, log_path=tmp_path / "sandbox.log", stop_timeout_s=90,
    )  # fmt: skip
    sandbox.start()
    try:
        await sandbox.wait_ready_async(300)
        follow = None
        for line in shell_lines:
            follow = await shell.line(line) or follow
        assert follow is not None, "the scenario has no tail --follow line"
        results = await outcomes_of(follow, [job for job in shell.jobs if job is not follow])
        follow.stop()
        for job in shell.jobs:
            if job is not follow:
                assert job.stop() == 0, f"{job.name}:\n{job.output_tail()}"
                assert job.log_path is not None
                assert "Traceback" not in job.log_path.read_text(), job.output_tail()
        return results
    finally:
        for job in shell.jobs:
            job.stop()
        sandbox.stop()


def with_all_roles(blocks: list[list[str]], replacement: list[str]) -> list[list[str]]:
    """The a2i scenario with its two ``run`` lines replaced by the ``--role all`` one."""
    sandbox, shell = blocks
    runs = [i for i, line in enumerate(shell) if " run --config " in line]
    assert len(runs) == 2, shell
    assert runs[1] == runs[0] + 1, shell
    return [sandbox, [*shell[: runs[0]], *replacement, *shell[runs[1] + 1 :]]]


def check(results: list[dict[str, Any]]) -> None:
    by_event: dict[str, set[str]] = {}
    for result in results:
        by_event.setdefault(result["event_id"], set()).add(result["decision"])
    assert all(len(decisions) == 1 for decisions in by_event.values()), "conflicting outcomes"
    decisions = Counter(next(iter(d)) for d in by_event.values())
    assert decisions["accepted"] > 100, decisions
    assert decisions["reviewed"] > 20, decisions
    reviewed = [r for r in results if r["decision"] == "reviewed"]
    # The sample events carry no ground truth, so careful reviewers answer the model's label
    # (5 % error per worker). Reviewers answering at random among 4 labels would "correct"
    # about three quarters of them.
    corrected = sum(1 for r in reviewed if r["review"]["corrected"])
    assert corrected / len(reviewed) < 0.25, f"{corrected} of {len(reviewed)} corrected"


@pytest.mark.tansu
async def test_the_quickstart_with_separate_roles(tmp_path: Path, broker_kind: str) -> None:
    check(await run_scenario(tmp_path, broker_kind, scenario("a2i")))
    assert (tmp_path / "clone" / ".stream-router" / "review-data").is_dir()


@pytest.mark.tansu
async def test_the_quickstart_with_both_roles_in_one_process(
    tmp_path: Path, broker_kind: str
) -> None:
    ((replacement,),) = scenario("a2i-all")
    blocks = with_all_roles(scenario("a2i"), [replacement])
    check(await run_scenario(tmp_path, broker_kind, blocks))


@pytest.mark.label_studio
async def test_the_quickstart_on_label_studio(tmp_path: Path, broker_kind: str) -> None:
    sandbox_block, shell_block = scenario("label-studio")
    check(await run_scenario(tmp_path, broker_kind, [sandbox_block, shell_block]))
