"""Label Studio's answers are untrusted: every shape a project member can store is read into a
typed rejection, only the router's tagged tasks are reviews, one annotation per annotator
counts, and a label outside the project's choices is rejected (issue 19).

The reader (``labelstudio/stored.py``) is tested table-driven, one malformed shape a row; the
backend against :class:`FakeLabelStudio`, an in-memory Label Studio that stores whatever it is
given, as the real one does (``tests/integration/test_label_studio_untrusted.py`` does the same
over the wire, with the review role running).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from stream_router.errors import ReviewRejected, UpstreamError
from stream_router.labelstudio.backend import FOREIGN, MALFORMED, LabelStudioReviewBackend
from stream_router.labelstudio.client import (
    LabelStudioClient,
    LabelStudioFailed,
    LabelStudioNotFound,
)
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.labelstudio.stored import (
    MAX_ANSWER_CHARS,
    MalformedTask,
    read_form,
    read_identity,
    read_task,
)
from stream_router.labelstudio.tasks import (
    NAME_FIELD,
    TAG_FIELD,
    choice_result,
    tag_key,
    tag_verifies,
    task,
    task_tag,
)
from stream_router.metrics import ReviewMetrics
from stream_router.review.backend import ReviewState, ReviewStatus
from stream_router.review.events import LoopEvent
from stream_router.review.ledger import Entry, State
from stream_router.review.reconciler import Reconciler

LABELS = ["cat", "dog", "bird", "other"]
PARSED = {
    "label": {"type": "Choices", "to_name": ["review"], "labels": LABELS},
    "note": {"type": "TextArea", "to_name": ["review"]},
}
FORM = read_form(PARSED)
KEY = tag_key("token")
CONTENT = {"event": {"text": "a photo"}, "prediction": {"label": "cat", "confidence": 0.4}}
NOW = "2026-01-01T00:00:00Z"
NOW_S = 1_767_225_600.0  #: NOW in epoch seconds: the backends' clock, so no task is overdue
SECRET = "SECRET-VALUE"  #: a value no message may quote


def annotation(annotation_id: int, user: int, label: str = "dog", **fields: Any) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "completed_by": user,
        "result": choice_result(label),
        "was_cancelled": False,
        "lead_time": 2.5,
        "created_at": NOW,
        "updated_at": NOW,
        **fields,
    }


def stored(task_id: int = 7, name: str = "r-1", flow: str = "general", **fields: Any) -> Any:
    """A task as Label Studio answers it, made by the router (tagged) for review ``name``."""
    made = task(name, CONTENT, tag=task_tag(KEY, flow, name))
    return {
        "id": task_id,
        "data": made["data"],
        "meta": {},
        "created_at": NOW,
        "annotations": [annotation(1, user=3)],
        **fields,
    }


def put(*path: Any) -> Callable[[Any], None]:
    """A change setting the value at ``path`` (its last item is the value)."""
    *keys, value = path

    def change(raw: Any) -> None:
        node = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = copy.deepcopy(value)

    return change


def drop(*keys: Any) -> Callable[[Any], None]:
    def change(raw: Any) -> None:
        node = raw
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def nested(depth: int) -> Any:
    value: Any = SECRET
    for _ in range(depth):
        value = {"x": value}
    return value


REGION = ("annotations", 0, "result", 0)
CHOICES = (*REGION, "value", "choices")

#: (shape, change to a good task, where it is malformed, what the reader says is wrong)
MALFORMED_SHAPES: list[tuple[str, Callable[[Any], None], str, str]] = [
    ("data is a list", put("data", [1]), "data", "is a list, not an object"),
    ("data is a string", put("data", SECRET), "data", "is a string, not an object"),
    ("data is null", put("data", None), "data", "is null, not an object"),
    ("no data", drop("data"), "data", "is missing, not an object"),
    ("review_name is a list", put("data", NAME_FIELD, ["r-1"]), "data.review_name", "is a list"),
    ("review_name is a number", put("data", NAME_FIELD, 5), "data.review_name", "is a number"),
    ("review_name is an object", put("data", NAME_FIELD, {"a": 1}), "data.review_name", "object"),
    ("review_name is huge", put("data", NAME_FIELD, SECRET * 10_000), "data.review_name",
     "is 120000 characters long; at most 63"),
    ("review_name is empty", put("data", NAME_FIELD, ""), "data.review_name", "is empty"),
    ("no review_name", drop("data", NAME_FIELD), "data.review_name", "is missing"),
    ("review_tag is an object", put("data", TAG_FIELD, {"v": 1}), "data.review_tag", "object"),
    ("review_tag is huge", put("data", TAG_FIELD, "v1:" + "0" * 500), "data.review_tag",
     "characters long; at most 80"),
    ("content is a list", put("data", "content", [SECRET]), "data.content", "is a list"),
    ("no content", drop("data", "content"), "data.content", "is missing, not an object"),
    ("meta is a list", put("meta", [1]), "meta", "is a list, not an object"),
    ("meta is a string", put("meta", SECRET), "meta", "is a string, not an object"),
    ("meta.stream_router is a list", put("meta", {"stream_router": [1]}), "meta.stream_router",
     "is a list, not an object"),
    ("closed_s is a string", put("meta", {"stream_router": {"closed_s": SECRET}}),
     "meta.stream_router.closed_s", "is a string, not a number"),
    ("closed_s is a boolean", put("meta", {"stream_router": {"closed_s": True}}),
     "meta.stream_router.closed_s", "is a boolean, not a number"),
    ("created_at is a number", put("created_at", 5), "created_at", "is a number, not a string"),
    ("created_at is not a time", put("created_at", SECRET), "created_at", "not an ISO 8601 time"),
    ("created_at is huge", put("created_at", NOW * 100), "created_at", "at most 64"),
    ("annotations is an object", put("annotations", {"0": {}}), "annotations", "not a list"),
    ("annotations is a string", put("annotations", SECRET), "annotations", "not a list"),
    ("101 annotations", put("annotations", [annotation(i, i) for i in range(101)]),
     "annotations", "has 101 items; at most 100 are read"),
    ("an annotation is a string", put("annotations", [SECRET]), "annotations[0]",
     "is a string, not an object"),
    ("an annotation is a list", put("annotations", [[1]]), "annotations[0]", "is a list"),
    ("an annotation without id", drop("annotations", 0, "id"), "annotations[0].id",
     "is missing, not an integer"),
    ("an annotation id is a string", put("annotations", 0, "id", "1"), "annotations[0].id",
     "is a string, not an integer"),
    ("no completed_by", drop("annotations", 0, "completed_by"), "annotations[0].completed_by",
     "is missing, not an integer"),
    ("completed_by is null", put("annotations", 0, "completed_by", None),
     "annotations[0].completed_by", "is null, not an integer"),
    ("completed_by is a name", put("annotations", 0, "completed_by", SECRET),
     "annotations[0].completed_by", "is a string, not an integer"),
    ("completed_by is a boolean", put("annotations", 0, "completed_by", True),
     "annotations[0].completed_by", "is a boolean, not an integer"),
    ("completed_by's id is a list", put("annotations", 0, "completed_by", {"id": [3]}),
     "annotations[0].completed_by.id", "is a list, not an integer"),
    ("was_cancelled is a string", put("annotations", 0, "was_cancelled", "yes"),
     "annotations[0].was_cancelled", "is a string, not a boolean"),
    ("lead_time is a string", put("annotations", 0, "lead_time", SECRET),
     "annotations[0].lead_time", "is a string, not a number"),
    ("lead_time is negative", put("annotations", 0, "lead_time", -5), "annotations[0].lead_time",
     "is negative"),
    ("updated_at is a list", put("annotations", 0, "updated_at", [NOW]),
     "annotations[0].updated_at", "is a list, not a string"),
    ("updated_at has month 13",
        put("annotations", 0, "updated_at", "2026-13-01T00:00:00Z"),
        "annotations[0].updated_at",
        "is not an ISO 8601 time",
    ),
    ("result is a string", put("annotations", 0, "result", SECRET), "annotations[0].result",
     "is a string, not a list"),
    ("result is an object", put("annotations", 0, "result", {"x": 1}), "annotations[0].result",
     "is an object, not a list"),
    ("a region is a string", put("annotations", 0, "result", [SECRET]),
     "annotations[0].result[0]", "is a string, not an object"),
    ("a region is a list", put("annotations", 0, "result", [[1]]), "annotations[0].result[0]",
     "is a list, not an object"),
    ("21 regions", put("annotations", 0, "result", choice_result("dog") * 21),
     "annotations[0].result", "has 21 items; at most 20 are read"),
    ("a region without from_name", drop(*REGION, "from_name"),
     "annotations[0].result[0].from_name", "is missing, not a string"),
    ("from_name is a list", put(*REGION, "from_name", ["label"]),
     "annotations[0].result[0].from_name", "is a list, not a string"),
    ("from_name is huge", put(*REGION, "from_name", SECRET * 100),
     "annotations[0].result[0].from_name", "at most 64"),
    ("from_name names no element", put(*REGION, "from_name", "nope"),
     "annotations[0].result[0].from_name", "names no element of the labeling configuration"),
    ("type is not the element's", put(*REGION, "type", "rating"),
     "annotations[0].result[0].type", "is not element 'label''s type (choices)"),
    ("type is a number", put(*REGION, "type", 5), "annotations[0].result[0].type",
     "is a number, not a string"),
    ("value is a string", put(*REGION, "value", SECRET), "annotations[0].result[0].value",
     "is a string, not an object"),
    ("no value", drop(*REGION, "value"), "annotations[0].result[0].value", "is missing"),
    ("choices is a string", put(*CHOICES, "cat"), "annotations[0].result[0].value.choices",
     "is a string, not a list"),
    ("choices is empty", put(*CHOICES, []), "annotations[0].result[0].value.choices", "is empty"),
    ("no choices", drop(*CHOICES), "annotations[0].result[0].value.choices", "is missing"),
    ("a choice is a number", put(*CHOICES, [1]), "annotations[0].result[0].value.choices[0]",
     "is a number, not a string"),
    ("a choice is an object", put(*CHOICES, [{"label": "cat"}]),
     "annotations[0].result[0].value.choices[0]", "is an object, not a string"),
    ("a label outside the route's classes", put(*CHOICES, [SECRET]),
     "annotations[0].result[0].value.choices[0]", "is not one of element 'label''s 4 choices"),
    ("one label outside of two", put(*CHOICES, ["cat", "Cat"]),
     "annotations[0].result[0].value.choices[1]", "is not one of element 'label''s 4 choices"),
    ("a huge label", put(*CHOICES, [SECRET * 100]), "annotations[0].result[0].value.choices[0]",
     "at most 256"),
    ("51 choices", put(*CHOICES, ["cat"] * 51), "annotations[0].result[0].value.choices",
     "has 51 items; at most 50 are read"),
    ("an element answered twice", put("annotations", 0, "result",
     choice_result("cat") + choice_result("dog")), "annotations[0].result[1]",
     "answers element 'label' again"),
    ("textarea text is a string", put("annotations", 0, "result",
     [{"from_name": "note", "type": "textarea", "value": {"text": SECRET}}]),
     "annotations[0].result[0].value.text", "is a string, not a list"),
    ("textarea text holds a number", put("annotations", 0, "result",
     [{"from_name": "note", "type": "textarea", "value": {"text": [5]}}]),
     "annotations[0].result[0].value.text[0]", "is a number, not a string"),
    ("textarea text is huge", put("annotations", 0, "result",
     [{"from_name": "note", "type": "textarea", "value": {"text": [SECRET * 2000]}}]),
     "annotations[0].result[0].value.text[0]", "at most 16384"),
    ("a skipped annotation with junk", put("annotations", [annotation(1, 3), annotation(
     2, 4, was_cancelled=True, result=[SECRET])]), "annotations[1].result[0]", "is a string"),
    ("the second annotation is junk", put("annotations", [annotation(1, 3), [SECRET]]),
     "annotations[1]", "is a list, not an object"),
]  # fmt: skip

#: shapes a project without a described labeling configuration reads (no element to check)
UNCHECKED_SHAPES: list[tuple[str, Any, str, str]] = [
    ("nested junk past orjson's depth", [{"from_name": "x", "type": "rating",
     "value": nested(300)}], "annotations[0].result", "is nested too deeply"),
    ("a huge answer of another type", [{"from_name": "x", "type": "rating",
     "value": {"v": SECRET * 2000}}], "annotations[0].result",
     f"characters of JSON; at most {MAX_ANSWER_CHARS}"),
    ("many regions adding up", [{"from_name": f"t{i}", "type": "textarea",
     "value": {"text": [SECRET * 100]}} for i in range(20)], "annotations[0].result",
     f"characters of JSON; at most {MAX_ANSWER_CHARS}"),
    ("choices of a Choices element are still read", [{"from_name": "x", "type": "Choices",
     "value": {"choices": [7]}}], "annotations[0].result[0].value.choices[0]",
     "is a number, not a string"),
]  # fmt: skip


def malformed(raw: Any, form: Any = FORM) -> MalformedTask:
    with pytest.raises(MalformedTask) as raised:
        read_task(raw, form)
    return raised.value


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        pytest.param(change, where, problem, id=shape)
        for shape, change, where, problem in MALFORMED_SHAPES
    ],
)
def test_each_malformed_shape_is_a_typed_rejection_naming_where_never_the_value(
    change: Callable[[Any], None], where: str, problem: str
) -> None:
    raw = stored()
    change(raw)
    error = malformed(raw)
    assert isinstance(error, ReviewRejected)  # what the scheduler dead-letters as unreadable
    assert not error.retriable
    assert (error.task_id, error.where) == (7, where)
    assert problem in error.problem
    assert str(error) == f"Label Studio task 7 is malformed: {where} {error.problem}"
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("result", "where", "problem"),
    [
        pytest.param(result, where, problem, id=shape)
        for shape, result, where, problem in UNCHECKED_SHAPES
    ],
)
def test_answers_are_bounded_where_no_labeling_configuration_says_what_they_are(
    result: Any, where: str, problem: str
) -> None:
    raw = stored()
    raw["annotations"][0]["result"] = result
    error = malformed(raw, form=None)
    assert (error.where, problem in error.problem) == (where, True)
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("raw", "where", "problem"),
    [
        ([stored()], "the task", "is a list, not an object"),
        (SECRET, "the task", "is a string, not an object"),
        ({"data": {}}, "id", "is missing, not an integer"),
        ({"id": "7", "data": {}}, "id", "is a string, not an integer"),
        ({"id": True, "data": {}}, "id", "is a boolean, not an integer"),
    ],
)
def test_a_task_without_an_id_is_malformed_without_one(raw: Any, where: str, problem: str) -> None:
    error = malformed(raw)
    assert (error.task_id, error.where, error.problem) == (None, where, problem)
    assert str(error).startswith("Label Studio a task is malformed")


def test_what_label_studio_answers_for_a_sound_task_reads_in_every_form_it_takes() -> None:
    raw = stored(meta=None, annotations=[
        annotation(5, {"id": 4}, "cat", updated_at=None, lead_time=None),  # the task page's form
        annotation(2, 3, "dog"),
        annotation(9, 6, result=None, was_cancelled=None),
        annotation(8, 5, result=[{"from_name": "note", "type": "textarea",
                                  "value": {"text": ["", "a note"]}}]),
    ])  # fmt: skip
    del raw["created_at"]
    found = read_task(raw, FORM)
    assert (found.name, found.closed_s, found.created_s, found.meta) == ("r-1", None, None, {})
    assert [a.annotation_id for a in found.annotations] == [2, 5, 8, 9]  # by id
    assert [a.annotator for a in found.annotations] == ["3", "4", "5", "6"]
    assert found.annotations[1].content == {"label": {"label": "cat"}}
    assert found.annotations[1].submitted_s == found.annotations[0].submitted_s  # created_at
    assert found.annotations[2].content == {"note": ["", "a note"]}
    assert found.annotations[3].content == {}
    [answer] = [a.answer() for a in found.annotations[:1]]
    assert (answer.worker_id, answer.time_spent_s) == ("3", 2.5)
    assert answer.accepted_at_s == pytest.approx(answer.submitted_at_s - 2.5)  # type: ignore[operator]
    assert read_identity({"id": 1, "data": {"other": 1}}).name is None  # no review's task


def test_without_a_described_configuration_other_elements_are_kept_as_written() -> None:
    raw = stored()
    raw["annotations"][0]["result"] = [
        {"from_name": "box", "type": "RectangleLabels", "value": {"x": 1, "labels": ["a"]}},
        {"from_name": "label", "type": "choices", "value": {"choices": ["not-a-class"]}},
    ]
    [only] = read_task(raw, None).annotations
    assert only.content == {"box": {"x": 1, "labels": ["a"]}, "label": {"label": "not-a-class"}}


def test_the_form_is_the_projects_answerable_elements_and_their_choices() -> None:
    assert FORM is not None
    assert FORM["label"].kind == "choices"
    assert FORM["label"].choices == frozenset(LABELS)
    assert FORM["note"].choices is None
    dynamic = read_form({"label": {"type": "Choices", "labels": []}, "junk": [1], "t": {"x": 1}})
    assert dynamic is not None
    assert list(dynamic) == ["label"]
    assert dynamic["label"].choices is None  # value="$options": any string
    assert read_form(None) is None
    assert read_form([1]) is None


# -- one annotation per annotator ------------------------------------------------------------


def test_one_annotation_per_annotator_counts_their_first_that_was_not_skipped() -> None:
    raw = stored(annotations=[
        annotation(4, 3, "cat"),  # user 3 again, later: left out
        annotation(1, 3, "dog"),
        annotation(2, 5, "bird", was_cancelled=True),  # user 5 skipped first...
        annotation(6, 5, "other"),  # ... then answered: this one counts
        annotation(3, {"id": 3}, "bird"),  # user 3 as a task page gives the user
    ])  # fmt: skip
    counted = read_task(raw, FORM).counted()
    assert [(a.annotator, a.content["label"]["label"]) for a in counted] == [
        ("3", "dog"),
        ("5", "other"),
    ]


# -- the tag ------------------------------------------------------------------------------------


def test_the_tag_binds_key_flow_and_name() -> None:
    tag = task_tag(KEY, "general", "r-1")
    assert tag.startswith("v1:")
    assert len(tag) == 67
    assert tag_verifies(KEY, "general", "r-1", tag)
    assert not tag_verifies(KEY, "general", "r-2", tag)
    assert not tag_verifies(KEY, "experts", "r-1", tag)
    assert not tag_verifies(tag_key("another token"), "general", "r-1", tag)
    assert not tag_verifies(KEY, "general", "r-1", None)
    assert not tag_verifies(KEY, "general", "r-1", tag.upper())
    assert task_tag(KEY, "general", "r-1") == tag  # deterministic: a restart verifies it
    assert task("r-1", CONTENT, tag=tag)["data"][TAG_FIELD] == tag
    assert TAG_FIELD not in task("r-1", CONTENT)["data"]


# -- the backend over an in-memory Label Studio ----------------------------------------------


class FakeLabelStudio:
    """One project (id 1) that stores any JSON it is given; tasks whose id is in ``failing``
    make it answer 500, as Label Studio does for a task whose data a member made a number."""

    def __init__(self, parsed: Any = PARSED, maximum_annotations: int = 3) -> None:
        self.parsed = parsed
        self.maximum_annotations = maximum_annotations
        self.stored: dict[int, Any] = {}
        self.failing: set[int] = set()
        self.deleted: list[int] = []
        self.next_id = 100

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def projects(self) -> list[dict[str, Any]]:
        project = {"id": 1, "title": "General", "maximum_annotations": self.maximum_annotations}
        if self.parsed is not None:
            project["parsed_label_config"] = self.parsed
        return [project]

    def put(self, raw: Any) -> int:
        """Store a task as a member would (import, then PATCH anything)."""
        task_id = raw["id"] if isinstance(raw, dict) and "id" in raw else self.next_id
        self.next_id = max(self.next_id, task_id) + 1
        self.stored[task_id] = copy.deepcopy(raw)
        return task_id

    async def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        return [self.put({"id": self.next_id, "data": dict(t["data"]), "meta": {},
                          "created_at": NOW, "annotations": []}) for t in tasks]  # fmt: skip

    async def highest_task_id(self, project_id: int) -> int | None:
        highest = max(self.stored, default=None)
        if highest in self.failing:
            raise LabelStudioFailed("GET /api/tasks: 500 boom")
        return highest

    async def task(self, task_id: int) -> object:
        if task_id in self.failing:
            raise LabelStudioFailed(f"GET /api/tasks/{task_id}: 500 boom")
        if task_id not in self.stored:
            raise LabelStudioNotFound(f"GET /api/tasks/{task_id}: 404")
        return copy.deepcopy(self.stored[task_id])

    async def tasks(
        self, project_id: int, *, query: str | None = None, page_size: int = 100
    ) -> AsyncIterator[object]:
        items = orjson.loads(query)["filters"]["items"] if query else []
        for task_id, raw in sorted(self.stored.items()):
            if task_id in self.failing:
                continue  # the client's listing leaves out what Label Studio fails on
            if all(self._matches(raw, item) for item in items):
                yield copy.deepcopy(raw)

    @staticmethod
    def _matches(raw: Any, item: dict[str, Any]) -> bool:
        data = raw.get("data") if isinstance(raw, dict) else None
        if item["filter"] == "filter:tasks:total_annotations":
            annotations = raw.get("annotations")
            return len(annotations if isinstance(annotations, list) else []) < item["value"]
        assert item["operator"] == "contains", "names are looked up with contains"
        held = data.get(NAME_FIELD) if isinstance(data, dict) else None
        return held is not None and item["value"] in orjson.dumps(held).decode()

    async def update_task(self, task_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        self.stored[task_id].update(copy.deepcopy(dict(changes)))
        return dict(self.stored[task_id])

    async def delete_task(self, task_id: int) -> bool:
        self.deleted.append(task_id)
        return self.stored.pop(task_id, None) is not None


class Opened:
    """A backend over a fake, and what it told its hooks."""

    def __init__(self, fake: FakeLabelStudio, settings: LabelStudioSettings) -> None:
        self.fake = fake
        self.ignored: list[str] = []
        self.removed: list[int] = []
        self.backend = LabelStudioReviewBackend(
            settings,
            clock=lambda: NOW_S + 60,
            ignored=self.ignored.append,
            removed=lambda: self.removed.append(1),
        )
        self.backend.client = fake  # type: ignore[assignment]


async def opened(
    fake: FakeLabelStudio | None = None,
    *,
    required: int = 1,
    token: str = "token",  # noqa: S107 - a test's
    **more: Any,
) -> Opened:
    settings = LabelStudioSettings(
        api_token=SecretStr(token),
        projects={"general": {"project": "General", "annotations_per_task": required}},
        **more,
    )
    result = Opened(fake or FakeLabelStudio(), settings)
    await result.backend.open()
    return result


async def listed(backend: LabelStudioReviewBackend) -> list[str]:
    return [state.name async for state in backend.pending("general")]


@pytest.mark.parametrize(
    ("change", "where"),
    [pytest.param(change, where, id=shape) for shape, change, where, _ in MALFORMED_SHAPES],
)
async def test_a_malformed_task_ends_its_review_as_an_unreadable_output(
    change: Callable[[Any], None], where: str
) -> None:
    """Whatever a member stored, no exception but ``ReviewRejected`` leaves the backend: the
    review's describe says Completed (it ended), its fetch raises ``MalformedTask``, which the
    scheduler dead-letters as OutputUnreadable (as for A2I's unreadable output.json)."""
    ls = await opened()
    started = await ls.backend.start("r-1", "general", CONTENT)
    task_id = int(started.backend_id)
    raw = stored(task_id=task_id)
    change(raw)
    ls.fake.stored[task_id] = raw
    assert await listed(ls.backend) == []  # left out, never raised
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert (state.status, state.flow) == (ReviewStatus.COMPLETED, "general")
    assert state.output_uri is not None
    assert state.output_uri.endswith(f"/api/tasks/{task_id}")
    assert state.failure_reason is not None
    assert SECRET not in state.failure_reason
    assert f"task {task_id} is malformed: {where} " in state.failure_reason
    for _ in range(2):  # from the describe's read, then read again (another process)
        with pytest.raises(
            ReviewRejected, match=re.escape(f"task {task_id} is malformed: {where} ")
        ):
            await ls.backend.fetch_result(state)


async def test_the_listing_skips_what_it_cannot_read_and_warns_once_per_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ls = await opened()
    good = [int((await ls.backend.start(f"r-{i}", "general", CONTENT)).backend_id)
            for i in range(3)]  # fmt: skip
    poisoned = stored(task_id=good[1], name="r-1", annotations=[])
    poisoned["meta"] = [1]  # the security review's PATCH
    ls.fake.stored[good[1]] = poisoned
    ls.fake.put({"id": 500, "data": [1]})  # no review's: not even an object
    ls.fake.put({"id": 501, "data": {NAME_FIELD: ["r-0"]}})
    ls.fake.put({"id": 502, "data": {"other": "task"}})  # a task of someone else's: silent
    ls.fake.put({"id": 503, "data": task("r-7", CONTENT)["data"], "annotations": []})  # untagged
    caplog.set_level(logging.WARNING)
    assert await listed(ls.backend) == ["r-0", "r-2"]
    assert await listed(ls.backend) == ["r-0", "r-2"]
    assert sorted(ls.ignored) == [FOREIGN] + [MALFORMED] * 3  # good[1], 500, 501, 503: once
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert any(f"task {good[1]} is malformed: meta is a list" in w for w in warnings)


async def test_a_task_label_studio_fails_on_ends_its_review_when_it_lists_others() -> None:
    ls = await opened()
    task_id = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    ls.fake.stored[task_id]["data"] = 5  # Label Studio answers 500 for it from now on
    ls.fake.failing.add(task_id)
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert state.status is ReviewStatus.COMPLETED
    with pytest.raises(ReviewRejected, match=r"fails in Label Studio .* not listed under r-1"):
        await ls.backend.fetch_result(state)


async def test_a_5xx_on_a_sound_task_is_read_through_the_listing_of_its_name() -> None:
    ls = await opened()
    task_id = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    ls.fake.stored[task_id]["annotations"] = [annotation(1, 3, "bird")]
    real_task = ls.fake.task

    async def flaky(asked: int) -> object:
        if asked == task_id:
            raise LabelStudioFailed("GET: 502 bad gateway")
        return await real_task(asked)

    ls.fake.task = flaky  # type: ignore[method-assign]
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert state.status is ReviewStatus.COMPLETED
    [answer] = (await ls.backend.fetch_result(state)).answers
    assert answer.content == {"label": {"label": "bird"}}


# -- the HMAC adoption rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(None, id="untagged"),
        pytest.param(task_tag(KEY, "general", "r-2"), id="another name's tag"),
        pytest.param(task_tag(KEY, "experts", "r-1"), id="another flow's tag"),
        pytest.param(task_tag(tag_key("a guessed key"), "general", "r-1"), id="another key"),
        pytest.param("v1:" + "0" * 64, id="a made-up tag"),
    ],
)
async def test_a_task_the_router_did_not_tag_is_never_adopted_nor_deleted(
    tag: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    ls = await opened()
    squatter = task("r-1", {**CONTENT, "prediction": {"label": "dog"}}, tag=tag)
    ls.fake.put({"id": 50, "data": squatter["data"], "meta": {}, "created_at": NOW,
                 "annotations": [annotation(1, 9, "dog")]})  # fmt: skip
    caplog.set_level(logging.WARNING)
    assert await ls.backend.describe("r-1") is None  # not the review's
    started = await ls.backend.start("r-1", "general", CONTENT)
    assert not started.already_started  # the review gets its own task
    assert int(started.backend_id) != 50
    assert 50 in ls.fake.stored
    assert ls.fake.deleted == []
    assert await listed(ls.backend) == ["r-1"]
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert state.status is ReviewStatus.IN_PROGRESS
    assert ls.ignored == [FOREIGN]  # once, however often it is seen
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "task 50 of project 1 is under review name r-1 but was not made by this router" in (
        warning
    )


async def test_an_exact_copy_of_a_routers_task_is_a_duplicate_and_deleted() -> None:
    ls = await opened()
    first = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    ls.fake.put({**copy.deepcopy(ls.fake.stored[first]), "id": first + 10})  # tag and all
    assert await listed(ls.backend) == ["r-1"]
    assert ls.fake.deleted == [first + 10]
    assert ls.removed == [1]
    assert ls.ignored == []


async def test_the_tag_key_is_task_tag_key_else_derived_from_the_token() -> None:
    fake = FakeLabelStudio()
    before = await opened(fake, token="old-token", task_tag_key=SecretStr("k"))
    started = await before.backend.start("r-1", "general", CONTENT)
    # The token changes; task_tag_key keeps the tasks the router's.
    kept = await opened(fake, token="new-token", task_tag_key=SecretStr("k"))
    again = await kept.backend.start("r-1", "general", CONTENT)
    assert again.already_started
    assert again.backend_id == started.backend_id
    # Without task_tag_key, the key is the token's: a new token disowns the task.
    tokened = await opened(fake, token="old-token")
    assert await tokened.backend.describe("r-1") is None
    assert tokened.ignored == [FOREIGN]


async def test_a_name_or_tag_changed_under_the_router_ends_the_review() -> None:
    ls = await opened()
    for name, change in (("r-1", put("data", NAME_FIELD, "r-9")), ("r-2", put("data", TAG_FIELD,
                         task_tag(KEY, "general", "r-9")))):  # fmt: skip
        task_id = int((await ls.backend.start(name, "general", CONTENT)).backend_id)
        change(ls.fake.stored[task_id])
        state = await ls.backend.describe(name)  # the task it knows by id
        assert state is not None
        assert state.status is ReviewStatus.COMPLETED
        with pytest.raises(ReviewRejected, match=f"task {task_id} is malformed: data.review_"):
            await ls.backend.fetch_result(state)


# -- one annotation per annotator, labels outside the classes --------------------------------


async def test_one_annotators_many_annotations_count_once() -> None:
    ls = await opened(required=2)
    task_id = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    same = [annotation(i, 3, "dog") for i in (1, 2, 3)]
    ls.fake.stored[task_id]["annotations"] = same
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert state.status is ReviewStatus.IN_PROGRESS
    ls.fake.stored[task_id]["annotations"] = [*same, annotation(4, 4, "cat"),
                                              annotation(5, 5, "bird")]  # fmt: skip
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert state.status is ReviewStatus.COMPLETED
    result = await ls.backend.fetch_result(state)
    assert [(a.worker_id, a.content["label"]["label"]) for a in result.answers] == [
        ("3", "dog"),
        ("4", "cat"),  # the first two annotators; user 5 came later
    ]


async def test_annotations_removed_after_completion_are_a_rejection_not_fewer_answers() -> None:
    ls = await opened(required=2)
    task_id = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    state = ReviewState("r-1", ReviewStatus.COMPLETED, "general",
                        output_uri=f"http://127.0.0.1:8080/api/tasks/{task_id}")  # fmt: skip
    ls.fake.stored[task_id]["annotations"] = [annotation(1, 3)]
    with pytest.raises(ReviewRejected, match="annotations of 1 of the 2 annotator"):
        await ls.backend.fetch_result(state)


async def test_a_label_outside_the_projects_choices_is_a_rejection() -> None:
    ls = await opened()
    task_id = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    ls.fake.stored[task_id]["annotations"] = [annotation(1, 3, "wolf")]
    state = await ls.backend.describe("r-1")
    assert state is not None
    assert state.status is ReviewStatus.COMPLETED
    with pytest.raises(ReviewRejected) as raised:
        await ls.backend.fetch_result(state)
    assert "value.choices[0] is not one of element 'label''s 4 choices" in str(raised.value)
    assert "wolf" not in str(raised.value)


async def test_without_a_described_configuration_labels_are_not_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    ls = await opened(FakeLabelStudio(parsed=None))
    assert any("describes no labeling configuration" in r.getMessage() for r in caplog.records)
    task_id = int((await ls.backend.start("r-1", "general", CONTENT)).backend_id)
    ls.fake.stored[task_id]["annotations"] = [annotation(1, 3, "wolf")]
    state = await ls.backend.describe("r-1")
    assert state is not None
    [answer] = (await ls.backend.fetch_result(state)).answers
    assert answer.content == {"label": {"label": "wolf"}}


# -- the reconciler keeps going ---------------------------------------------------------------


async def test_the_reconciler_ends_a_poisoned_review_and_finishes_the_others() -> None:
    """The security review's crash: ``meta`` PATCHed to ``[1]`` killed the reconciler with
    AttributeError. Now its sweep ends that review (Completed, unreadable) with the rest."""
    ls = await opened()
    ids = {name: int((await ls.backend.start(name, "general", CONTENT)).backend_id)
           for name in ("before", "poisoned", "after", "open")}  # fmt: skip
    for name in ("before", "after"):
        ls.fake.stored[ids[name]]["annotations"] = [annotation(1, 3, "dog")]
    ls.fake.stored[ids["poisoned"]]["meta"] = [1]
    emitted: list[LoopEvent] = []

    async def emit(event: LoopEvent) -> None:
        emitted.append(event)

    entries = [Entry(name, State.STARTED, 1, "general", 0.0, 0.0, None, started_s=0.0)
               for name in ids]  # fmt: skip
    metrics = ReviewMetrics(CollectorRegistry())
    reconciler = Reconciler(
        ls.backend, lambda: entries, emit, metrics, grace_s=0.0, clock=lambda: 1.0
    )
    await reconciler.sweep()
    assert {event.name: event.status for event in emitted} == {
        "before": ReviewStatus.COMPLETED,
        "poisoned": ReviewStatus.COMPLETED,
        "after": ReviewStatus.COMPLETED,
    }
    poisoned = next(event for event in emitted if event.name == "poisoned")
    assert poisoned.failure_reason is not None
    assert "meta is a list" in poisoned.failure_reason


# -- the client ---------------------------------------------------------------------------------


class PagedLabelStudio(LabelStudioClient):
    """Label Studio's paging of ``count`` tasks; positions in ``failing`` fail (500) any page
    holding them; with ``down`` every page fails."""

    def __init__(self, count: int, failing: set[int], down: bool = False) -> None:
        super().__init__("http://127.0.0.1:1", "token", unserved=self.note)
        self.count, self.failing, self.down = count, failing, down
        self.unserved_calls: list[int] = []

    def note(self, project_id: int, error: LabelStudioFailed) -> None:
        self.unserved_calls.append(project_id)

    async def task_page(
        self, project_id: int, page: int, *, query: str | None = None, page_size: int = 100
    ) -> list[object] | None:
        positions = range((page - 1) * page_size + 1, min(page * page_size, self.count) + 1)
        if not positions and not self.down:
            return None  # past the last page: 404
        if self.down or self.failing & set(positions):
            raise LabelStudioFailed(f"GET /api/tasks: 500 page {page}")
        return [{"id": position} for position in positions]


async def test_a_listing_leaves_out_the_tasks_label_studio_fails_on() -> None:
    client = PagedLabelStudio(count=7, failing={2, 6})
    listed = [t async for t in client.tasks(1, page_size=3)]  # type: ignore[index]
    assert [t["id"] for t in listed] == [1, 3, 4, 5, 7]  # type: ignore[index]
    assert client.unserved_calls == [1, 1]


async def test_a_listing_raises_when_label_studio_answers_nothing_of_the_page() -> None:
    for client in (PagedLabelStudio(count=3, failing=set(), down=True),
                   PagedLabelStudio(count=2, failing={1, 2})):  # fmt: skip
        with pytest.raises(LabelStudioFailed):
            _ = [t async for t in client.tasks(1, page_size=2)]
    only = PagedLabelStudio(count=1, failing={1})  # the broken task alone: the end answers
    assert [t async for t in only.tasks(1, page_size=5)] == []
    assert only.unserved_calls == [1]


async def test_an_answer_that_is_not_label_studios_is_a_retriable_upstream_error() -> None:
    class Answering(LabelStudioClient):
        def __init__(self, answer: Any) -> None:
            super().__init__("http://127.0.0.1:1", "token")
            self.answer = answer

        async def request(self, method: str, path: str, **kwargs: Any) -> Any:
            return self.answer

    async def listing(client: LabelStudioClient) -> list[object]:
        return [t async for t in client.tasks(1)]

    for answer in ([1], {"tasks": {"a": 1}}, None):
        with pytest.raises(UpstreamError) as raised:
            await listing(Answering(answer))
        assert raised.value.retriable
    with pytest.raises(UpstreamError) as raised:
        await Answering({"task_ids": [1, "2"]}).import_tasks(1, [{"data": {}}])
    assert raised.value.retriable


async def test_a_newest_task_label_studio_fails_on_does_not_stop_open() -> None:
    """Open anchors look-ups at the project's newest task; one Label Studio fails to list
    (a member made its data a number) leaves none, and starts look names up in every task."""
    fake = FakeLabelStudio()
    fake.failing.add(fake.put({"id": 900, "data": 5}))
    ls = await opened(fake)
    assert len(ls.backend.anchors) == 0
    started = await ls.backend.start("r-1", "general", CONTENT, not_before_s=NOW_S)
    assert not started.already_started
    again = await ls.backend.start("r-1", "general", CONTENT, not_before_s=NOW_S)
    assert (again.already_started, again.backend_id) == (True, started.backend_id)
