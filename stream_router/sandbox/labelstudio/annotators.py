"""Simulated annotators: the A2I emulator's reviewers, working in Label Studio.

Each sandbox flow definition is a Label Studio project (``server.py``); the annotators watch
every project for tasks still short of annotations and give each task the fate
``sandbox/a2i/reviewers.plan_loop`` gives a human loop of the same name and input: who picks it
up, when, and what they answer (ground truth, or a wrong label at the error rate), or nobody
(the abandon rate, a pickup later than the lifetime). Worker ``i`` of a plan is annotator user
``i`` and submits, at the planned time, an annotation through Label Studio's API
(``POST /api/tasks/<id>/annotations/`` with ``completed_by`` and ``lead_time``), so Label
Studio fires its webhooks as it would for a person.

New tasks are found by their ids: each poll lists a project's tasks above the greatest id it
has seen (still short of annotations), so a poll costs the same however many tasks the project
holds (Label Studio's ids only grow, and its SQLite stores one import at a time, so a task
never appears below one seen). Annotations due are submitted up to ``_SUBMITTING`` at a time.

Plans are deterministic, and a worker who already annotated a task (Label Studio lists its
annotators) is not asked again, so a restarted annotator process (it lists every open task
once) carries on without a second annotation. Closed tasks (the backend's deadline,
``labelstudio/backend.py``) are left alone.

Run as a process of the sandbox::

    STREAM_ROUTER_SANDBOX_LS_TOKEN=T python -m stream_router.sandbox.labelstudio.annotators \
        --url URL --settings F --projects '{"flow": 1}' --users 2,3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from stream_router.errors import UpstreamError
from stream_router.labelstudio.client import LabelStudioClient, LabelStudioNotFound
from stream_router.labelstudio.stored import MalformedTask, StoredTask, read_task
from stream_router.labelstudio.tasks import choice_result
from stream_router.sandbox.a2i.reviewers import LoopPlan, WorkerAnswer, plan_loop
from stream_router.sandbox.a2i.seeds import settings_page
from stream_router.sandbox.process import ManagedProcess, ProcessService
from stream_router.sandbox.settings import FlowDefinition, SandboxSettings

logger = logging.getLogger(__name__)

READY_LINE = "annotators ready"
_SUBMITTING = 8  #: annotations submitted at once at most
TOKEN_ENV = "STREAM_ROUTER_SANDBOX_LS_TOKEN"  # noqa: S105 - a variable name


class AnnotatorsProcess(ProcessService):
    """The annotators as a process of the sandbox."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        url: str,
        token: str,
        projects: dict[str, int],
        users: list[int],
        state_dir: Path,
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        settings_file = state_dir / "annotators-settings.json"
        settings_file.write_text(settings.model_dump_json(indent=2), encoding="utf-8")
        self.process = ManagedProcess(
            "annotators",
            [
                sys.executable,
                "-m",
                "stream_router.sandbox.labelstudio.annotators",
                "--url",
                url,
                "--settings",
                str(settings_file),
                "--projects",
                orjson.dumps(projects).decode(),
                "--users",
                ",".join(str(u) for u in users),
            ],
            ready_pattern=READY_LINE,
            env={TOKEN_ENV: token},
            log_path=state_dir / "annotators.log",
        )


@dataclass
class _Task:
    flow: FlowDefinition
    task_id: int
    plan: LoopPlan
    done: set[int]  #: worker indexes whose annotation is in


class Annotators:
    """Annotate the projects' tasks as their plans say; see the module docstring."""

    def __init__(
        self,
        client: LabelStudioClient,
        flows: list[FlowDefinition],
        projects: dict[str, int],
        users: list[int],
        *,
        poll_s: float = 0.25,
    ) -> None:
        missing = sorted({f.name for f in flows} - set(projects))
        if missing:
            raise ValueError(f"no Label Studio project for flows {missing}")
        wanted = max((f.task_count for f in flows), default=1)
        if len(users) < wanted:
            raise ValueError(f"{len(users)} annotator users for flows of {wanted} workers")
        self.client = client
        self.flows = flows
        self.projects = projects
        self.users = users
        self.poll_s = poll_s
        self._tasks: dict[int, _Task] = {}
        self._seen: dict[str, int] = {}  # per flow: the greatest task id listed
        self._slots = asyncio.Semaphore(_SUBMITTING)
        self.submitted = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step(time.time())
            except UpstreamError as exc:  # Label Studio restarting, say: try again
                logger.warning("annotators: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)

    async def step(self, now: float) -> None:
        """Plan new tasks, then submit every annotation that is due (an error from one is
        raised once all have been tried)."""
        for flow in self.flows:
            await self._discover(flow)
        due = [
            (tracked, index, answer)
            for tracked in self._tasks.values()
            for index, answer in enumerate(tracked.plan.answers)
            if index not in tracked.done and answer.submitted_at <= now
        ]
        results = await asyncio.gather(
            *(self._submit(tracked, index, answer) for tracked, index, answer in due),
            return_exceptions=True,
        )
        failure: BaseException | None = None
        for (tracked, _, _), result in zip(due, results, strict=True):
            if isinstance(result, LabelStudioNotFound):  # deleted meanwhile (a second task)
                tracked.done.update(range(len(tracked.plan.answers)))
            elif isinstance(result, BaseException) and failure is None:
                failure = result
        for tracked in list(self._tasks.values()):
            if len(tracked.done) == len(tracked.plan.answers):
                del self._tasks[tracked.task_id]
        if failure is not None:
            raise failure

    async def _submit(self, tracked: _Task, index: int, answer: WorkerAnswer) -> None:
        async with self._slots:
            await self.client.create_annotation(
                tracked.task_id,
                choice_result(answer.label(tracked.flow.reviewers.answer_name) or ""),
                completed_by=self.users[index],
                lead_time=round(answer.submitted_at - answer.accepted_at, 3),
            )
        tracked.done.add(index)
        self.submitted += 1

    async def _discover(self, flow: FlowDefinition) -> None:
        """Plan the tasks of ``flow``'s project made since the last poll."""
        seen = self._seen.get(flow.name, 0)
        query = orjson.dumps(
            {"filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:id", "operator": "greater", "type": "Number",
                 "value": seen},
                {"filter": "filter:tasks:total_annotations", "operator": "less",
                 "type": "Number", "value": flow.task_count},
            ]}}
        ).decode()  # fmt: skip
        async for raw in self.client.tasks(self.projects[flow.name], query=query):
            listed = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(listed, int):
                self._seen[flow.name] = max(self._seen.get(flow.name, 0), listed)
            try:
                found = read_task(raw, None)
            except MalformedTask:
                continue
            if found.closed_s is not None:
                continue
            created = found.created_s or time.time()
            plan = plan_loop(
                flow, found.name, found.content, created, settings_page(flow, found.content)
            )
            done = {i for i, user in enumerate(self.users) if str(user) in _annotators(found)}
            if len(done) < len(plan.answers):  # none, when no worker picks the task up
                self._tasks[found.task_id] = _Task(flow, found.task_id, plan, done)


def _annotators(found: StoredTask) -> set[str]:
    return {annotation.annotator for annotation in found.annotations}


async def _main(args: argparse.Namespace) -> None:
    text = await asyncio.to_thread(Path(args.settings).read_text, "utf-8")
    settings = SandboxSettings.model_validate_json(text)
    projects = orjson.loads(args.projects)
    users = [int(u) for u in args.users.split(",")]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    token = os.environ[TOKEN_ENV]
    async with LabelStudioClient(args.url, token, timeout_s=30) as client:
        annotators = Annotators(client, list(settings.flow_definitions), projects, users)
        print(f"{READY_LINE} for projects {projects}", flush=True)
        await annotators.run(stop)
    print(f"annotators stopped after {annotators.submitted} annotations", flush=True)


def main() -> None:  # pragma: no cover - the sandbox runs it as a process
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--settings", required=True, help="sandbox settings as JSON")
    parser.add_argument("--projects", required=True, help='JSON {"flow": project id}')
    parser.add_argument("--users", required=True, help="annotator user ids, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":  # pragma: no cover
    main()
