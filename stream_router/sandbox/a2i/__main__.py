"""Run the A2I runtime emulator as a process: ``python -m stream_router.sandbox.a2i``.

The sandbox launcher (:class:`stream_router.sandbox.a2i.launcher.A2IEmulator`) starts it; it is
runnable by hand too. It prints ``A2I emulator ready on http://127.0.0.1:PORT`` once it listens
and stops cleanly on SIGTERM or SIGINT: the server closes, the scheduler is cancelled, and the
process exits even while an S3 or EventBridge call is still under way in a worker thread (the
endpoint does not answer: a frozen moto). Waiting for that call would hold the stop for as long as
the endpoint stays silent; what it would have done is left to the next start, as after a kill (the
loop store keeps the loop, and the scheduler writes its effects again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from stream_router.sandbox.a2i.server import Emulator
from stream_router.sandbox.settings import SandboxSettings


async def serve(settings: SandboxSettings, state_dir: Path, aws_endpoint: str, port: int) -> int:
    """Serve until SIGTERM or SIGINT; returns the AWS calls still under way then."""
    emulator = Emulator(settings, state_dir, aws_endpoint)
    runner = web.AppRunner(emulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheduler = asyncio.create_task(emulator.run_scheduler(), name="a2i-scheduler")
    print(f"A2I emulator ready on http://127.0.0.1:{bound}", flush=True)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({scheduler, stopped}, return_when=asyncio.FIRST_COMPLETED)
    scheduler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await scheduler
    await runner.cleanup()
    return emulator.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_router.sandbox.a2i")
    parser.add_argument("--settings", type=Path, help="sandbox settings (YAML or JSON)")
    parser.add_argument("--state-dir", type=Path, required=True, help="where loops are kept")
    parser.add_argument("--aws-endpoint", required=True, help="moto server URL")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = SandboxSettings.from_yaml(args.settings)
    under_way = asyncio.run(serve(settings, args.state_dir, args.aws_endpoint, args.port))
    if under_way:
        # concurrent.futures joins its workers at exit, and a call to a silent endpoint blocks.
        logging.getLogger(__name__).warning(
            "stopping with %d AWS call(s) under way; the loops' effects are written again at "
            "the next start",
            under_way,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
