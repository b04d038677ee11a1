"""Registering the webhook: one registration of this router's URL per project, renewed in place
(Label Studio's ``updated_at`` is its lease); the router's registrations of other URLs deleted
once their lease is over (earlier runs), kept while renewed (a live instance beside this one);
every other integration's kept.

The fake keeps webhooks as Label Studio 1.23 answers them (``GET /api/webhooks/?project=``,
``updated_at`` set on every save: measured in ``tests/integration/test_label_studio_backend.py``
against the real one).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from stream_router.errors import UpstreamError
from stream_router.labelstudio.client import LabelStudioClient, LabelStudioNotFound
from stream_router.labelstudio.settings import LabelStudioWebhook
from stream_router.labelstudio.webhook import (
    ACTIONS,
    LEASE_S,
    MARKER,
    MARKER_HEADER,
    SECRET_HEADER,
    WebhookReceiver,
)

URL = "http://10.0.0.5:9102/label-studio/webhook"
SECRET = "current-secret"
T0 = 1_800_000_000.0  #: Label Studio's clock at the start of each test


class FakeLabelStudio(LabelStudioClient):
    """Label Studio's webhook API in memory (no network: every other call would fail)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "unused")
        self.now = T0
        self.hooks: dict[int, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.renewed = asyncio.Event()
        self._ids = itertools.count(1)

    def add(
        self,
        project: int,
        url: str,
        headers: Mapping[str, str],
        *,
        age_s: float = 0.0,
        actions: Sequence[str] = ACTIONS,
        **fields: Any,
    ) -> int:
        """A webhook as if saved ``age_s`` ago."""
        hook_id = next(self._ids)
        self.hooks[hook_id] = {
            "id": hook_id,
            "organization": 1,
            "project": project,
            "url": url,
            "send_payload": True,
            "send_for_all_actions": False,
            "headers": dict(headers),
            "is_active": True,
            "actions": list(actions),
            "created_at": _iso(self.now - age_s),
            "updated_at": _iso(self.now - age_s),
            **fields,
        }
        return hook_id

    async def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        self.calls.append(f"list {project_id}")
        return [dict(h) for h in self.hooks.values() if h["project"] == project_id]

    async def create_webhook(
        self,
        project_id: int,
        url: str,
        actions: Sequence[str],
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        hook_id = self.add(project_id, url, headers or {}, actions=actions)
        self.calls.append(f"create {hook_id}")
        return dict(self.hooks[hook_id])

    async def update_webhook(
        self,
        webhook_id: int,
        url: str,
        actions: Sequence[str],
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self.calls.append(f"update {webhook_id}")
        hook = self.hooks.get(webhook_id)
        if hook is None:
            raise LabelStudioNotFound(f"PATCH /api/webhooks/{webhook_id}/: 404")
        hook.update(
            url=url,
            actions=list(actions),
            headers=dict(headers or {}),
            send_payload=True,
            send_for_all_actions=False,
            is_active=True,
            updated_at=_iso(self.now),
        )
        self.renewed.set()
        return dict(hook)

    async def delete_webhook(self, webhook_id: int) -> None:
        self.calls.append(f"delete {webhook_id}")
        if self.hooks.pop(webhook_id, None) is None:
            raise LabelStudioNotFound(f"DELETE /api/webhooks/{webhook_id}/: 404")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def receiver(secret: str | None = SECRET, url: str = URL, **kw: Any) -> WebhookReceiver:
    settings = LabelStudioWebhook(
        host="0.0.0.0",  # noqa: S104 - never bound here
        public_url=url,
        secret=SecretStr(secret) if secret else None,
        allow_without_secret=secret is None,
    )

    async def check(name: str) -> None:
        raise AssertionError(name)

    return WebhookReceiver(settings, check, **kw)


def ours(secret: str | None = SECRET) -> dict[str, str]:
    return {MARKER_HEADER: MARKER, **({SECRET_HEADER: secret} if secret else {})}


LAPSED = LEASE_S + 1


async def test_lapsed_registrations_of_the_router_go_and_everything_else_stays() -> None:
    ls = FakeLabelStudio()
    earlier_port = ls.add(1, "http://10.0.0.5:41234/label-studio/webhook", ours(), age_s=LAPSED)
    earlier_host = ls.add(1, "http://old-pod:9102/label-studio/webhook", ours(), age_s=LAPSED)
    before_marker = ls.add(
        1, "http://10.0.0.7:9102/label-studio/webhook", {SECRET_HEADER: SECRET}, age_s=LAPSED
    )
    live_instance = ls.add(1, "http://10.0.0.6:9102/label-studio/webhook", ours(), age_s=60)
    other_integration = ls.add(1, "http://ml:9090/label-studio/webhook", {}, age_s=LAPSED)
    other_path = ls.add(1, "http://10.0.0.5:9102/hooks", ours(), age_s=LAPSED)
    other_router = ls.add(
        1, "http://10.0.0.9:9102/label-studio/webhook", ours("another"), age_s=LAPSED
    )
    unmarked = ls.add(
        1, "http://x:1/label-studio/webhook", {"Authorization": "Token t"}, age_s=LAPSED
    )
    other_project = ls.add(2, "http://10.0.0.5:41234/label-studio/webhook", ours(), age_s=LAPSED)

    await receiver().register(ls, [1])

    assert set(ls.hooks) - {h for h in ls.hooks if ls.hooks[h]["url"] == URL} == {
        live_instance,
        other_integration,
        other_path,
        other_router,
        unmarked,
        other_project,
    }
    for gone in (earlier_port, earlier_host, before_marker):
        assert f"delete {gone}" in ls.calls
    [mine] = [h for h in ls.hooks.values() if h["url"] == URL]
    assert mine["headers"] == ours()


async def test_its_own_registration_is_renewed_in_place_and_copies_deleted() -> None:
    ls = FakeLabelStudio()
    old_secret = ls.add(1, URL, ours("rotated-away"), age_s=LAPSED, actions=["PROJECT_UPDATED"])
    copy = ls.add(1, URL, ours(), is_active=False)
    await receiver().register(ls, [1])
    assert ls.calls == ["list 1", f"update {old_secret}", f"delete {copy}"]  # no gap
    [made] = ls.hooks.values()
    assert made["id"] == old_secret
    assert made["headers"] == ours()
    assert sorted(made["actions"]) == sorted(ACTIONS)
    assert made["updated_at"] == _iso(T0)


async def test_registering_again_renews_and_deletes_nothing() -> None:
    ls = FakeLabelStudio()
    await receiver().register(ls, [1, 2])
    first = {hook_id: dict(h) for hook_id, h in ls.hooks.items()}
    ls.calls.clear()
    ls.now += 60
    await receiver().register(ls, [1, 2])
    assert set(ls.hooks) == set(first)
    assert [c.split()[0] for c in ls.calls] == ["list", "update", "list", "update"]
    assert {h["updated_at"] for h in ls.hooks.values()} == {_iso(T0 + 60)}


async def test_an_instance_beside_keeps_its_registration_until_it_stops_renewing() -> None:
    ls = FakeLabelStudio()
    a = receiver(url="http://10.0.0.5:9102/label-studio/webhook")
    b = receiver(url="http://10.0.0.6:9102/label-studio/webhook")
    await a.register(ls, [1])
    ls.now += LEASE_S / 2
    await b.register(ls, [1])
    assert len(ls.hooks) == 2  # a's lease runs
    ls.now += LEASE_S / 2 + 1  # a stopped renewing; b renews
    await b.register(ls, [1])
    assert [h["url"] for h in ls.hooks.values()] == [b.url]


async def test_without_a_secret_only_its_secretless_registrations_are_its_own() -> None:
    ls = FakeLabelStudio()
    url = "http://127.0.0.1:9102/label-studio/webhook"
    earlier = ls.add(1, "http://127.0.0.1:40000/label-studio/webhook", ours(None), age_s=LAPSED)
    with_secret = ls.add(1, "http://127.0.0.1:40001/label-studio/webhook", ours(), age_s=LAPSED)
    unmarked = ls.add(1, "http://127.0.0.1:40002/label-studio/webhook", {}, age_s=LAPSED)
    await receiver(None, url).register(ls, [1])
    assert earlier not in ls.hooks
    assert {with_secret, unmarked} <= set(ls.hooks)
    assert [h["headers"] for h in ls.hooks.values() if h["url"] == url] == [ours(None)]


async def test_registrations_deleted_meanwhile_by_another_instance_are_no_error() -> None:
    class Racing(FakeLabelStudio):
        async def webhooks(self, project_id: int) -> list[dict[str, Any]]:
            listed = await super().webhooks(project_id)
            self.hooks.clear()  # another instance deletes them between the list and the calls
            return listed

    ls = Racing()
    ls.add(1, URL, ours(), age_s=LAPSED)
    ls.add(1, "http://10.0.0.5:41234/label-studio/webhook", ours(), age_s=LAPSED)
    await receiver().register(ls, [1])
    assert [h["url"] for h in ls.hooks.values()] == [URL]


@pytest.mark.parametrize("updated_at", [None, "yesterday", 5])
async def test_a_registration_without_a_readable_time_counts_as_lapsed(updated_at: object) -> None:
    ls = FakeLabelStudio()
    odd = ls.add(1, "http://10.0.0.5:41234/label-studio/webhook", ours(), updated_at=updated_at)
    await receiver().register(ls, [1])
    assert odd not in ls.hooks


async def test_run_renews_the_registrations_and_outlives_a_failed_renewal() -> None:
    class FailingOnce(FakeLabelStudio):
        armed = False
        failed = False

        async def webhooks(self, project_id: int) -> list[dict[str, Any]]:
            if self.armed and not self.failed:
                self.failed = True
                raise UpstreamError("GET /api/webhooks/: no answer")
            return await super().webhooks(project_id)

    ls = FailingOnce()
    subject = receiver(renew_every_s=0.01)
    await subject.register(ls, [1])
    ls.armed = True  # the first renewal of run() fails; the next one renews
    ls.renewed.clear()
    stop = asyncio.Event()
    running = asyncio.ensure_future(subject.run(stop))
    try:
        await asyncio.wait_for(ls.renewed.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert ls.failed
