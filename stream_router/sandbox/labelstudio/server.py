"""A real Label Studio server for the sandbox, in a virtual environment of its own.

Usage::

    server = LabelStudioServer(state_dir=Path("state/label-studio"))
    await server.prepare()                  # installs Label Studio on first use (about a minute)
    await server.start()                    # on a loopback port, data in state_dir
    resources = await server.provision(settings.flow_definitions)
    server.url, server.token                # for LabelStudioClient and the router

Label Studio is a Django server with dependencies of its own (Django, pandas, boto3, ...) that
must not constrain ours, so it is installed with pip into its own environment under the cache
folder (``$STREAM_ROUTER_CACHE_DIR`` or ``~/.cache/stream-router``), keyed by the digest of
``requirements.txt`` beside this file (Label Studio and every package it installs, pinned), once
per machine. A file lock makes parallel runs wait for one install; the environment appears whole
or not at all.

The server runs ``label-studio start`` bound to 127.0.0.1 with its SQLite database and media in
``state_dir``. It is started without prompts: an admin user and an API token (the "legacy"
token, enabled for the organization) come from the command line, generated once per state
folder and kept in ``credentials.json`` so a restart keeps them. Settings that would reach
beyond loopback are off: the version check against PyPI, analytics, Sentry. Label Studio's
protection against requests to private addresses (webhooks, URL imports) stays on, narrowed to
let the router's webhook endpoint on loopback through: the banned networks are
:data:`BANNED_NETWORKS`, every private, link-local (the cloud's instance metadata) and reserved
range but 127.0.0.0/8 and ::1. A deployment does the same with the router's own network
(README, "Choosing a review backend").

:meth:`LabelStudioServer.provision` makes one project per sandbox flow definition (title = the
flow's name, labeling configuration from its reviewers' labels, ``maximum_annotations`` = its
task count) and one user per simulated annotator, and is idempotent; a project an older sandbox
made gets today's labeling configuration.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import aiohttp

from stream_router.errors import ReviewRejected
from stream_router.labelstudio.client import LabelStudioClient
from stream_router.labelstudio.tasks import labeling_config
from stream_router.sandbox.kafka import cache_dir
from stream_router.sandbox.process import ManagedProcess, ProcessService, free_port
from stream_router.sandbox.settings import FlowDefinition
from stream_router.sandbox.tokens import hex_token, urlsafe_token

logger = logging.getLogger(__name__)

ADMIN_EMAIL = "admin@example.com"
ANNOTATOR_EMAIL = "annotator-{index}@example.com"
#: Networks Label Studio may not send requests to (webhooks, URL imports): private, shared,
#: link-local (169.254.169.254 is the cloud's instance metadata), documentation, multicast and
#: reserved ranges, and IPv6's equivalents; everything but loopback, where the router listens.
BANNED_NETWORKS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "::/128", "fc00::/7", "fe80::/10",
    "ff00::/8", "2001:db8::/32",
    # IPv6 forms that carry an IPv4 address (mapped, translated, NAT64, Teredo, 6to4): without
    # them [::ffff:a9fe:a9fe] would reach 169.254.169.254.
    "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2001::/32",
    "2002::/16",
)  # fmt: skip
#: Environment of the server: nothing beyond loopback, no prompts.
SERVER_ENV = {
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "SSRF_PROTECTION_ENABLED": "true",
    "USE_DEFAULT_BANNED_SUBNETS": "false",  # its list includes loopback, where the router is
    "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(BANNED_NETWORKS),
    "FEATURE_FLAGS_OFFLINE": "true",
    "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "PYTHONUNBUFFERED": "1",
}


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be installed or did not start (the message says why)."""


def _requirements() -> bytes:
    return resources.files(__package__).joinpath("requirements.txt").read_bytes()


def label_studio_version() -> str:
    """The Label Studio version ``requirements.txt`` pins."""
    for line in _requirements().decode().splitlines():
        if line.lower().startswith("label-studio=="):
            return line.split("==", 1)[1].strip()
    raise LabelStudioUnavailable("requirements.txt does not pin label-studio")


def install(*, quiet: bool = True) -> Path:
    """The ``label-studio`` executable, installed into its own environment on first use."""
    pinned = _requirements()
    digest = hashlib.sha256(pinned).hexdigest()[:12]
    root = cache_dir() / f"label-studio-{label_studio_version()}-{digest}"
    executable = root / "venv" / "bin" / "label-studio"
    if (root / "complete").is_file():
        return executable
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "complete").is_file():
            return executable
        venv = root / "venv"
        if venv.exists():  # an install that was interrupted
            shutil.rmtree(venv)
        logger.warning("installing Label Studio %s into %s", label_studio_version(), venv)
        started = time.monotonic()
        (root / "requirements.txt").write_bytes(pinned)
        commands = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             *(["--quiet"] if quiet else []), "-r", str(root / "requirements.txt")],
        ]  # fmt: skip
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise LabelStudioUnavailable(
                    f"installing Label Studio failed ({' '.join(command[:4])} ...): "
                    f"{(done.stderr or done.stdout)[-2000:]}"
                )
        if not executable.is_file():
            raise LabelStudioUnavailable(f"the install left no {executable}")
        (root / "complete").write_text(label_studio_version(), encoding="utf-8")
        logger.warning("Label Studio installed in %.0f s", time.monotonic() - started)
    return executable


@dataclass(frozen=True)
class Credentials:
    """The admin user and API token of one state folder."""

    email: str
    password: str
    token: str

    @classmethod
    def of(cls, state_dir: Path) -> Credentials:
        """The folder's credentials, made on first use (``sandbox/tokens.py``: neither value
        starts with ``-``, which ``label-studio start`` would read as an option)."""
        path = state_dir / "credentials.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            # An older sandbox may have stored a password starting with "-": Label Studio
            # never started with it (so no user has it), and new credentials replace it.
            if not str(data["password"]).startswith("-"):
                return cls(data["email"], data["password"], data["token"])
        made = cls(ADMIN_EMAIL, urlsafe_token(18), hex_token(20))
        path.write_text(json.dumps(made.__dict__), encoding="utf-8")
        path.chmod(0o600)
        return made


@dataclass(frozen=True)
class LabelStudioResources:
    """What :meth:`LabelStudioServer.provision` made: projects by flow name, annotator ids."""

    projects: dict[str, int]
    annotators: list[int] = field(default_factory=list)


class LabelStudioServer(ProcessService):
    """``label-studio start`` on a loopback port; see the module docstring."""

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        port: int | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="stream-router-ls-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self.credentials = Credentials.of(self.state_dir)
        self.process = ManagedProcess(
            "label-studio",
            ["label-studio"],  # the installed executable replaces it in prepare()
            ready_pattern=r"Starting development server at",
            env={**SERVER_ENV, "SECRET_KEY": self._secret_key()},
            log_path=self.state_dir / "label-studio.log",
            stop_timeout_s=10.0,
        )
        self.started_in_s: float | None = None
        self._launched = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.credentials.token

    def _secret_key(self) -> str:
        path = self.state_dir / "secret-key"
        if not path.is_file():
            path.write_text(urlsafe_token(48), encoding="utf-8")
            path.chmod(0o600)
        return path.read_text(encoding="utf-8")

    async def prepare(self) -> None:
        """Install Label Studio (first use on this machine) and set the command line."""
        executable = await asyncio.to_thread(install)
        credentials = self.credentials
        self.process.argv = [
            str(executable), "start", "--no-browser",
            "--internal-host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.state_dir / "data"),
            "--username", credentials.email, "--password", credentials.password,
            "--user-token", credentials.token, "--enable-legacy-api-token",
            "--log-level", "WARNING",
        ]  # fmt: skip

    def launch(self) -> None:
        self._launched = time.monotonic()
        super().launch()

    async def ready(self) -> None:
        """The server printed its address and answers ``/health``."""
        await self.process.wait_ready_async(self.ready_timeout_s)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(self.url + "/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or not self.process.running():
                    raise LabelStudioUnavailable(
                        f"Label Studio did not answer /health; last output:\n"
                        f"{self.process.output_tail()}"
                    )
                await asyncio.sleep(0.2)  # a server we do not control: nothing to await
        self.started_in_s = time.monotonic() - self._launched
        logger.info("Label Studio ready on %s in %.1f s", self.url, self.started_in_s)

    async def start(self) -> None:
        await self.prepare()
        self.launch()
        await self.ready()

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(self.url, self.token, timeout_s=30.0)

    async def provision(
        self, flows: list[FlowDefinition], *, annotators: int | None = None
    ) -> LabelStudioResources:
        """One project per flow and ``annotators`` users (default: the largest task count)."""
        wanted = annotators if annotators is not None else max(f.task_count for f in flows)
        async with self.client() as ls:
            existing = {p["title"]: p for p in await ls.projects()}
            projects: dict[str, int] = {}
            for flow in flows:
                config = labeling_config(flow.reviewers.labels)
                found = existing.get(flow.name)
                if found is not None:
                    projects[flow.name] = int(found["id"])
                    # made by an older sandbox (Label Studio keeps it without the last newline)
                    if str(found.get("label_config") or "").strip() != config.strip():
                        await self._relabel(ls, int(found["id"]), config)
                    continue
                made = await ls.create_project(
                    flow.name,
                    config,
                    maximum_annotations=flow.task_count,
                    description=f"stream_router sandbox flow {flow.name}",
                )
                projects[flow.name] = int(made["id"])
            users = {u["email"]: int(u["id"]) for u in await ls.users()}
            ids = []
            for index in range(1, wanted + 1):
                email = ANNOTATOR_EMAIL.format(index=index)
                if email not in users:
                    made = await ls.create_user(email, f"annotator-{index}")
                    users[email] = int(made["id"])
                ids.append(users[email])
        return LabelStudioResources(projects, ids)

    @staticmethod
    async def _relabel(ls: LabelStudioClient, project_id: int, config: str) -> None:
        """Give a project of an older sandbox today's labeling configuration (Label Studio
        refuses one its annotations do not fit, such as a label they chose dropped: then the
        project keeps its own, and its tasks may show less)."""
        try:
            await ls.request("PATCH", f"/api/projects/{project_id}", body={"label_config": config})
        except ReviewRejected as exc:
            logger.warning("project %s keeps its labeling configuration: %s", project_id, exc)
        else:
            logger.info("project %s has today's labeling configuration", project_id)


def main() -> None:  # pragma: no cover - a command for scripts/test
    """``python -m stream_router.sandbox.labelstudio.server install``: install it now."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m stream_router.sandbox.labelstudio.server install")
    started = time.monotonic()
    path = install(quiet=os.environ.get("VERBOSE") is None)
    print(f"Label Studio {label_studio_version()}: {path} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    main()
