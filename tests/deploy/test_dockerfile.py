"""The Dockerfile, checked without a Docker engine (none runs on these machines; checkov also
scans it, see test_checkov.py).

What is checked is what can go wrong without building: the health check's own command run
against the project's HTTP server, the entrypoint and default command parsed by the real CLI,
the environment names being real settings, a numeric non-root user, a runtime stage without
build tools, and a build context (``.dockerignore``) that holds everything the stages copy.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import tomllib

import pytest
from prometheus_client import CollectorRegistry

from stream_router.cli import build_parser
from stream_router.health import Health, HealthServer
from stream_router.settings import load_settings
from tests.deploy.conftest import DEPLOY, REPO

Instruction = tuple[str, str]  # (keyword, arguments)


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
            env.update(item.split("=", 1) for item in shlex.split(rest))
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
    server = HealthServer(Health(), CollectorRegistry(), "127.0.0.1", 0)
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
