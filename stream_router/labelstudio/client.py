"""Label Studio's REST API, the parts stream_router uses, over one aiohttp session.

Usage::

    async with LabelStudioClient("http://127.0.0.1:8080", token) as ls:
        project = await ls.project_by_title("sandbox-general")
        [task_id] = await ls.import_tasks(project["id"], [{"data": {...}}])
        task = await ls.task(task_id)

Authentication is the API token in ``Authorization: Token <token>`` (Label Studio's "legacy"
token; the sandbox enables it, see ``sandbox/labelstudio/server.py``). HTTP errors map into the
error tree (``stream_router.errors``) as A2I's do:

=====================================  ===========================================
Label Studio answers                   raised
=====================================  ===========================================
401, 403                               ``LabelStudioAuthError`` (not retriable)
404                                    ``LabelStudioNotFound`` (a ``ReviewRejected``)
400, 405, 409, 422                     ``ReviewRejected`` (with Label Studio's message)
429                                    ``ReviewThrottled`` (``Retry-After`` as the hint)
5xx                                    ``LabelStudioFailed``, a
                                       ``ReviewThrottled(maybe_started=True)``
no answer (refused, reset, timeout)    ``UpstreamError`` (retriable)
an answer that is not JSON, or a list  ``UpstreamError`` (retriable: a proxy's page,
or page not shaped as Label Studio's   another server)
=====================================  ===========================================

The client checks the envelopes Label Studio itself makes (a page of tasks, an import's ids);
what members can write inside them (a task's data, meta, annotations) it hands on as it is, for
``labelstudio/stored.py`` to read. Tasks are read with ``resolve_uri=false``: the router needs
no storage URL resolved, and Label Studio's resolving fails (500) on task data that is a list or
a string, which a member can store. Log lines name paths and statuses, never task data.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, NoReturn

import aiohttp
import orjson

from stream_router.errors import ReviewRejected, ReviewThrottled, UpstreamError
from stream_router.lifecycle import AsyncResource

logger = logging.getLogger(__name__)

_REJECTED = frozenset({400, 405, 409, 413, 422})


class LabelStudioAuthError(UpstreamError):
    """Label Studio refused the API token (401) or the user may not do this (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)


class LabelStudioNotFound(ReviewRejected):
    """The project, task or page does not exist (404)."""


class LabelStudioFailed(ReviewThrottled):
    """Label Studio answered 5xx: it is failing, or failing on what this call reads (it cannot
    serve a task whose data a member made a number, say)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, maybe_started=True)


def name_filter(field: str, *values: str) -> str:
    """A Data Manager query selecting the tasks whose ``data.<field>`` equals one of ``values``.

    The query travels in the URL: keep ``values`` to a few dozen (a proxy in front of Label
    Studio may refuse request lines over 8 KB). Label Studio refuses it (400, "Not supported
    filter type") for the whole project when the field of the project's first task holds a list,
    which any member can make it: the backend looks names up with :func:`names_query`."""
    return _filter(field, "equal", values)


def names_query(field: str, *values: str) -> str:
    """A Data Manager query selecting the tasks whose ``data.<field>`` contains one of ``values``:
    every task that equals one, and others (a longer name, a list holding it), which the caller
    leaves out. Unlike :func:`name_filter`'s, no value any task holds makes Label Studio refuse
    it. Same limit on ``values``."""
    return _filter(field, "contains", values)


def names_after_query(field: str, after_id: int, *values: str) -> str:
    """A Data Manager query selecting the tasks with an id above ``after_id`` whose
    ``data.<field>`` is one of ``values`` (a regular expression anchored at both ends: no other
    string, and no list, matches it, and no value makes Label Studio refuse it). Label Studio
    reads only the ids above ``after_id`` (its primary key), however many tasks the project
    holds; :func:`names_query`'s ``or`` of ``contains`` reads them all. Same limit on
    ``values``."""
    pattern = "^(?:" + "|".join(re.escape(value) for value in values) + ")$"
    items = [
        {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": after_id},
        {"filter": f"filter:tasks:data.{field}", "operator": "regex", "type": "String",
         "value": pattern},
    ]  # fmt: skip
    return orjson.dumps({"filters": {"conjunction": "and", "items": items}}).decode()


def _filter(field: str, operator: str, values: tuple[str, ...]) -> str:
    items = [
        {"filter": f"filter:tasks:data.{field}", "operator": operator, "type": "String", "value": v}
        for v in values
    ]
    return orjson.dumps({"filters": {"conjunction": "or", "items": items}}).decode()


class LabelStudioClient(AsyncResource):
    """One Label Studio server, one API token; see the module docstring."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        unserved: Callable[[int, LabelStudioFailed], None] = lambda project_id, error: None,
    ) -> None:
        """``unserved(project_id, error)`` is told of each task a listing leaves out because
        Label Studio fails on it (see :meth:`tasks`)."""
        self.url = url.rstrip("/")
        self.unserved = unserved
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Token {self._token}"},
                timeout=self._timeout,
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the calls ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """One API call; the decoded JSON answer (None for an empty one)."""
        session = self._session
        if session is None:
            raise RuntimeError("LabelStudioClient is not open: call open() or use 'async with'")
        what = f"{method} {path}"
        try:
            async with session.request(
                method, self.url + path, params=params, json=body
            ) as response:
                raw = await response.read()
                if response.status >= 300:
                    _raise_for(what, response.status, raw, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # noqa: UP041 - aiohttp's
            raise UpstreamError(
                f"{what}: no answer from Label Studio at {self.url} ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"{what}: Label Studio at {self.url} answered {len(raw)} bytes that are not JSON"
            ) from exc

    async def version(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("GET", "/api/version")
        return answer

    async def projects(self) -> list[dict[str, Any]]:
        """Every project the token's user can see."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = await self.request(
                "GET", "/api/projects", params={"page": str(page), "page_size": "100"}
            )
            results = _listed(answer, "results", "GET /api/projects")
            found.extend(project for project in results if isinstance(project, dict))
            if not answer.get("next"):
                return found
            page += 1

    async def project(self, project_id: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("GET", f"/api/projects/{project_id}")
        return answer

    async def create_project(
        self, title: str, label_config: str, *, maximum_annotations: int, description: str = ""
    ) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST",
            "/api/projects",
            body={
                "title": title,
                "label_config": label_config,
                "maximum_annotations": maximum_annotations,
                "description": description,
            },
        )
        return answer

    async def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Create tasks (with their predictions) in one import; their ids, in order."""
        path = f"/api/projects/{project_id}/import"
        what = f"POST {path}"
        answer = await self.request(
            "POST", path, params={"return_task_ids": "true"}, body=list(tasks)
        )
        ids = _listed(answer, "task_ids", what)
        if not all(isinstance(task_id, int) and not isinstance(task_id, bool) for task_id in ids):
            raise UpstreamError(f"{what}: the answer's task_ids are not all integers")
        return list(ids)

    async def highest_task_id(self, project_id: int) -> int | None:
        """The greatest id of the project's tasks; None if it has none."""
        query = orjson.dumps({"ordering": ["-tasks:id"]}).decode()
        page = await self.task_page(project_id, 1, query=query, page_size=1)
        found = page[0].get("id") if page and isinstance(page[0], dict) else None
        if page and not (isinstance(found, int) and not isinstance(found, bool)):
            raise UpstreamError("GET /api/tasks: the task answered has no integer id")
        return found

    async def task(self, task_id: int) -> object:
        """One task with its annotations and predictions, as Label Studio answered it (what
        members wrote in it is unchecked: ``labelstudio/stored.py`` reads it)."""
        params = {"resolve_uri": "false"}
        answer: object = await self.request("GET", f"/api/tasks/{task_id}", params=params)
        return answer

    async def update_task(self, task_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "PATCH", f"/api/tasks/{task_id}", body=dict(changes)
        )
        return answer

    async def delete_task(self, task_id: int) -> bool:
        """Delete a task; False when it was gone already (not an error)."""
        try:
            await self.request("DELETE", f"/api/tasks/{task_id}/")
        except LabelStudioNotFound:
            return False
        return True

    async def tasks(
        self, project_id: int, *, query: str | None = None, page_size: int = 100
    ) -> AsyncIterator[object]:
        """The project's tasks (oldest first), ``query`` a Data Manager filter, page by page;
        each as Label Studio answered it (unchecked, as :meth:`task`'s).

        A page Label Studio fails on (5xx) is read again a task at a time, and the tasks it fails
        on are left out (``unserved`` is told): a member can store task data (a number where an
        object belongs) that Label Studio itself then fails to list, which would otherwise fail
        every listing of the project. When it answers none of the page's tasks, the page's error
        is raised (Label Studio is failing)."""
        page = 1
        while True:
            try:
                tasks = await self.task_page(project_id, page, query=query, page_size=page_size)
                ended = tasks is None or len(tasks) < page_size
            except LabelStudioFailed as exc:
                tasks, ended = await self._page_by_task(project_id, page, query, page_size, exc)
            for task in tasks or ():
                yield task
            if ended:
                return
            page += 1

    async def _page_by_task(
        self,
        project_id: int,
        page: int,
        query: str | None,
        page_size: int,
        failure: LabelStudioFailed,
    ) -> tuple[list[object], bool]:
        """Page ``page`` read one task at a time: the tasks answered, and whether the listing
        ended within the page."""
        answered: list[object] = []
        answers = False
        for position in range((page - 1) * page_size + 1, page * page_size + 1):
            try:
                one = await self.task_page(project_id, position, query=query, page_size=1)
            except LabelStudioFailed as exc:
                self.unserved(project_id, exc)
                continue
            answers = True
            if not one:
                return answered, True
            answered.extend(one)
        if not answers:
            raise failure
        return answered, False

    async def task_page(
        self, project_id: int, page: int, *, query: str | None = None, page_size: int = 100
    ) -> list[object] | None:
        """Page ``page`` (from 1) of the project's tasks, as :meth:`tasks` reads them; None past
        the last page."""
        params = {
            "project": str(project_id),
            "page": str(page),
            "page_size": str(page_size),
            "fields": "all",
            "resolve_uri": "false",
        }
        if query is not None:
            params["query"] = query
        try:
            answer = await self.request("GET", "/api/tasks", params=params)
        except LabelStudioNotFound:
            return None  # Label Studio answers a page past the last with 404
        return _listed(answer, "tasks", "GET /api/tasks")

    async def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST", f"/api/tasks/{task_id}/annotations/", body={"result": result, **fields}
        )
        return answer

    async def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """The project's webhooks (Label Studio answers them all in one list)."""
        answer = await self.request("GET", "/api/webhooks/", params={"project": str(project_id)})
        if not isinstance(answer, list):
            raise UpstreamError("GET /api/webhooks/: the answer is not a list: not Label Studio?")
        return [hook for hook in answer if isinstance(hook, dict)]

    async def create_webhook(
        self,
        project_id: int,
        url: str,
        actions: Sequence[str],
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A webhook posting ``actions`` with their payload and ``headers`` to ``url``."""
        body = {"project": project_id, **_webhook(url, actions, headers)}
        answer: dict[str, Any] = await self.request("POST", "/api/webhooks/", body=body)
        return answer

    async def update_webhook(
        self,
        webhook_id: int,
        url: str,
        actions: Sequence[str],
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make a webhook what :meth:`create_webhook` makes; its ``updated_at`` is then now
        (all of it is sent: Label Studio empties the actions of a PATCH that leaves them out)."""
        body = _webhook(url, actions, headers)
        path = f"/api/webhooks/{webhook_id}/"
        answer: dict[str, Any] = await self.request("PATCH", path, body=body)
        return answer

    async def delete_webhook(self, webhook_id: int) -> None:
        """Delete one webhook (``LabelStudioNotFound`` when it is gone already)."""
        await self.request("DELETE", f"/api/webhooks/{webhook_id}/")

    async def users(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/api/users/")
        return list(answer if isinstance(answer, list) else answer.get("results", []))

    async def create_user(self, email: str, username: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST", "/api/users/", body={"email": email, "username": username}
        )
        return answer


def _webhook(url: str, actions: Sequence[str], headers: Mapping[str, str] | None) -> dict[str, Any]:
    return {
        "url": url,
        "send_payload": True,
        "send_for_all_actions": False,
        "actions": list(actions),
        "headers": dict(headers or {}),
        "is_active": True,
    }


def _listed(answer: Any, key: str, what: str) -> list[Any]:
    """``answer[key]``, a list in Label Studio's own envelope."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, list):
        raise UpstreamError(f"{what}: the answer has no {key} list: not Label Studio's API?")
    return value


def _raise_for(what: str, status: int, raw: bytes, retry_after: str | None) -> NoReturn:
    detail = f"{what}: {status} {_message(raw)}"
    if status in (401, 403):
        raise LabelStudioAuthError(detail)
    if status == 404:
        raise LabelStudioNotFound(detail)
    if status == 429:
        raise ReviewThrottled(detail, retry_after_s=_seconds(retry_after))
    if status >= 500:
        raise LabelStudioFailed(detail)
    if status in _REJECTED:
        raise ReviewRejected(detail)
    raise UpstreamError(detail, retriable=False)


def _message(raw: bytes) -> str:
    """Label Studio's own explanation, short (its error bodies are JSON with ``detail``)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    if isinstance(body, dict):
        for key in ("detail", "validation_errors", "message"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None
