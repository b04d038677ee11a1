"""Label Studio's webhooks: a completion signal of the Label Studio backend.

Label Studio posts ``ANNOTATION_CREATED`` and ``ANNOTATION_UPDATED`` to every webhook of the
task's project, once, with a timeout of its own (``WEBHOOK_TIMEOUT``, 1 s by default) and no
retry. :class:`WebhookReceiver` serves ``POST /label-studio/webhook`` on the configured address,
answers at once, and queues the review's name (from the task's data); a worker then asks the
backend about that review (``check(name)``, the reconciler's describe-and-report), which emits a
loop event when the review has ended. A post is therefore only a hint to look now: a lost post
(this process down, a full queue, a refused or timed-out post) costs latency, never a review,
because the reconciler (``review/reconciler.py``) finds every task that reached its annotations
anyway.

A post for a review that is not finished yet (the first of three annotations) finds it
InProgress and emits nothing. With ``webhook.secret`` set, posts must carry it in the
``X-Stream-Router-Secret`` header (the webhook is registered with that header); settings refuse
an endpoint bound or published beyond loopback without one, unless ``allow_without_secret``.

Anyone who reaches the port can send anything, so every resource a request can hold is bounded
(``tests/integration/test_webhook_load_probe.py`` measures the whole under hostile load):

=====================  ==============================================================
connections            :data:`MAX_CONNECTIONS` open (a burst accepted at once may pass it
                       by :data:`BACKLOG`); one more is answered 503 and closed
headers                ``read_timeout_s`` from connecting (or from the last answer) to
                       send them (aiohttp's keep-alive timer, armed at connection);
                       :data:`MAX_HEADERS` lines of 8 KiB at most
body                   read only after the secret and content type check; at most
                       ``max_body_bytes`` (a larger Content-Length is refused unread, 413);
                       at most :data:`READERS` read at once; all within ``read_timeout_s``
                       of the headers (408), waiting for a reader included; what a refused
                       post still sends is read and dropped for ``read_timeout_s`` more,
                       then the connection is closed: 3 x ``read_timeout_s`` at most in all;
                       at stop, :data:`STOP_GRACE_S`
parsing                one body at a time (orjson, synchronous; JSON of empty objects takes
                       36 times its size while parsed); then only the name is kept
names                  a review name (``naming.is_valid_loop_name``: 1-63 of ``[a-z0-9-]``)
                       or the post is refused (422); at most :data:`QUEUE_LIMIT` wait, each
                       once (:class:`PendingNames`)
=====================  ==============================================================

Under the probe's hostile load (the secret known) the endpoint's process peaked about 41 MiB
above its idle size (parsing 1 MB of empty objects; 200 slow connections took up to 30 MiB).

Every refusal is a 4xx with a short JSON reason and a DEBUG line; a request aiohttp cannot parse
(a bad header, a header too long) is one INFO line naming the error, not aiohttp's ERROR with a
traceback. Two WARNINGs are said once, not per post: the first post over ``max_body_bytes``
with the right secret (Label Studio's, so ``max_body_bytes`` may be too small), and a full
queue (once each time it fills). ``counted(result)`` counts each post (the metric
``stream_router_review_webhook_posts_total``).

When the backend opens it registers :attr:`WebhookReceiver.url` in each project
(:meth:`WebhookReceiver.register`), with the secret and a marker header, and renews it every
:data:`RENEW_EVERY_S` (Label Studio's ``updated_at`` of the registration is its lease). A
registration of this router (its path, marker, secret) for another URL whose lease is over is
deleted: an earlier run on another port or host, which Label Studio would otherwise post every
annotation to in vain, each post holding the annotator's save for up to its timeout. Instances
alive beside this one renew theirs, so they keep them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from aiohttp.http import HttpProcessingError

from stream_router.config_errors import mask_url_passwords
from stream_router.errors import ConfigError, UpstreamError
from stream_router.health import port_taken
from stream_router.labelstudio.client import LabelStudioClient, LabelStudioNotFound
from stream_router.labelstudio.settings import LabelStudioWebhook
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.naming import is_valid_loop_name
from stream_router.review.backend import Signal

logger = logging.getLogger(__name__)

PATH = "/label-studio/webhook"
SECRET_HEADER = "X-Stream-Router-Secret"  # noqa: S105 - a header name
#: In every registration the router makes, so it can tell its own from other integrations'.
MARKER_HEADER = "X-Stream-Router-Webhook"
MARKER = "review-role"
ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
QUEUE_LIMIT = 10_000  #: names waiting for a check; beyond, posts are dropped (and counted)
MAX_CONNECTIONS = 64  #: open at once; Label Studio holds one per post for a second at most
BACKLOG = 32  #: connections the kernel queues before they are accepted (and counted)
READERS = 4  #: bodies read at once (each up to max_body_bytes)
RENEW_EVERY_S = 300.0  #: how often an instance renews its registrations (their lease)
LEASE_S = 3 * RENEW_EVERY_S  #: a registration of the router not renewed this long is deleted
STOP_GRACE_S = 1.0  #: at stop, how long a post being read may still take (then it is cut)
MAX_HEADERS = 32  #: header lines of a request (Label Studio sends 9)
MAX_HEADER_LINE = 8190  #: bytes of a request line or a header (aiohttp's default)

Result = Literal["queued", "duplicate", "dropped"]


class PendingNames:
    """Review names waiting for a check, oldest first, each once.

    A name posted again while it waits coalesces into the waiting one; at most ``limit`` wait,
    and a new name beyond is dropped (its review is left to the reconciler). Only valid review
    names get here (63 ASCII characters at most), so memory is bounded too: 10,000 names of 63
    characters take about 1.4 MB (``tests/unit/test_webhook_endpoint.py`` measures it).
    One consumer calls :meth:`take`.
    """

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self._names: dict[str, None] = {}  # insertion-ordered: a set that remembers age
        self._added = asyncio.Event()

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str) -> Result:
        if name in self._names:
            return "duplicate"
        if len(self._names) >= self.limit:
            return "dropped"
        self._names[name] = None
        self._added.set()
        return "queued"

    async def take(self) -> str:
        """The oldest name (waiting for one); it may be added again from then on."""
        while not self._names:
            self._added.clear()
            await self._added.wait()
        name = next(iter(self._names))
        del self._names[name]
        return name


class WebhookReceiver(Signal):
    """The webhook endpoint and its check worker, the Label Studio backend's completion signal;
    see the module docstring. It is not watched for stalls (posts come only when people label).

    ``counted(result)`` is called once per post: ``queued``, ``ignored`` (another action, or a
    task that is not a review), ``duplicate`` (the name waits already), ``refused`` (no or a
    bad secret, or a bad request: headers, content type, size, time, JSON, name) or ``dropped``
    (queue full, or too many connections).
    """

    kind = "webhook"

    def __init__(
        self,
        settings: LabelStudioWebhook,
        check: Callable[[str], Awaitable[None]],
        *,
        counted: Callable[[str], None] = lambda result: None,
        renew_every_s: float = RENEW_EVERY_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.settings = settings
        self.check = check
        self.counted = counted
        self.renew_every_s = renew_every_s
        self.lease_s = lease_s
        self._registered: tuple[LabelStudioClient, list[int]] | None = None
        self._secret = settings.secret.get_secret_value() if settings.secret else None
        self._pending = PendingNames()
        self._told_full = False  # the queue-full warning, once each time it fills
        self._told_large = False  # the too-large warning, once
        self._reading = asyncio.Semaphore(READERS)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """The URL Label Studio posts to (``public_url``, else the bound address)."""
        if self.settings.public_url:
            return self.settings.public_url
        port = self.port if self.port is not None else self.settings.port
        return f"http://{self.settings.host}:{port}{PATH}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the endpoint (``port`` is then the bound port)."""
        settings = self.settings
        app = web.Application(client_max_size=settings.max_body_bytes)
        app.router.add_post(PATH, self._post)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=STOP_GRACE_S,
            keepalive_timeout=settings.read_timeout_s,  # armed at connection: a header deadline
            lingering_time=settings.read_timeout_s,  # reading what a refused post still sends
            max_headers=MAX_HEADERS,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            logger=_RequestErrors(logger, self.counted),
        )
        await runner.setup()
        server = runner.server
        assert server is not None  # after setup()

        def connection() -> asyncio.BaseProtocol:
            if len(server.connections) >= MAX_CONNECTIONS:
                self.counted("dropped")
                return _Busy()
            return server()

        try:
            listener = await asyncio.get_running_loop().create_server(
                connection, settings.host, settings.port, backlog=BACKLOG
            )
        except OSError as exc:
            await runner.cleanup()
            host, port = settings.host, settings.port
            raise ConfigError(port_taken("review.backend.webhook", host, port, exc)) from exc
        self._runner, self._listener = runner, listener
        self.port = listener.sockets[0].getsockname()[1] if listener.sockets else settings.port
        logger.info("Label Studio webhook endpoint on %s", mask_url_passwords(self.url))

    async def stop(self) -> None:
        """Stop listening, then close the open connections (within :data:`STOP_GRACE_S`)."""
        listener, self._listener = self._listener, None
        runner, self._runner = self._runner, None
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()

    async def register(self, client: LabelStudioClient, project_ids: list[int]) -> None:
        """Make :attr:`url` this router's one webhook in each project, and keep it so: from
        then on :meth:`run` renews the registrations every :data:`RENEW_EVERY_S`.

        A registration of :attr:`url` is renewed in place (made as wanted: the actions, the
        secret, the marker; Label Studio's ``updated_at`` is then its lease), else one is made;
        other registrations of :attr:`url` (copies) are deleted. So are this router's
        registrations of other URLs whose lease is over (not renewed for ``lease_s``):
        earlier runs on other ports or hosts. This router's are those with its path, its marker
        or secret header, and its secret (none for none): another router (another secret), a
        live instance beside this one (renewing its own), and every other integration keep
        their webhooks.
        """
        self._registered = (client, list(project_ids))
        await self._renew_registrations(client, project_ids)

    async def _renew_registrations(self, client: LabelStudioClient, project_ids: list[int]) -> None:
        wanted = self._registration_headers()
        path = _path(self.url)
        for project_id in project_ids:
            hooks = [h for h in await client.webhooks(project_id) if h.get("project") == project_id]
            here = [h for h in hooks if h.get("url") == self.url and isinstance(h.get("id"), int)]
            kept: Mapping[str, Any] | None = None
            if here:
                with contextlib.suppress(LabelStudioNotFound):  # deleted meanwhile: make one
                    kept = await client.update_webhook(here[0]["id"], self.url, ACTIONS, wanted)
            if kept is None:
                kept = await client.create_webhook(project_id, self.url, ACTIONS, wanted)
                logger.info(
                    "registered webhook %s on project %s", mask_url_passwords(self.url), project_id
                )
            now = _timestamp(kept)  # Label Studio's clock: leases are compared on it alone
            for hook in hooks:
                if hook.get("id") == kept.get("id"):
                    continue
                if hook.get("url") == self.url or self._lapsed_registration(hook, path, now):
                    await _delete(client, project_id, hook)

    def _registration_headers(self) -> dict[str, str]:
        headers = {MARKER_HEADER: MARKER}
        if self._secret is not None:
            headers[SECRET_HEADER] = self._secret
        return headers

    def _lapsed_registration(self, hook: Mapping[str, Any], path: str, now: float | None) -> bool:
        """A registration this router made for another URL, not renewed for ``lease_s``."""
        headers, url = hook.get("headers"), hook.get("url")
        if not isinstance(headers, dict) or not isinstance(url, str) or _path(url) != path:
            return False
        if MARKER_HEADER not in headers and SECRET_HEADER not in headers:
            return False
        if headers.get(SECRET_HEADER) != self._secret:
            return False
        renewed = _timestamp(hook)
        return now is not None and (renewed is None or now - renewed > self.lease_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: check each queued name in turn (a failed check is left to the
        reconciler), and renew the registrations (after :meth:`register`)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._check_names(stop))
            group.create_task(self._keep_registered(stop))

    async def _check_names(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            taker = asyncio.ensure_future(self._pending.take())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({taker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if taker not in done:
                taker.cancel()
                return
            name = taker.result()
            try:
                await self.check(name)
            except UpstreamError as exc:
                logger.warning("webhook check of %s failed (%s); the reconciler will", name, exc)

    async def _keep_registered(self, stop: asyncio.Event) -> None:
        """Every ``renew_every_s``, :meth:`register` again; a failure is tried again then (a
        lease lapses after three)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.renew_every_s)
            if stop.is_set():
                return
            if self._registered is None:
                continue
            try:
                await self._renew_registrations(*self._registered)
            except UpstreamError as exc:
                logger.warning(
                    "renewing the webhook registrations failed (%s); tried again in %.0f s",
                    exc,
                    self.renew_every_s,
                )

    # -- one post ----------------------------------------------------------------------------

    async def _post(self, request: web.Request) -> web.Response:
        try:
            name = await self._name_posted(request)
        except _Refused as refused:
            self.counted("refused")
            logger.debug("webhook post refused (%s): %s", refused.status, refused.reason)
            return web.json_response({"error": refused.reason}, status=refused.status)
        if name is None:
            self.counted("ignored")
            return web.json_response({"queued": False})
        result = self._pending.add(name)
        self.counted(result)
        if result == "dropped":
            if not self._told_full:  # a flood must not flood the log
                self._told_full = True
                logger.warning(
                    "webhook queue full (%s names): posts are dropped, their reviews left to "
                    "the reconciler, until checks make room",
                    self._pending.limit,
                )
            return web.json_response({"queued": False}, status=503)
        if result == "queued":
            self._told_full = False
        return web.json_response({"queued": True})

    async def _name_posted(self, request: web.Request) -> str | None:
        """The review name a post gives; None when it is not an annotation of a review.

        Raises :class:`_Refused` for a post to refuse, checking what costs least first: the
        secret and content type (headers only), the declared length, then the body read within
        the deadline, its JSON, and the name.
        """
        if not self._authentic(request.raw_headers):
            raise _Refused(401, "no or a bad secret")
        if request.content_type != "application/json":
            raise _Refused(415, "the body must be application/json")
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise self._too_large(length)
        try:
            async with asyncio.timeout(self.settings.read_timeout_s), self._reading:
                body = await request.read()
        except TimeoutError as exc:
            raise _Refused(408, f"no whole body within {self.settings.read_timeout_s} s") from exc
        except web.HTTPRequestEntityTooLarge as exc:
            raise self._too_large(None) from exc
        except (ConnectionError, HttpProcessingError) as exc:  # cut short, or a bad encoding
            raise _Refused(400, f"the body could not be read ({type(exc).__name__})") from exc
        try:
            name = _review_name(orjson.loads(body))  # the parsed post is dropped here
        except orjson.JSONDecodeError as exc:
            raise _Refused(400, "the body is not JSON") from exc
        if name is None:
            return None
        if not (isinstance(name, str) and is_valid_loop_name(name)):
            raise _Refused(422, f"{NAME_FIELD} is not a review name")
        return name

    def _authentic(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """The secret header, once, equals the secret (compared in constant time, as bytes:
        a header need not be UTF-8); always true without a secret."""
        if self._secret is None:
            return True
        name = SECRET_HEADER.lower().encode()
        given = [value for key, value in headers if key.lower() == name]
        return len(given) == 1 and hmac.compare_digest(given[0], self._secret.encode())

    def _too_large(self, length: int | None) -> _Refused:
        size = f"{length} bytes" if length is not None else "a longer body"
        if self._secret is not None and not self._told_large:
            # With the secret, Label Studio sent it (or a member who read the secret there):
            # said once, as a flood of them must not flood the log; the metric counts them all.
            self._told_large = True
            logger.warning(
                "webhook post of %s refused: over review.backend.webhook.max_body_bytes "
                "(%s); its review is left to the reconciler. Further ones are counted "
                '(stream_router_review_webhook_posts_total{result="refused"}), not logged',
                size,
                self.settings.max_body_bytes,
            )
        return _Refused(413, f"{size} is over {self.settings.max_body_bytes} bytes")


class _Refused(Exception):
    """A post to answer ``status`` (a 4xx) with ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _review_name(payload: Any) -> object:
    """What an annotation post gives as its review's name (unchecked: a member may have
    written anything there), or None when the post is not an annotation of a review."""
    if not isinstance(payload, dict) or payload.get("action") not in ACTIONS:
        return None
    task = payload.get("task")
    data = task.get("data") if isinstance(task, dict) else None
    return data.get(NAME_FIELD) if isinstance(data, dict) else None


def _timestamp(hook: Mapping[str, Any]) -> float | None:
    """When Label Studio last saved a webhook (its ``updated_at``), in seconds."""
    value = hook.get("updated_at")
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def _path(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


async def _delete(client: LabelStudioClient, project_id: int, hook: Mapping[str, Any]) -> None:
    hook_id = hook.get("id")
    if not isinstance(hook_id, int):
        return
    try:
        await client.delete_webhook(hook_id)
    except LabelStudioNotFound:
        return  # another instance deleted it first
    url = hook.get("url")
    logger.info(
        "deleted webhook %s (%s) of project %s: an earlier registration of this router",
        hook_id,
        mask_url_passwords(url) if isinstance(url, str) else "no URL",
        project_id,
    )


class _Busy(asyncio.Protocol):
    """A connection over :data:`MAX_CONNECTIONS`: answered 503 and closed, unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        transport.close()


class _RequestErrors(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log for this endpoint: a request aiohttp refuses before the handler
    (a malformed line or header, one too long; aiohttp answers it 400 or 431) is counted
    ``refused`` and logged as one INFO line naming the error, instead of aiohttp's ERROR with
    a traceback. Anything else passes as it is: an exception in the handler is a bug."""

    def __init__(self, log: logging.Logger, counted: Callable[[str], None]) -> None:
        super().__init__(log, {})
        self.counted = counted

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.counted("refused")
            self.logger.info(
                "webhook endpoint refused a malformed request (%s, %s)",
                type(exc_info).__name__,
                exc_info.code,
            )
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kw)
