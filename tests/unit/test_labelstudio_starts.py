"""How the Label Studio backend batches starts and bounds their look-ups, against a small
in-memory Label Studio.

Over the wire, ``tests/integration/test_label_studio_backend.py`` proves the same starts leave
one task per name on a real Label Studio; here the fake counts the calls, holds an import in
flight and lets time pass during one, which a real server cannot be made to do on cue.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import orjson
import pytest

from stream_router.errors import ReviewRejected
from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.labelstudio.tasks import NAME_FIELD, TAG_FIELD, tag_key, task_tag
from stream_router.review.backend import StartOutcome

CONTENT = {"event": {"text": "a photo"}, "prediction": {"label": "cat", "confidence": 0.4}}


class FakeLabelStudio:
    """One project; imports can be held open; an import holding a ``poison`` task is refused.
    Ids grow from 1 as Label Studio's do; ``meanwhile`` runs inside the next import call, before
    its tasks get their ids (another process's import landing first, time passing)."""

    def __init__(self) -> None:
        self.stored: dict[int, dict[str, Any]] = {}
        self.imports: list[int] = []  # tasks per import call
        self.lookups = 0
        self.after_ids: list[int | None] = []  # per look-up: the id it read above (None: all)
        self.hold = asyncio.Event()
        self.hold.set()
        self.importing = asyncio.Event()
        self.meanwhile: Callable[[], None] = lambda: None
        self.next_id = 1

    def land(self, name: str, tag: str | None = None) -> int:
        """A task of ``name`` stored as an import lands (a start's, or a member's)."""
        task_id, self.next_id = self.next_id, self.next_id + 1
        data = {NAME_FIELD: name, "content": dict(CONTENT)}
        if tag is not None:
            data[TAG_FIELD] = tag
        self.stored[task_id] = {"id": task_id, "data": data, "annotations": []}
        return task_id

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def projects(self) -> list[dict[str, Any]]:
        return [{"id": 1, "title": "General", "maximum_annotations": 1}]

    async def highest_task_id(self, project_id: int) -> int | None:
        return max(self.stored, default=None)

    async def tasks(
        self, project_id: int, *, query: str | None = None, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """The two look-ups: names ``contains`` (or), or id ``greater`` and name ``regex``."""
        self.lookups += 1
        assert query is not None
        filters = orjson.loads(query)["filters"]
        items = filters["items"]
        combine = any if filters["conjunction"] == "or" else all
        after = [item["value"] for item in items if item["filter"] == "filter:tasks:id"]
        self.after_ids.append(after[0] if after else None)
        for task_id, found in sorted(self.stored.items()):
            if combine(self._matches(task_id, found, item) for item in items):
                yield found

    @staticmethod
    def _matches(task_id: int, found: dict[str, Any], item: dict[str, Any]) -> bool:
        if item["filter"] == "filter:tasks:id":
            assert item["operator"] == "greater"
            return bool(task_id > item["value"])
        assert item["filter"] == f"filter:tasks:data.{NAME_FIELD}"
        held = found["data"][NAME_FIELD]
        if item["operator"] == "regex":
            return re.search(item["value"], held) is not None
        assert item["operator"] == "contains"
        return bool(item["value"] in held)

    async def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        self.importing.set()
        await self.hold.wait()
        self.imports.append(len(tasks))
        if any(t["data"]["content"].get("poison") for t in tasks):
            raise ReviewRejected("POST /api/projects/1/import answered 400: bad task")
        self.meanwhile()
        self.meanwhile = lambda: None
        ids = []
        for one in tasks:
            task_id = self.land(one["data"][NAME_FIELD], one["data"].get(TAG_FIELD))
            self.stored[task_id]["data"] = dict(one["data"])
            ids.append(task_id)
        return ids

    async def delete_task(self, task_id: int) -> bool:
        return self.stored.pop(task_id, None) is not None


async def opened(
    fake: FakeLabelStudio, clock: Callable[[], float] | None = None, **more: Any
) -> LabelStudioReviewBackend:
    settings = LabelStudioSettings(
        api_token="t", projects={"general": {"project": "General"}}, **more
    )
    backend = LabelStudioReviewBackend(settings, **({"clock": clock} if clock else {}))
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


class Clock:
    """This process's clock, moved by hand."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def ours(name: str) -> str:
    """The tag the backend of :func:`opened` gives a task of ``name`` in ``general``."""
    return task_tag(tag_key("t"), "general", name)


async def test_fresh_starts_import_without_looking_anything_up() -> None:
    fake = FakeLabelStudio()
    backend = await opened(fake)
    fake.hold.clear()

    def start(name: str) -> asyncio.Task[StartOutcome]:
        return asyncio.create_task(backend.start(name, "general", CONTENT, fresh=True))

    starts = [start("n0")]
    await fake.importing.wait()
    starts += [start(f"n{i}") for i in range(1, 30)]
    await queued(backend, 29)
    fake.hold.set()
    outcomes = await asyncio.gather(*starts)
    await backend.aclose()
    assert fake.imports == [1, 29]
    assert fake.lookups == 0
    assert not any(outcome.already_started for outcome in outcomes)
    assert len(fake.stored) == 30


async def test_a_start_that_may_repeat_one_reads_only_ids_above_an_anchor_before_it() -> None:
    """The other starts of a batch share one look-up above the least bound of theirs; a start
    recorded before any anchor (read from the ledger after a restart) reads every task."""
    clock = Clock(1_000.0)
    fake = FakeLabelStudio()
    for i in range(5):
        fake.land(f"old-{i}", ours(f"old-{i}"))
    backend = await opened(fake, clock, clock_skew_s=10)  # anchor (1000, 5)
    clock.now_s = 1_020.0
    await backend.start("a", "general", CONTENT, fresh=True)  # anchor (1020, 6)
    clock.now_s = 1_040.0
    [earlier] = [fake.land("b", ours("b"))]  # a start of b cut short, landed: task 7
    fake.lookups, fake.after_ids = 0, []
    again = await backend.start("b", "general", CONTENT, not_before_s=1_031.0)
    assert (again.already_started, again.backend_id) == (True, str(earlier))
    assert fake.after_ids == [6]  # 1031 - 10 s of skew: the anchor of 1020
    assert fake.imports == [1]  # nothing imported for b

    fake.after_ids = []
    restarted = await backend.start("c", "general", CONTENT, not_before_s=900.0)
    assert not restarted.already_started
    assert fake.after_ids == [None, None]  # no anchor before 890: every task, before and after
    await backend.aclose()


async def test_an_anchor_is_stamped_after_its_answer_arrives() -> None:
    """Task ids are handed out as imports land: an import answered after time passed may show
    ids greater than a task landed meanwhile. Here r's request is recorded (1005) while an
    import of another review is in flight (sent 1000, answered 1010), and r's first start lands
    in that window (task 6, before the import's task 7). An anchor of (1000, 7), stamped
    when the import was sent, would bound r's look-up above 7 and make a second task; (1010,
    7) is no anchor for 1005, and the look-up reads above the anchor of open (1000 - 100 s)."""
    clock = Clock(900.0)
    fake = FakeLabelStudio()
    for i in range(5):
        fake.land(f"old-{i}", ours(f"old-{i}"))
    backend = await opened(fake, clock, clock_skew_s=0)  # anchor (900, 5)
    clock.now_s = 1_000.0
    landed: list[int] = []

    def meanwhile() -> None:
        clock.now_s = 1_005.0  # r recorded; its start sent at once, by another process
        landed.append(fake.land("r", ours("r")))
        clock.now_s = 1_010.0

    fake.meanwhile = meanwhile
    other = await backend.start("other", "general", CONTENT, fresh=True)
    assert (landed, other.backend_id) == ([6], "7")
    again = await backend.start("r", "general", CONTENT, not_before_s=1_005.0)
    await backend.aclose()
    assert (again.already_started, again.backend_id) == (True, "6")
    assert [t["data"][NAME_FIELD] for t in fake.stored.values()].count("r") == 1


async def test_the_bound_allows_for_a_recording_clock_ahead_of_this_one() -> None:
    """r's request was recorded by an instance whose clock is 30 s ahead (1070 there, 1040
    here), and its start landed (task 6) before this backend saw task 7 at 1050. Taken at its
    word, 1070 would pick that anchor and miss task 6; clock_skew_s (60) picks the one before."""
    clock = Clock(1_000.0)
    fake = FakeLabelStudio()
    for i in range(5):
        fake.land(f"old-{i}", ours(f"old-{i}"))
    backend = await opened(fake, clock, clock_skew_s=60)  # anchor (1000, 5)
    clock.now_s = 1_041.0
    landed = fake.land("r", ours("r"))
    clock.now_s = 1_050.0
    await backend.start("other", "general", CONTENT, fresh=True)  # anchor (1050, 7)
    again = await backend.start("r", "general", CONTENT, not_before_s=1_070.0)
    await backend.aclose()
    assert (again.already_started, again.backend_id) == (True, str(landed))
    assert fake.after_ids[-1] == 5
