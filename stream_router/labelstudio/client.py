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
5xx                                    ``ReviewThrottled(maybe_started=True)``
no answer (refused, reset, timeout)    ``UpstreamError`` (retriable)
=====================================  ===========================================

Log lines name paths and statuses, never task data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn, Self

import aiohttp
import orjson

from stream_router.errors import ReviewRejected, ReviewThrottled, UpstreamError

logger = logging.getLogger(__name__)

_REJECTED = frozenset({400, 405, 409, 413, 422})


class LabelStudioAuthError(UpstreamError):
    """Label Studio refused the API token (401) or the user may not do this (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)


class LabelStudioNotFound(ReviewRejected):
    """The project, task or page does not exist (404)."""


def name_filter(field: str, *values: str) -> str:
    """A Data Manager query selecting the tasks whose ``data.<field>`` equals one of ``values``.

    The query travels in the URL: keep ``values`` to a few dozen (a proxy in front of Label
    Studio may refuse request lines over 8 KB)."""
    items = [
        {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String", "value": v}
        for v in values
    ]
    return orjson.dumps({"filters": {"conjunction": "or", "items": items}}).decode()


class LabelStudioClient:
    """One Label Studio server, one API token; see the module docstring."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
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

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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
        return orjson.loads(raw) if raw else None

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
            found.extend(answer["results"])
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
        answer = await self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            body=list(tasks),
        )
        return [int(task_id) for task_id in answer["task_ids"]]

    async def task(self, task_id: int) -> dict[str, Any]:
        """One task with its annotations and predictions."""
        answer: dict[str, Any] = await self.request("GET", f"/api/tasks/{task_id}")
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
    ) -> AsyncIterator[dict[str, Any]]:
        """The project's tasks (oldest first), ``query`` a Data Manager filter, page by page."""
        page = 1
        while True:
            params = {
                "project": str(project_id),
                "page": str(page),
                "page_size": str(page_size),
                "fields": "all",
            }
            if query is not None:
                params["query"] = query
            try:
                answer = await self.request("GET", "/api/tasks", params=params)
            except LabelStudioNotFound:
                return  # Label Studio answers a page past the last with 404
            tasks = answer.get("tasks", [])
            for task in tasks:
                yield task
            if len(tasks) < page_size:
                return
            page += 1

    async def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST", f"/api/tasks/{task_id}/annotations/", body={"result": result, **fields}
        )
        return answer

    async def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await self.request(
            "GET", "/api/webhooks/", params={"project": str(project_id)}
        )
        return answer

    async def create_webhook(
        self,
        project_id: int,
        url: str,
        actions: Sequence[str],
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST",
            "/api/webhooks/",
            body={
                "project": project_id,
                "url": url,
                "send_payload": True,
                "send_for_all_actions": False,
                "actions": list(actions),
                "headers": dict(headers or {}),
                "is_active": True,
            },
        )
        return answer

    async def users(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/api/users/")
        return list(answer if isinstance(answer, list) else answer.get("results", []))

    async def create_user(self, email: str, username: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST", "/api/users/", body={"email": email, "username": username}
        )
        return answer


def _raise_for(what: str, status: int, raw: bytes, retry_after: str | None) -> NoReturn:
    detail = f"{what}: {status} {_message(raw)}"
    if status in (401, 403):
        raise LabelStudioAuthError(detail)
    if status == 404:
        raise LabelStudioNotFound(detail)
    if status == 429:
        raise ReviewThrottled(detail, retry_after_s=_seconds(retry_after))
    if status >= 500:
        raise ReviewThrottled(detail, maybe_started=True)
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
