"""How the Label Studio backend batches starts, against a small in-memory Label Studio.

Over the wire, ``tests/integration/test_label_studio_backend.py`` proves the same starts leave
one task per name on a real Label Studio; here the fake counts the calls and holds an import in
flight, which a real server cannot be made to do on cue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
import pytest

from stream_router.errors import ReviewRejected
from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.review.backend import StartOutcome

CONTENT = {"event": {"text": "a photo"}, "prediction": {"label": "cat", "confidence": 0.4}}


class FakeLabelStudio:
    """One project; imports can be held open; an import holding a ``poison`` task is refused."""

    def __init__(self) -> None:
        self.stored: dict[int, dict[str, Any]] = {}
        self.imports: list[int] = []  # tasks per import call
        self.lookups = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.importing = asyncio.Event()

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def projects(self) -> list[dict[str, Any]]:
        return [{"id": 1, "title": "General", "maximum_annotations": 1}]

    async def tasks(
        self, project_id: int, *, query: str | None = None, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        self.lookups += 1
        assert query is not None
        names = {item["value"] for item in orjson.loads(query)["filters"]["items"]}
        for found in list(self.stored.values()):
            if found["data"][NAME_FIELD] in names:
                yield found

    async def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        self.importing.set()
        await self.hold.wait()
        self.imports.append(len(tasks))
        if any(t["data"]["content"].get("poison") for t in tasks):
            raise ReviewRejected("POST /api/projects/1/import answered 400: bad task")
        ids = []
        for one in tasks:
            task_id = len(self.stored) + 1
            self.stored[task_id] = {"id": task_id, "data": dict(one["data"]), "annotations": []}
            ids.append(task_id)
        return ids

    async def delete_task(self, task_id: int) -> bool:
        return self.stored.pop(task_id, None) is not None


async def opened(fake: FakeLabelStudio) -> LabelStudioReviewBackend:
    settings = LabelStudioSettings(api_token="t", projects={"general": {"project": "General"}})
    backend = LabelStudioReviewBackend(settings)
    backend.client = fake  # type: ignore[assignment]
    await backend.open()
    return backend


async def holding(
    name: str,
) -> tuple[FakeLabelStudio, LabelStudioReviewBackend, asyncio.Task[StartOutcome]]:
    """An open backend whose start of ``name`` is in flight, its import held open."""
    fake = FakeLabelStudio()
    backend = await opened(fake)
    fake.hold.clear()
    first = asyncio.create_task(backend.start(name, "general", CONTENT))
    await fake.importing.wait()
    return fake, backend, first


async def queued(backend: LabelStudioReviewBackend, count: int) -> None:
    """Until ``count`` starts wait behind the import in flight (event-loop turns, no time)."""
    while len(backend._queued.get("general", [])) < count:  # noqa: ASYNC110 - loop turns
        await asyncio.sleep(0)


async def test_starts_arriving_during_an_import_share_the_next_one() -> None:
    fake, backend, first = await holding("n0")
    names = [f"n{i}" for i in range(1, 26)] + ["n3", "n7"]  # two redelivered at once
    rest = [asyncio.create_task(backend.start(name, "general", CONTENT)) for name in names]
    await queued(backend, len(rest))
    fake.hold.set()
    outcomes = [await first, *[await one for one in rest]]
    await backend.aclose()

    assert fake.imports == [1, 25]  # 26 reviews in two imports
    assert fake.lookups == 2 + 4  # a look before and after each import, 20 names a look
    by_name: dict[str, list[bool]] = {}
    for outcome in outcomes:
        by_name.setdefault(outcome.name, []).append(outcome.already_started)
    assert sorted(by_name) == sorted({"n0", *names})
    assert all(started.count(False) == 1 for started in by_name.values())
    assert len(fake.stored) == 26


async def test_a_rejected_batch_is_sent_again_one_by_one_so_only_the_bad_review_fails() -> None:
    fake, backend, first = await holding("first")
    contents = {"good-1": CONTENT, "bad": {**CONTENT, "poison": True}, "good-2": CONTENT}
    rest = {n: asyncio.create_task(backend.start(n, "general", c)) for n, c in contents.items()}
    await queued(backend, len(rest))
    fake.hold.set()
    await first
    with pytest.raises(ReviewRejected, match="bad task"):
        await rest["bad"]
    assert not (await rest["good-1"]).already_started
    assert not (await rest["good-2"]).already_started
    await backend.aclose()
    assert fake.imports == [1, 3, 1, 1, 1]
    assert sorted(t["data"][NAME_FIELD] for t in fake.stored.values()) == [
        "first",
        "good-1",
        "good-2",
    ]


async def test_closing_fails_the_starts_in_flight_and_queued_instead_of_leaving_them() -> None:
    _, backend, sent = await holding("sent")
    waiting = asyncio.create_task(backend.start("waiting", "general", CONTENT))
    await queued(backend, 1)
    await backend.aclose()
    for start in (sent, waiting):
        with pytest.raises(RuntimeError, match="closed"):
            await start
