"""The worker portal of the sandbox's private workteam: a person works A2I tasks in a browser.

It is where ``DescribeWorkteam``'s ``SubDomain`` points (the emulator's own address), on
loopback only. Routes::

    GET  /                                    open tasks, per flow definition
    POST /portal/tasks/{loop}/accept          take a task (then redirected to it)
    GET  /portal/tasks/{loop}                 the task: the flow's template rendered with the
                                              loop's input, as A2I shows it to a worker
    POST /portal/tasks/{loop}/submit          {"answerContent": {...}} from the page's crowd-form
    GET  /portal/static/crowd-html-elements.js    the crowd elements, implemented here
    GET  /portal/task-uis/{name}/template.liquid   a task UI's template (DescribeHumanTaskUi Url)

A task is offered only while no simulated worker holds the slot a person would take
(:func:`reviewers.claimable`); taking it replaces that simulated worker. The submission
completes the loop through the emulator's scheduler like any simulated answer: output.json with
``humanAnswers`` (the person's ``workerId``, acceptance and submission times), then the status
event, so the router publishes it as any other review.

What arrives here is untrusted: an answer must be a JSON object (standard JSON, read with orjson:
no NaN, bounded nesting) of at most :data:`MAX_ANSWER_BYTES`, nested at most :data:`MAX_DEPTH`
objects and arrays deep, or it is refused with 4xx and a message, and the task stays open.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from stream_router.sandbox.a2i.control import ControlPlaneApi, Flow
from stream_router.sandbox.a2i.reviewers import claim, claimable, portal_worker, submit
from stream_router.sandbox.a2i.store import Loop, LoopStore
from stream_router.sandbox.a2i.template import TemplateError, render

STATIC = Path(__file__).with_name("static")
SCRIPT_PATH = "/portal/static/crowd-html-elements.js"
#: The script tag of AWS's hosted crowd elements, which the portal replaces with its own.
AWS_SCRIPT = re.compile(
    r"<script[^>]*src\s*=\s*[\"']https://assets\.crowd\.aws/crowd-html-elements\.js[\"'][^>]*>"
    r"\s*</script>",
    re.IGNORECASE,
)
MAX_ANSWER_BYTES = 1_048_576
MAX_DEPTH = 32
MAX_LISTED = 100  #: open tasks listed per flow definition


def _depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests no more than ``limit`` objects and arrays deep."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The request body, or its first ``limit`` bytes when it is longer."""
    raw = bytearray()
    while len(raw) < limit:
        chunk = await request.content.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


def page(title: str, body: str, head: str = "") -> str:
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{head}"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:60rem}"
        ".task{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:.5rem 0}"
        "header.portal{border-bottom:1px solid #ddd;margin-bottom:1rem}</style>"
        f"</head><body>{body}</body></html>"
    )


class WorkerPortal:
    """The portal's HTTP handlers over the emulator's loops and flow definitions."""

    def __init__(
        self,
        store: LoopStore,
        control: ControlPlaneApi,
        *,
        clock: Callable[[], float],
        schedule: Callable[[float, str], None],
        presign: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        self.control = control
        self.clock = clock
        self.schedule = schedule
        self.presign = presign
        self.worker = portal_worker()
        self.submitted = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.home)
        app.router.add_post("/portal/tasks/{name}/accept", self.accept)
        app.router.add_get("/portal/tasks/{name}", self.task)
        app.router.add_post("/portal/tasks/{name}/submit", self.submit)
        app.router.add_get(SCRIPT_PATH, self.script)
        app.router.add_get("/portal/task-uis/{name}/template.liquid", self.task_ui_template)

    # -- pages -------------------------------------------------------------------------------

    async def home(self, _: web.Request) -> web.Response:
        now = self.clock()
        team = html.escape(self.control.settings.workteam.name)
        sections = []
        open_loops: dict[str, list[Loop]] = {}
        for loop in self.store.in_progress():
            open_loops.setdefault(loop.flow_definition_arn, []).append(loop)
        for flow in self.control.flows():
            loops = [
                loop
                for loop in open_loops.get(flow.arn, [])
                if claimable(loop.plan, now, flow.definition.task_count)
            ][:MAX_LISTED]
            items = "".join(self._task_item(loop) for loop in loops)
            config = flow.human_loop_config
            title = html.escape(str(config.get("TaskTitle", flow.definition.name)))
            sections.append(
                f"<section class='flow' data-flow='{html.escape(flow.definition.name)}'>"
                f"<h2>{title}</h2><p>{html.escape(str(config.get('TaskDescription', '')))}</p>"
                f"<p class='count'>{len(loops)} open task(s)</p>{items}</section>"
            )
        body = (
            f"<header class='portal'><h1>Worker portal: {team}</h1><p>Tasks no simulated "
            "reviewer has taken yet. Taking one puts you in its place.</p></header>"
            + ("".join(sections) or "<p>No flow definitions.</p>")
        )
        return web.Response(text=page(f"Worker portal: {team}", body), content_type="text/html")

    @staticmethod
    def _task_item(loop: Loop) -> str:
        name = html.escape(loop.name)
        return (
            f"<div class='task' data-loop='{name}'><code>{name}</code> "
            f"<form method='post' action='/portal/tasks/{name}/accept' style='display:inline'>"
            f"<button type='submit' aria-label='Start working on {name}'>Start working</button>"
            "</form></div>"
        )

    async def accept(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        loop = self.store.get(name)
        flow = self.control.flow(loop.flow_definition_arn) if loop else None
        now = self.clock()
        if loop is None or flow is None or loop.status != "InProgress":
            return self._refusal(404, f"There is no open task {name}.")
        if not claimable(loop.plan, now, flow.definition.task_count):
            return self._refusal(409, f"The task {name} is no longer available.")
        plan = claim(loop.plan, now, flow.definition.task_time_limit_s, self.worker)
        self.store.put(loop.evolve(plan=plan, due_at=plan.ends_at))
        self.schedule(plan.ends_at, name)
        raise web.HTTPSeeOther(f"/portal/tasks/{name}")

    async def task(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        loop, flow = self._held(name)
        if loop is None or flow is None:
            return self._refusal(404, f"You hold no open task {name}.")
        try:
            rendered = render(flow.template, json.loads(loop.input_content), presign=self.presign)
        except TemplateError as exc:
            return self._refusal(500, f"The flow's worker template cannot be shown: {exc}")
        rendered = AWS_SCRIPT.sub("", rendered)
        config = flow.human_loop_config
        head = (
            f"<meta name='crowd-sandbox-submit' content='/portal/tasks/{html.escape(name)}/submit'>"
            f"<script src='{SCRIPT_PATH}'></script>"
        )
        header = (
            f"<header class='portal'><a href='/'>All tasks</a> · "
            f"<strong>{html.escape(str(config.get('TaskTitle', '')))}</strong> · "
            f"<code>{html.escape(name)}</code></header>"
        )
        title = str(config.get("TaskTitle", name))
        return web.Response(text=page(title, header + rendered, head), content_type="text/html")

    async def submit(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        loop, _ = self._held(name)
        if loop is None:
            return web.json_response({"message": f"You hold no open task {name}."}, status=404)
        raw = await _read_at_most(request, MAX_ANSWER_BYTES + 1)
        if len(raw) > MAX_ANSWER_BYTES:
            return web.json_response(
                {"message": f"The answer is larger than {MAX_ANSWER_BYTES} bytes."}, status=413
            )
        try:
            body = orjson.loads(raw)
        except ValueError:
            return web.json_response({"message": "The answer is not JSON."}, status=400)
        content = body.get("answerContent") if isinstance(body, dict) else None
        if not isinstance(content, dict):
            return web.json_response(
                {"message": 'The answer must be {"answerContent": {...}}.'}, status=400
            )
        if not _depth(content, MAX_DEPTH):
            return web.json_response(
                {"message": f"The answer nests deeper than {MAX_DEPTH} levels."}, status=400
            )
        now = self.clock()
        plan = submit(loop.plan, content, now)
        self.store.put(loop.evolve(plan=plan, due_at=plan.ends_at))
        self.schedule(plan.ends_at, name)
        self.submitted += 1
        return web.json_response({"next": "/"})

    async def script(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(
            STATIC / "crowd-html-elements.js",
            headers={"Content-Type": "text/javascript; charset=utf-8"},
        )

    async def task_ui_template(self, request: web.Request) -> web.Response:
        ui = self.control.resources.task_ui(request.match_info["name"])
        if ui is None:
            return web.Response(status=404, text="no such human task UI")
        return web.Response(text=ui.template, content_type="text/plain")

    # -- helpers -----------------------------------------------------------------------------

    def _held(self, name: str) -> tuple[Loop | None, Flow | None]:
        """The loop ``name`` and its flow when the portal's worker holds an open slot of it."""
        loop = self.store.get(name)
        if loop is None or loop.status not in ("InProgress", "Stopping"):
            return None, None
        if not any(a.pending and a.worker_id == self.worker[0] for a in loop.plan.answers):
            return None, None
        return loop, self.control.flow(loop.flow_definition_arn)

    @staticmethod
    def _refusal(status: int, message: str) -> web.Response:
        body = f"<p class='refusal'>{html.escape(message)}</p><p><a href='/'>All tasks</a></p>"
        return web.Response(
            text=page("Worker portal", body), status=status, content_type="text/html"
        )
