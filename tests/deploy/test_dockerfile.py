"""The Dockerfile, checked without a Docker engine (none runs on these machines; checkov also
scans it, see test_checkov.py).

What is checked is what can go wrong without building: the health check's own command run
against the project's HTTP server, the entrypoint and default command parsed by the real CLI,
the environment names being real settings, a numeric non-root user, a runtime stage without
build tools, a build context (``.dockerignore``) that holds everything the stages copy, and the
build's inputs pinned: the base image by digest, the Python distributions by constraints.txt
(whose agreement with pyproject.toml tests/unit/test_dependency_floors.py checks).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream_router.cli import build_parser
from stream_router.health import HealthServer
from stream_router.settings import load_settings
from stream_router.supervision import Supervisor
from tests.deploy.conftest import DEPLOY, REPO

Instruction = tuple[str, str]  # (keyword, arguments)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> dict[str, list[Instruction]]:
    result: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = []
            result[rest.split()[-1]] = current
        current.append((keyword, rest))
    return result


def runtime() -> list[Instruction]:
    return list(stages().values())[-1]


def only(stage: list[Instruction], keyword: str) -> str:
    found = [rest for key, rest in stage if key == keyword]
    assert len(found) == 1, f"expected one {keyword} in the runtime stage, found {len(found)}"
    return found[0]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, rest in stage:
        if key == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_two_stages_and_a_runtime_without_build_tools() -> None:
    built = stages()
    assert list(built) == ["builder", "runtime"]
    final = runtime()
    assert re.fullmatch(r"python:3\.11-slim\S* AS runtime", final[0][1])
    copies = [rest for key, rest in final if key == "COPY" and rest.startswith("--from")]
    assert copies == ["--from=builder /opt/stream-router /opt/stream-router"]
    for key, rest in final:
        if key == "RUN":
            assert not re.search(r"apt-get|apk |gcc|build-essential|pip ", rest), rest


def test_runs_as_a_numeric_non_root_user() -> None:
    user = only(runtime(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: Kubernetes' runAsNonRoot needs a numeric user"
    assert int(uid) >= 10000
    assert gid.isdigit()


def test_entrypoint_and_default_command_are_the_real_cli() -> None:
    final = runtime()
    entrypoint = json.loads(only(final, "ENTRYPOINT"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert entrypoint == ["stream-router"]
    assert "stream-router" in scripts["scripts"]
    args = build_parser().parse_args(json.loads(only(final, "CMD")))
    assert (args.command, args.role) == ("run", "ingest")
    copied = [rest.split() for key, rest in final if key == "COPY" and "--from" not in rest]
    assert [str(REPO / src) for src, dest in copied if dest == str(args.config)], (
        f"the default command reads {args.config}, which no COPY puts there"
    )
    for src, _ in copied:
        load_settings(REPO / src)


def test_the_environment_sets_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(runtime())
    for key, value in env.items():
        if key.startswith("STREAM_ROUTER_"):
            monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.metrics.host == env["STREAM_ROUTER_METRICS__HOST"]
    assert str(settings.metrics.port) == only(runtime(), "EXPOSE")


async def run_healthcheck(port: int) -> int:
    """The HEALTHCHECK's command as the image runs it, with this interpreter as `python`."""
    command = json.loads(only(runtime(), "HEALTHCHECK").partition("CMD")[2])
    assert command[0] == "python"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:],
        env={"STREAM_ROUTER_METRICS__PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_the_healthcheck_asks_healthz_on_the_configured_port() -> None:
    server = HealthServer(Supervisor(60), CollectorRegistry(), "127.0.0.1", 0)
    await server.start()
    port = server.port
    try:
        assert await run_healthcheck(port) == 0
    finally:
        await server.stop()
    assert await run_healthcheck(port) != 0, "the health check passes with no server"


def test_the_build_context_holds_what_the_stages_copy() -> None:
    text = (REPO / ".dockerignore").read_text(encoding="utf-8")
    ignore = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    assert ignore[0] == "*", ".dockerignore is an allow-list starting with *"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in stages().values():
        for key, rest in stage:
            if key == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    assert src in allowed, f"COPY {src}: not in the build context (.dockerignore)"
                    assert (REPO / src).exists(), f"COPY {src}: no such file"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["readme"] in allowed, "the wheel build needs the readme"


def global_args() -> dict[str, str | None]:
    """The ARGs declared before the first FROM, the only ones a FROM line can use, with their
    defaults (None: no default, the build must pass it)."""
    found: dict[str, str | None] = {}
    for keyword, rest in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, eq, default = rest.partition("=")
            found[name] = default if eq else None
    return found


def test_every_stage_starts_from_the_base_image_pinned_by_digest() -> None:
    args = global_args()
    bases = {name: stage[0][1].split()[0] for name, stage in stages().items()}
    for name, image in bases.items():
        _, at, digest = image.partition("@")
        assert at, f"stage {name}: FROM {image} is pinned by tag only; pin it by digest"
        reference = re.fullmatch(r"\$\{(\w+)\}", digest)
        if reference is None:
            assert DIGEST.fullmatch(digest), f"stage {name}: {digest!r} is not a sha256 digest"
            continue
        arg = reference.group(1)
        assert arg in args, f"stage {name}: FROM uses ${{{arg}}}, which no ARG before FROM declares"
        default = args[arg]
        # No default: the build must pass --build-arg, and an empty one is not a valid
        # reference, so an unpinned build stops at FROM instead of taking the newest image.
        assert default is None or DIGEST.fullmatch(default), (
            f"ARG {arg}={default}: the default must be a sha256 digest or absent"
        )
    assert len(set(bases.values())) == 1, f"the stages start from different images: {bases}"
    first = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first) or "@sha256:" in first, (
        f"{first!r} pulls a Dockerfile frontend image by tag"
    )


def builder_commands() -> list[str]:
    """The builder's RUN instructions split into their ``&&``-joined shell commands."""
    return [
        command.strip()
        for key, rest in stages()["builder"]
        if key == "RUN"
        for command in rest.split("&&")
    ]


def option(words: list[str], *names: str) -> str | None:
    """The value of a command-line option given as ``--name value`` or ``--name=value``."""
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                return words[index + 1]
            if word.startswith(f"{name}="):
                return word.partition("=")[2]
    return None


def test_the_dependencies_install_at_the_pinned_versions_from_wheels() -> None:
    builder = stages()["builder"]
    copied_here = [
        rest.split()[:-1] for key, rest in builder if key == "COPY" and rest.split()[-1] == "./"
    ]
    assert any("constraints.txt" in sources for sources in copied_here), (
        "the builder does not copy constraints.txt into its working directory"
    )
    installs = [shlex.split(c) for c in builder_commands() if re.search(r"\bpip install\b", c)]
    assert installs, "the builder installs nothing with pip"
    for words in installs:
        assert option(words, "--constraint", "-c") == "constraints.txt", (
            f"{shlex.join(words)}: installs without --constraint constraints.txt"
        )
        assert option(words, "--only-binary") == ":all:", (
            f"{shlex.join(words)}: may build a source distribution (add --only-binary=:all:)"
        )


def run_unpinned_check(tmp_path: Path, installed: list[str]) -> subprocess.CompletedProcess[str]:
    """The builder's own check that everything installed is pinned, run on ``installed`` as
    ``pip freeze`` would list it, in a directory holding the real constraints.txt."""
    commands = builder_commands()
    freeze = next((c for c in commands if " freeze " in c and ">" in c), None)
    check = next((c for c in commands if c.startswith("if grep")), None)
    missing = "the builder does not compare pip freeze with constraints.txt"
    assert freeze, missing
    assert check, missing
    listing = freeze.rpartition(">")[2].strip()
    assert listing in check, f"the check does not read what pip freeze wrote ({listing})"
    (tmp_path / "constraints.txt").write_text(
        (REPO / "constraints.txt").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "installed.txt").write_text("".join(f"{line}\n" for line in installed))
    return subprocess.run(
        ["bash", "-c", check.replace(listing, "installed.txt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_build_fails_when_something_installed_is_not_pinned(tmp_path: Path) -> None:
    pins = [
        line
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert run_unpinned_check(tmp_path, pins[:5]).returncode == 0
    name, _, version = pins[0].partition("==")
    for stray in ("left-pad==1.0", f"{name}=={version}.post1"):
        result = run_unpinned_check(tmp_path, [*pins[:5], stray])
        assert result.returncode != 0, f"{stray} is not pinned, yet the build would go on"
        assert result.stdout.split() == [stray], result.stdout
        assert "scripts/lock" in result.stderr
