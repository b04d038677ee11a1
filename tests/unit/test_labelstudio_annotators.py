"""The sandbox's simulated Label Studio annotators, against a small in-memory Label Studio: new
tasks are found above the last id seen, and annotations go up to eight at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from stream_router.labelstudio.client import LabelStudioNotFound
from stream_router.labelstudio.tasks import task
from stream_router.sandbox.labelstudio.annotators import Annotators
from stream_router.sandbox.settings import FlowDefinition

CONTENT = {"event": {"text": "a photo"}, "prediction": {"label": "cat", "confidence": 0.4}}
FLOW = FlowDefinition(name="general")
LATER = 1e12  #: a time at which every planned annotation is due


class FakeLabelStudio:
    """One project; each annotation is held until ``release`` is set; deleted tasks are gone."""

    def __init__(self) -> None:
        self.stored: dict[int, dict[str, Any]] = {}
        self.after_ids: list[float] = []
        self.submitting = 0
        self.most_at_once = 0
        self.annotated: list[int] = []
        self.release = asyncio.Event()
        self.release.set()

    def add(self, count: int) -> list[int]:
        first = max(self.stored, default=0) + 1
        for task_id in range(first, first + count):
            data = task(f"r-{task_id}", CONTENT)["data"]
            made = "2026-01-01T00:00:00Z"
            self.stored[task_id] = {"id": task_id, "data": data, "created_at": made,
                                    "meta": {}, "annotations": []}  # fmt: skip
        return list(range(first, first + count))

    async def tasks(
        self, project_id: int, *, query: str | None = None, page_size: int = 100
    ) -> AsyncIterator[object]:
        assert query is not None
        items = {item["filter"]: item for item in orjson.loads(query)["filters"]["items"]}
        after = items["filter:tasks:id"]["value"]
        self.after_ids.append(after)
        for task_id, raw in sorted(self.stored.items()):
            if task_id > after and not raw["annotations"]:
                yield raw

    async def create_annotation(self, task_id: int, result: Any, **fields: Any) -> Any:
        self.submitting += 1
        self.most_at_once = max(self.most_at_once, self.submitting)
        try:
            await self.release.wait()
        finally:
            self.submitting -= 1
        if task_id not in self.stored:
            raise LabelStudioNotFound(f"POST /api/tasks/{task_id}/annotations/: 404")
        self.annotated.append(task_id)
        return {}


def annotators(fake: FakeLabelStudio) -> Annotators:
    return Annotators(fake, [FLOW], {"general": 1}, [2])  # type: ignore[arg-type]


async def test_each_poll_lists_only_the_tasks_made_since_the_last_one() -> None:
    fake = FakeLabelStudio()
    first = fake.add(3)
    working = annotators(fake)
    await working.step(LATER)
    later = fake.add(2)
    await working.step(LATER)
    await working.step(LATER)
    assert fake.after_ids == [0, first[-1], later[-1]]
    assert sorted(fake.annotated) == first + later  # each task once


async def test_annotations_due_go_eight_at_a_time_and_a_deleted_task_is_dropped() -> None:
    fake = FakeLabelStudio()
    ids = fake.add(20)
    working = annotators(fake)
    await working._discover(FLOW)
    del fake.stored[ids[0]]  # a second task of a review, deleted after it was listed
    fake.release.clear()
    stepping = asyncio.create_task(working.step(LATER))
    while fake.submitting < 8:  # noqa: ASYNC110 - event-loop turns, no time
        await asyncio.sleep(0)
    fake.release.set()
    await stepping
    assert fake.most_at_once == 8
    assert sorted(fake.annotated) == ids[1:]
    await working.step(LATER)
    assert sorted(fake.annotated) == ids[1:]  # nothing submitted twice, nothing left due
