"""Child processes of the sandbox: started, watched until ready, and never left behind.

Every sandbox server (broker, moto, A2I emulator) runs as a child process. Three layers make
sure none outlives its parent, even when a test run is interrupted:

1. ``stop()`` sends SIGTERM to the child's process group, then SIGKILL after a grace period;
2. an ``atexit`` hook stops whatever is still running when the interpreter exits normally;
3. on Linux the child asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``),
   which covers a parent killed with SIGKILL.

Each child gets its own session so Ctrl-C in a terminal reaches only the parent, which then
stops the children in order.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_RUNNING: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ProcessStartError(RuntimeError):
    """A sandbox process exited or stayed silent before it reported ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One child process whose output is kept and scanned for a readiness line.

    ``start()`` must run on the thread that will outlive the child (the main thread or the
    event loop's thread): the kernel's parent-death signal fires when the *thread* that forked
    the child exits.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready_pattern: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        stop_timeout_s: float = 5.0,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        self._ready_re = re.compile(ready_pattern)
        self._ready = threading.Event()
        self._exited = threading.Event()
        self._ready_match: re.Match[str] | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def ready_match(self) -> re.Match[str] | None:
        """The match of the readiness pattern, for servers that print their address."""
        return self._ready_match

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._ready.clear()
        self._exited.clear()
        self._ready_match = None
        self._tail.clear()
        env = {**os.environ, **self.env} if self.env is not None else None
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl, no locks taken
        )
        _RUNNING.add(self)
        self._reader = threading.Thread(target=self._pump, name=f"{self.name}-output", daemon=True)
        self._reader.start()
        logger.debug("started %s (pid %s): %s", self.name, self._proc.pid, " ".join(self.argv))

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        log = self.log_path.open("a", encoding="utf-8") if self.log_path else None
        try:
            for line in proc.stdout:
                self._tail.append(line.rstrip("\n"))
                if log is not None:
                    log.write(line)
                    log.flush()
                if not self._ready.is_set():
                    match = self._ready_re.search(line)
                    if match:
                        self._ready_match = match
                        self._ready.set()
        finally:
            if log is not None:
                log.close()
            proc.stdout.close()
            proc.wait()
            self._exited.set()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the readiness line appears; raise if the process exits first."""
        deadline = time.monotonic() + timeout_s
        while not self._ready.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise ProcessStartError(
                    f"{self.name} did not report ready within {timeout_s:.0f} s; "
                    f"last output:\n{self.output_tail()}"
                )
            if self._exited.wait(min(remaining, 0.05)) and not self._ready.is_set():
                code = self._proc.returncode if self._proc else None
                raise ProcessStartError(
                    f"{self.name} exited with code {code} before it was ready; "
                    f"last output:\n{self.output_tail()}"
                )

    async def wait_ready_async(self, timeout_s: float) -> None:
        await asyncio.to_thread(self.wait_ready, timeout_s)

    def output_tail(self) -> str:
        return "\n".join(self._tail)

    def stop(self) -> int | None:
        """Terminate the process group; SIGKILL it if it outlives the grace period."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s ignored SIGTERM for %.1f s; killing it", self.name, self.stop_timeout_s
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        _RUNNING.discard(self)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would (used by restart tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.stop()

    async def stop_async(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    def resident_bytes(self) -> int:
        """Resident memory of the process (Linux ``/proc``), 0 when it is not running."""
        if not self.running() or self.pid is None:
            return 0
        return rss_bytes(self.pid)


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes, read from ``/proc/PID/status``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and all its descendants (``/proc/PID/task/*/children``)."""
    pids, seen = [pid], 0
    while seen < len(pids):
        with contextlib.suppress(OSError):  # a process or thread that ended meanwhile
            for task in list(Path(f"/proc/{pids[seen]}/task").iterdir()):
                with contextlib.suppress(OSError):
                    pids.extend(int(x) for x in (task / "children").read_text().split())
        seen += 1
    return sum(rss_bytes(p) for p in pids)


class Lifecycle:
    """``start()``/``stop()``, usable as ``async with``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ProcessService(Lifecycle):
    """A sandbox server run as one :class:`ManagedProcess` (set ``process`` in ``__init__``).

    ``launch()`` starts the process without waiting and ``ready()`` waits for it, so several
    services can start at once; ``start()`` does both.
    """

    process: ManagedProcess
    ready_timeout_s: float = 30.0

    def launch(self) -> None:
        self.process.start()

    async def ready(self) -> None:
        await self.process.wait_ready_async(self.ready_timeout_s)
        logger.info("%s ready", self.process.name)

    async def start(self) -> None:
        self.launch()
        await self.ready()

    async def stop(self) -> None:
        await self.process.stop_async()

    async def restart(self) -> None:
        """Stop and start again (same port, same storage or state)."""
        await self.stop()
        await self.start()


@atexit.register
def _stop_all() -> None:
    for proc in list(_RUNNING):
        proc.stop()
