"""Start the A2I emulator as a child process and talk to its sandbox-only admin routes.

Usage::

    async with A2IEmulator(settings, aws_endpoint_url=moto.endpoint_url) as a2i:
        a2i.endpoint_url                        # for boto3/aioboto3 'sagemaker-a2i-runtime'
                                                # and 'sagemaker' (DescribeFlowDefinition)
        await a2i.set_faults(quota_rps=5)       # while it runs
        await a2i.restart()                     # loops survive: state is in state_dir
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from stream_router.sandbox.process import ManagedProcess, ProcessService, free_port
from stream_router.sandbox.settings import Faults, SandboxSettings


class SandboxAdminError(RuntimeError):
    """The emulator refused an admin request (for example fault settings out of range)."""


class A2IEmulator(ProcessService):
    """The emulator process on a loopback port, with its state in ``state_dir``."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        aws_endpoint_url: str,
        state_dir: Path | None = None,
        port: int | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="stream-router-a2i-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout_s = ready_timeout_s
        settings_file = self.state_dir / "a2i-settings.json"
        settings_file.write_text(settings.model_dump_json(indent=2), encoding="utf-8")
        self.process = ManagedProcess(
            "a2i-emulator",
            [
                sys.executable,
                "-m",
                "stream_router.sandbox.a2i",
                "--settings",
                str(settings_file),
                "--state-dir",
                str(self.state_dir),
                "--aws-endpoint",
                aws_endpoint_url,
                "--port",
                str(self.port),
            ],
            ready_pattern=r"A2I emulator ready on",
            log_path=self.state_dir / "a2i-emulator.log",
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flow_arn(self, name: str) -> str:
        return self.settings.flow_arn(name)

    async def set_faults(self, **changes: Any) -> Faults:
        """Change fault injection while the emulator runs; returns the faults now in force."""
        data = await asyncio.to_thread(self._admin, "PUT", "/_sandbox/faults", changes)
        return Faults.model_validate(data)

    async def stats(self) -> dict[str, Any]:
        """Request counts by operation and outcome, loops by status."""
        return await asyncio.to_thread(self._admin, "GET", "/_sandbox/stats", None)

    def _admin(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - fixed http://127.0.0.1 URL
            self.endpoint_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode(errors="replace")
            raise SandboxAdminError(f"{method} {path} answered {exc.code}: {detail}") from exc
