"""Label Studio's webhooks: a completion signal of the Label Studio backend.

Label Studio posts ``ANNOTATION_CREATED`` and ``ANNOTATION_UPDATED`` to every webhook of the
task's project, once, with a timeout of its own (``WEBHOOK_TIMEOUT``, 1 s by default) and no
retry. :class:`WebhookReceiver` serves ``POST /label-studio/webhook`` on the configured address,
answers at once, and queues the review's name (from the task's data); a worker then asks the
backend about that review (``check(name)``, the reconciler's describe-and-report), which emits a
loop event when the review has ended. A post is therefore only a hint to look now: a lost post
(this process down, a full queue, a timeout) costs latency, never a review, because the
reconciler (``review/reconciler.py``) finds every task that reached its annotations anyway.

A post for a review that is not finished yet (the first of three annotations) finds it
InProgress and emits nothing. With ``webhook.secret`` set, posts must carry it in the
``X-Stream-Router-Secret`` header (the backend registers the webhook with that header).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from stream_router.errors import ConfigError, UpstreamError
from stream_router.health import port_taken
from stream_router.labelstudio.client import LabelStudioClient
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.settings import LabelStudioWebhook

logger = logging.getLogger(__name__)

PATH = "/label-studio/webhook"
SECRET_HEADER = "X-Stream-Router-Secret"  # noqa: S105 - a header name
ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
QUEUE_LIMIT = 10_000  #: names waiting for a check; beyond, posts are dropped (and counted)


class WebhookReceiver:
    """The webhook endpoint and its check worker; see the module docstring.

    ``counted(result)`` is called once per post: ``queued``, ``ignored`` (another action, or a
    task that is not a review), ``duplicate`` (the name waits already), ``refused`` (bad
    secret or body) or ``dropped`` (queue full).
    """

    def __init__(
        self,
        settings: LabelStudioWebhook,
        check: Callable[[str], Awaitable[None]],
        *,
        counted: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.settings = settings
        self.check = check
        self.counted = counted
        self._secret = settings.secret.get_secret_value() if settings.secret else None
        self._queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        self._waiting: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """The URL Label Studio posts to (``public_url``, else the bound address)."""
        if self.settings.public_url:
            return self.settings.public_url
        port = self.port if self.port is not None else self.settings.port
        return f"http://{self.settings.host}:{port}{PATH}"

    async def start(self) -> None:
        """Bind the endpoint (``port`` is then the bound port)."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(PATH, self._post)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            host, port = self.settings.host, self.settings.port
            raise ConfigError(port_taken("review.label_studio.webhook", host, port, exc)) from exc
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        logger.info("Label Studio webhook endpoint on %s", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def register(self, client: LabelStudioClient, project_ids: list[int]) -> None:
        """Make :attr:`url` a webhook of each project, once (an existing one is kept)."""
        headers = {SECRET_HEADER: self._secret} if self._secret else {}
        for project_id in project_ids:
            hooks = await client.webhooks(project_id)
            if any(hook.get("url") == self.url for hook in hooks):
                continue
            await client.create_webhook(project_id, self.url, ACTIONS, headers)
            logger.info("registered webhook %s on project %s", self.url, project_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Check each queued name in turn until ``stop``; a failed check is left to the
        reconciler."""
        while not stop.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                return
            name = getter.result()
            self._waiting.discard(name)
            try:
                await self.check(name)
            except UpstreamError as exc:
                logger.warning("webhook check of %s failed (%s); the reconciler will", name, exc)

    async def _post(self, request: web.Request) -> web.Response:
        if self._secret is not None:
            given = request.headers.get(SECRET_HEADER, "")
            if not hmac.compare_digest(given.encode(), self._secret.encode()):
                self.counted("refused")
                return web.json_response({"error": "bad secret"}, status=401)
        try:
            payload: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            self.counted("refused")
            return web.json_response({"error": "the body is not JSON"}, status=400)
        name = _review_name(payload)
        if name is None:
            self.counted("ignored")
            return web.json_response({"queued": False})
        if name in self._waiting:
            self.counted("duplicate")
            return web.json_response({"queued": True})
        try:
            self._queue.put_nowait(name)
        except asyncio.QueueFull:
            self.counted("dropped")
            logger.warning("webhook queue full: %s left to the reconciler", name)
            return web.json_response({"queued": False}, status=503)
        self._waiting.add(name)
        self.counted("queued")
        return web.json_response({"queued": True})


def _review_name(payload: Any) -> str | None:
    """The review named by an annotation post, or None when it names none."""
    if not isinstance(payload, dict) or payload.get("action") not in ACTIONS:
        return None
    task = payload.get("task")
    data = task.get("data") if isinstance(task, dict) else None
    name = data.get(NAME_FIELD) if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None
