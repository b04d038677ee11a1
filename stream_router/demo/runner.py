"""``stream-router demo``: the whole system on the local sandbox, watched live, then judged.

1. start the sandbox (broker, moto, A2I emulator with simulated reviewers) in a work directory;
2. write the router's configuration for it, create the topics, start the router
   (``run --role all``) as a child process and wait until ingest owns its partitions;
3. produce synthetic predictions at the configured rate while reading the output, dead-letter and
   review-requests topics and scraping the router's /metrics: progress about once a second;
4. after the last event, wait (``drain_timeout_s``) until every event has an outcome;
5. print the summary (with the audit sample's bound on the error of what was auto-accepted)
   and where to look; stop the router and the sandbox (or, with
   ``keep_running``, leave them up until Ctrl-C).

Exit status: 0 when every produced event reached exactly one outcome, 1 otherwise (the message
says which events and where to look), 2 for a configuration problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from stream_router.demo.console import Console, Progress
from stream_router.demo.producer import PredictionGenerator, PredictionProducer
from stream_router.demo.router import router_config, router_process, write_router_config
from stream_router.demo.settings import DemoSettings
from stream_router.demo.summary import Audit, Summary, audit_of, render, summarize
from stream_router.demo.tracker import MetricsSnapshot, OutcomeTracker, scrape
from stream_router.sandbox.broker import BrokerKind
from stream_router.sandbox.process import ManagedProcess, ProcessStartError, free_port
from stream_router.sandbox.stack import Backend, Sandbox, SandboxInfo
from stream_router.settings import Settings
from stream_router.topics import create_topics


class DemoFailed(RuntimeError):
    """The demo could not run to its end (the router died, the producer failed)."""


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo, beyond its settings."""

    state_dir: Path | None = None  #: keep the work directory (logs, configs) here
    keep_running: bool = False
    summary_json: Path | None = None
    live: bool | None = None  #: None: redraw only when the output is a terminal
    broker: BrokerKind | None = None  #: None: Apache Kafka where Java exists, else Tansu
    backend: Backend = "a2i"  #: who reviews: the A2I emulator, or a real Label Studio


@dataclass
class _Tracker(OutcomeTracker):
    """The outcome tracker that also keeps what the audit bound needs of each reviewed record
    (route, review probability, corrected), by event id."""

    audits: dict[str, Audit] = field(default_factory=dict)

    def _file_result(self, data: dict[str, Any], written_s: float) -> None:
        super()._file_result(data, written_s)
        audit = audit_of(data)
        if audit is not None:
            self.audits[str(data.get("event_id"))] = audit


async def run_demo(settings: DemoSettings, options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo (see the module docstring); returns the exit status (130: interrupted).

    SIGINT and SIGTERM cancel the run; the router and the sandbox are stopped on the way out.
    """
    console = Console(out, live=options.live)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await _demo(settings, options, console)
    except asyncio.CancelledError:
        console.say("interrupted: the router and the sandbox were stopped")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _demo(settings: DemoSettings, options: DemoOptions, console: Console) -> int:
    started = time.monotonic()
    workdir = options.state_dir or Path(tempfile.mkdtemp(prefix="stream-router-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        reviewers = (
            "Label Studio with simulated annotators"
            if options.backend == "label-studio"
            else "A2I emulator with simulated reviewers"
        )
        console.say(
            f"starting the sandbox: Kafka-protocol broker, moto (S3, SQS, EventBridge), {reviewers}"
        )
        async with Sandbox(
            settings.sandbox,
            broker=options.broker,
            state_dir=workdir / "sandbox",
            backend=options.backend,
        ) as sandbox:
            info = sandbox.info()
            broker = "Apache Kafka" if info.broker == "kafka" else "Tansu"
            console.say(
                f"  ready in {sandbox.startup_s:.1f} s; {broker} at {info.bootstrap_servers}"
            )
            port = free_port()
            router_settings = write_router_config(
                router_config(
                    settings,
                    info,
                    metrics_port=port,
                    data_dir=workdir / "review-data",
                    backend=options.backend,
                    webhook_port=free_port(),
                ),
                workdir / "router.yaml",
            )
            await create_topics(router_settings)
            process = router_process(workdir / "router.yaml", info.env(), workdir / "router.log")
            console.say(f"starting the router (ingest + review); its log: {workdir / 'router.log'}")
            process.start()
            try:
                try:
                    await process.wait_ready_async(settings.router_ready_timeout_s)
                except ProcessStartError as exc:
                    raise DemoFailed(f"the router did not start: {exc}") from exc
                console.say(
                    f"  consuming after {time.monotonic() - started:.1f} s; producing "
                    f"{settings.producer.rate_per_s:g} predictions/s for "
                    f"{settings.producer.duration_s:g} s"
                )
                summary = await _run(
                    settings,
                    router_settings,
                    info=info,
                    port=port,
                    process=process,
                    console=console,
                )
                summary = replace(
                    summary,
                    wall_s=time.monotonic() - started,
                    where=_where(router_settings, info, port, workdir),
                )
                ok = summary.ok
                _report(summary, console, options)
                if options.keep_running:
                    await _keep_running(console, info)
                    ok = summary.ok
            finally:
                code = await process.stop_async()
                if code not in (0, None):
                    ok = False
                    console.say(f"the router exited with status {code}; see {workdir}/router.log")
    except DemoFailed as exc:
        console.say(f"FAILED: {exc}")
    finally:
        if options.state_dir is None:
            if ok:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                console.say(f"kept the work directory (router log, configs): {workdir}")
    return 0 if ok else 1


async def _run(
    settings: DemoSettings,
    router_settings: Settings,
    *,
    info: SandboxInfo,
    port: int,
    process: ManagedProcess,
    console: Console,
) -> Summary:
    ingest = router_settings.ingest
    tracker = _Tracker(
        info.bootstrap_servers,
        ingest.output_topic,
        ingest.dead_letter_topic,
        ingest.review_requests_topic,
        settings.producer.topic_partitions,
    )
    generator = PredictionGenerator(settings.producer)
    producer = PredictionProducer(info.bootstrap_servers, ingest.input_topics[0], generator)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    await tracker.start()
    producing = asyncio.create_task(producer.run())
    begun = time.monotonic()
    drain_deadline: float | None = None
    snapshot = MetricsSnapshot()
    try:
        last_draw = 0.0
        while True:
            await tracker.poll(0.2)
            now = time.monotonic()
            if not process.running():
                raise DemoFailed(
                    "the router exited during the run; last lines of its log:\n"
                    + process.output_tail()
                )
            if producing.done():
                if producing.exception() is not None:
                    raise DemoFailed(f"producing failed: {producing.exception()!r}")
                if drain_deadline is None:
                    drain_deadline = now + settings.drain_timeout_s
            done = drain_deadline is not None and tracker.finished(set(producer.sent_s))
            timed_out = drain_deadline is not None and now > drain_deadline
            if now - last_draw >= 1.0 or done or timed_out:
                last_draw = now
                snapshot = await scrape(metrics_url)
                progress = Progress(
                    elapsed_s=now - begun,
                    phase="producing" if drain_deadline is None else "draining",
                    produced=producer.produced,
                    total=generator.total,
                    counts=tracker.counts(),
                    metrics=snapshot,
                )
                console.update(progress, force=done or timed_out)
            if done or timed_out:
                break
        await tracker.poll(0.5)  # a late duplicate would show here
    finally:
        if not producing.done():
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producing
        await tracker.stop()
    console.done()
    if timed_out and not done:
        console.say(
            f"drain timeout: not every event had an outcome {settings.drain_timeout_s:g} s "
            "after the last one was produced"
        )
    return summarize(
        producer.sent_s,
        tracker.outcomes,
        tracker.reviewed,
        tracker.dead_letter_reasons,
        tracker.audits,
    )


def _where(settings: Settings, info: SandboxInfo, port: int, workdir: Path) -> dict[str, Any]:
    ingest = settings.ingest
    tail = (
        f".venv/bin/stream-router tail --bootstrap-servers {info.bootstrap_servers} "
        f"--decision reviewed {shlex.quote(ingest.output_topic)}"
    )
    return {
        "metrics_url": f"http://127.0.0.1:{port}/metrics",
        "readiness_url": f"http://127.0.0.1:{port}/readyz",
        "bootstrap_servers": info.bootstrap_servers,
        "topics": {
            "predictions": ingest.input_topics[0],
            "results": ingest.output_topic,
            "review_requests": ingest.review_requests_topic,
            "dead_letter": ingest.dead_letter_topic,
            "loop_events": settings.review.loop_events_topic,
        },
        "consume_reviewed": tail,
        "router_log": str(workdir / "router.log"),
        "router_config": str(workdir / "router.yaml"),
    }


def _report(summary: Summary, console: Console, options: DemoOptions) -> None:
    where = summary.where
    topics = where["topics"]
    console.say("")
    console.say(render(summary))
    console.say("")
    console.say("where to look:")
    console.say(f"  metrics            {where['metrics_url']}")
    console.say(f"  readiness          {where['readiness_url']} (and /healthz)")
    console.say(
        f"  predictions        {topics['predictions']} (Kafka at {where['bootstrap_servers']})"
    )
    console.say(f"  results            {topics['results']} (accepted, reviewed, unreviewed)")
    console.say(f"  review requests    {topics['review_requests']}")
    console.say(f"  dead letters       {topics['dead_letter']}")
    console.say(f"  reviewed records   {where['consume_reviewed']}")
    if options.state_dir is not None or options.keep_running:
        console.say(f"  router log         {where['router_log']}")
    if not options.keep_running:
        keep = "" if options.state_dir is not None else ", --state-dir DIR to keep the router log"
        console.say(
            "  (the sandbox and the router stop when the demo exits: run with --keep-running "
            f"to keep them up and use the commands above{keep})"
        )
    if options.summary_json is not None:
        options.summary_json.write_text(json.dumps(summary.to_json(), indent=2), encoding="utf-8")


async def _keep_running(console: Console, info: SandboxInfo) -> None:
    """Wait until SIGINT/SIGTERM (which cancel the run; here that is the normal end)."""
    console.say("\nthe sandbox and the router keep running; in another shell:")
    for key, value in info.env().items():
        console.say(f"  export {key}={shlex.quote(value)}")
    console.say("Ctrl-C stops everything")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
