"""What Label Studio answers about a review's task, read as untrusted input.

Any member of a project can store JSON of any shape in a task's ``data`` and ``meta``
(``PATCH /api/tasks/<id>``), and in an annotation's ``result`` (a list of any objects),
``lead_time`` and ``was_cancelled``, and can post an annotation with any ``completed_by``;
Label Studio keeps it as given. This module is the one place the Label Studio backend reads
such answers, as ``aws/a2i_output.py`` reads A2I's output.json: :func:`read_task` turns a task
into a :class:`StoredTask` of checked types, :func:`read_identity` reads just what a look-up
needs, and either raises :class:`MalformedTask` (a ``ReviewRejected``) naming the task, where
and what is wrong, never the value. What a malformed task means for its review is the
backend's to say (``backend.py``: the review ends, dead-lettered as ``OutputUnreadable``).

What is read, and what is malformed:

=========================  ====================================================================
the task                   an object with an integer ``id``
``data``                   an object; ``review_name`` missing or null (not a review's task) or
                           a string of 1-63 characters; ``review_tag`` missing, null or a
                           string of at most 80; ``content`` an object
``meta``                   missing, null or an object; its ``stream_router`` missing, null or
                           an object whose ``closed_s`` is missing, null or a finite number
``created_at``             missing, null or an ISO 8601 time of at most 64 characters
``annotations``            missing, null or a list of at most 100 annotations
an annotation              an object: an integer ``id``; ``completed_by`` an integer user id
                           (or an object with one, as a task's own page gives it);
                           ``was_cancelled`` missing, null or a boolean; ``lead_time`` missing,
                           null or a finite number >= 0; ``created_at``/``updated_at`` as the
                           task's; ``result`` missing, null or a list of at most 20 regions
a region                   an object: ``from_name`` a string of at most 64 characters naming an
                           element of the project's labeling configuration, ``type`` that
                           element's type, ``value`` an object; one region per element
a choices value            ``choices``: 1-50 strings of at most 256 characters, each one of the
                           element's choices (for the review form: the route's labels)
a textarea value           ``text``: at most 20 strings
an annotation's answer     (:func:`~stream_router.labelstudio.tasks.answer_content`) at most
                           16,384 characters of JSON
=========================  ====================================================================

A project whose labeling configuration Label Studio does not describe (no
``parsed_label_config``) has no :class:`Control` to check regions against: their shapes are
still read, their element names and choices are not checked. A Choices element without fixed
choices (``value="$options"``) takes any string.

**One annotation per annotator** (:meth:`StoredTask.counted`): of the annotations of one user
(``completed_by``), the first one that was not skipped (the lowest id) counts; later ones of the
same user are left out, as an edit would have been the way to change an answer. Label Studio
lets a member post an annotation naming any user as ``completed_by``, so this stops one user's
repeated submissions, not a member who means to pose as others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_router.errors import ReviewRejected
from stream_router.labelstudio.tasks import CONTENT_FIELD, NAME_FIELD, TAG_FIELD, answer_content
from stream_router.naming import MAX_LENGTH as MAX_NAME_CHARS
from stream_router.review.backend import WorkerAnswer

META_KEY = "stream_router"  #: the task meta key the backend writes (``closed_s``)
MAX_TAG_CHARS = 80  #: a tag is 67 characters (``v1:`` and 64 hex digits)
MAX_TIME_CHARS = 64
MAX_ANNOTATIONS = 100  #: annotations of one task read at most; more is malformed
MAX_REGIONS = 20  #: regions of one annotation
MAX_ELEMENT_CHARS = 64  #: a region's ``from_name`` and ``type``
MAX_CHOICES = 50  #: choices of one region
MAX_LABEL_CHARS = 256  #: one choice
MAX_TEXTS = 20  #: texts of one textarea region
MAX_ANSWER_CHARS = 16_384  #: one annotation's answer content, as JSON

_MISSING: Any = object()


class MalformedTask(ReviewRejected):
    """A task Label Studio answered in a shape the backend does not read (module docstring)."""

    def __init__(self, task_id: int | None, where: str, problem: str) -> None:
        which = "a task" if task_id is None else f"task {task_id}"
        super().__init__(f"Label Studio {which} is malformed: {where} {problem}")
        self.task_id = task_id
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class Control:
    """One element of a project's labeling configuration that annotators answer."""

    kind: str  #: Label Studio's tag name in lower case, as results write it: ``choices``
    choices: frozenset[str] | None = None  #: a Choices element's fixed choices


Form = Mapping[str, Control]  #: the answerable elements of a project, by name


@dataclass(frozen=True)
class TaskIdentity:
    """What a look-up needs of a task: whose review it is, and the tag that says so."""

    task_id: int
    name: str | None  #: None: the task has no ``review_name`` (it is no review's)
    tag: str | None


@dataclass(frozen=True)
class StoredAnnotation:
    annotation_id: int
    annotator: str  #: the ``completed_by`` user id
    skipped: bool
    content: Mapping[str, Any]  #: the answer, as an A2I answerContent
    submitted_s: float | None  #: ``updated_at``, else ``created_at``
    time_spent_s: float | None  #: ``lead_time``

    def answer(self) -> WorkerAnswer:
        submitted, spent = self.submitted_s, self.time_spent_s
        accepted = submitted - spent if submitted is not None and spent is not None else None
        return WorkerAnswer(self.annotator, self.content, accepted, submitted, spent)


@dataclass(frozen=True)
class StoredTask:
    task_id: int
    name: str
    tag: str | None
    content: Mapping[str, Any]  #: the InputContent the task was made with
    meta: Mapping[str, Any]
    created_s: float | None
    closed_s: float | None  #: when the backend closed it (``meta.stream_router.closed_s``)
    annotations: tuple[StoredAnnotation, ...]  #: every annotation, by id

    def counted(self) -> tuple[StoredAnnotation, ...]:
        """One annotation per annotator: each one's first that was not skipped, by id."""
        first: dict[str, StoredAnnotation] = {}
        for annotation in self.annotations:
            if not annotation.skipped:
                first.setdefault(annotation.annotator, annotation)
        return tuple(first.values())


def read_form(parsed_label_config: object) -> dict[str, Control] | None:
    """The answerable elements of a project's ``parsed_label_config``; None without one."""
    if not isinstance(parsed_label_config, dict):
        return None
    form: dict[str, Control] = {}
    for name, element in parsed_label_config.items():
        if not isinstance(element, dict) or not isinstance(element.get("type"), str):
            continue
        kind = element["type"].lower()
        labels = element.get("labels")
        choices = None
        if kind == "choices" and isinstance(labels, list):
            choices = frozenset(label for label in labels if isinstance(label, str)) or None
        form[str(name)] = Control(kind, choices)
    return form or None


def read_identity(raw: object) -> TaskIdentity:
    """The task's id, review name and tag; ``MalformedTask`` if they cannot be read."""
    task = _task(raw)
    task_id = task["id"]
    try:
        data = _object(task.get("data", _MISSING), "data")
        name = _optional_string(data.get(NAME_FIELD), f"data.{NAME_FIELD}", MAX_NAME_CHARS)
        tag = _optional_string(data.get(TAG_FIELD), f"data.{TAG_FIELD}", MAX_TAG_CHARS)
    except _Bad as bad:
        raise MalformedTask(task_id, bad.where, bad.problem) from bad
    return TaskIdentity(task_id, name, tag)


def read_task(raw: object, form: Form | None) -> StoredTask:
    """The whole task, each annotation's answer checked against ``form``; ``MalformedTask``
    (naming what is wrong) if any of it cannot be read (see the module doc)."""
    identity = read_identity(raw)
    task = _task(raw)
    if identity.name is None:
        raise MalformedTask(identity.task_id, f"data.{NAME_FIELD}", "is missing")
    try:
        content = _object(task["data"].get(CONTENT_FIELD, _MISSING), f"data.{CONTENT_FIELD}")
        meta = _object(task.get("meta"), "meta", optional=True)
        mine = _object(meta.get(META_KEY), f"meta.{META_KEY}", optional=True)
        closed_s = _optional_number(mine.get("closed_s"), f"meta.{META_KEY}.closed_s")
        created_s = _time(task.get("created_at"), "created_at")
        entries = _list(task.get("annotations"), "annotations", MAX_ANNOTATIONS, optional=True)
        annotations = [
            _annotation(entry, f"annotations[{index}]", form) for index, entry in enumerate(entries)
        ]
    except _Bad as bad:
        raise MalformedTask(identity.task_id, bad.where, bad.problem) from bad
    return StoredTask(
        task_id=identity.task_id,
        name=identity.name,
        tag=identity.tag,
        content=content,
        meta=meta,
        created_s=created_s,
        closed_s=closed_s,
        annotations=tuple(sorted(annotations, key=lambda a: a.annotation_id)),
    )


# -- the readers -------------------------------------------------------------------------------


class _Bad(Exception):
    """What is wrong where; :func:`read_task` and :func:`read_identity` add the task's id."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")
        self.where = where
        self.problem = problem


def _task(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MalformedTask(None, "the task", f"is {_kind(raw)}, not an object")
    task_id = raw.get("id", _MISSING)
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise MalformedTask(None, "id", f"is {_kind(task_id)}, not an integer")
    return raw


def _annotation(entry: object, where: str, form: Form | None) -> StoredAnnotation:
    annotation = _object(entry, where)
    who: Any = annotation.get("completed_by", _MISSING)
    who_at = f"{where}.completed_by"
    if isinstance(who, dict):  # a task's own page expands the user
        who, who_at = who.get("id", _MISSING), f"{who_at}.id"
    created_s = _time(annotation.get("created_at"), f"{where}.created_at")
    updated_s = _time(annotation.get("updated_at"), f"{where}.updated_at")
    spent = _optional_number(annotation.get("lead_time"), f"{where}.lead_time")
    if spent is not None and spent < 0:
        raise _Bad(f"{where}.lead_time", "is negative")
    skipped = annotation.get("was_cancelled")
    if skipped is not None and not isinstance(skipped, bool):
        raise _Bad(f"{where}.was_cancelled", f"is {_kind(skipped)}, not a boolean")
    regions = _list(annotation.get("result"), f"{where}.result", MAX_REGIONS, optional=True)
    return StoredAnnotation(
        annotation_id=_integer(annotation.get("id", _MISSING), f"{where}.id"),
        annotator=str(_integer(who, who_at)),
        skipped=bool(skipped),
        content=_answer(regions, f"{where}.result", form),
        submitted_s=updated_s if updated_s is not None else created_s,
        time_spent_s=spent,
    )


def _answer(regions: Sequence[object], where: str, form: Form | None) -> dict[str, Any]:
    """The answer content of an annotation's result, each region checked (module doc)."""
    checked: list[dict[str, Any]] = []
    answered: set[str] = set()
    for index, entry in enumerate(regions):
        region = _region(entry, f"{where}[{index}]", form)
        if region["from_name"] in answered:
            raise _Bad(f"{where}[{index}]", f"answers element {region['from_name']!r} again")
        answered.add(region["from_name"])
        checked.append(region)
    content = answer_content(checked)
    try:
        size = len(orjson.dumps(content))
    except orjson.JSONEncodeError as exc:  # nested past orjson's limit
        raise _Bad(where, "is nested too deeply") from exc
    if size > MAX_ANSWER_CHARS:
        raise _Bad(where, f"is an answer of {size} characters of JSON; at most {MAX_ANSWER_CHARS}")
    return content


def _region(entry: object, at: str, form: Form | None) -> dict[str, Any]:
    """One region, its type in lower case (as :func:`answer_content` reads it)."""
    region = _object(entry, at)
    name = _string(region.get("from_name", _MISSING), f"{at}.from_name", MAX_ELEMENT_CHARS)
    kind = _string(region.get("type", _MISSING), f"{at}.type", MAX_ELEMENT_CHARS).lower()
    value = _object(region.get("value", _MISSING), f"{at}.value")
    allowed = None
    if form is not None:
        control = form.get(name)
        if control is None:
            raise _Bad(f"{at}.from_name", "names no element of the labeling configuration")
        if kind != control.kind:
            raise _Bad(f"{at}.type", f"is not element {name!r}'s type ({control.kind})")
        allowed = control.choices
    if kind == "choices":
        chosen = _list(value.get("choices", _MISSING), f"{at}.value.choices", MAX_CHOICES)
        if not chosen:
            raise _Bad(f"{at}.value.choices", "is empty")
        for position, label in enumerate(chosen):
            label_at = f"{at}.value.choices[{position}]"
            chosen_label = _string(label, label_at, MAX_LABEL_CHARS)
            if allowed is not None and chosen_label not in allowed:
                raise _Bad(label_at, f"is not one of element {name!r}'s {len(allowed)} choices")
    elif kind == "textarea":
        texts = _list(value.get("text", _MISSING), f"{at}.value.text", MAX_TEXTS)
        for position, text in enumerate(texts):
            _string(text, f"{at}.value.text[{position}]", MAX_ANSWER_CHARS, empty_ok=True)
    return {"from_name": name, "type": kind, "value": value}


def _object(value: object, where: str, *, optional: bool = False) -> dict[str, Any]:
    if optional and (value is None or value is _MISSING):
        return {}
    if not isinstance(value, dict):
        raise _Bad(where, f"is {_kind(value)}, not an object")
    return value


def _list(value: object, where: str, most: int, *, optional: bool = False) -> list[Any]:
    if optional and (value is None or value is _MISSING):
        return []
    if not isinstance(value, list):
        raise _Bad(where, f"is {_kind(value)}, not a list")
    if len(value) > most:
        raise _Bad(where, f"has {len(value)} items; at most {most} are read")
    return value


def _optional_string(value: object, where: str, most: int) -> str | None:
    return None if value is None or value is _MISSING else _string(value, where, most)


def _string(value: object, where: str, most: int, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _Bad(where, f"is {_kind(value)}, not a string")
    if not value and not empty_ok:
        raise _Bad(where, "is empty")
    if len(value) > most:
        raise _Bad(where, f"is {len(value)} characters long; at most {most}")
    return value


def _integer(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(where, f"is {_kind(value)}, not an integer")
    return value


def _optional_number(value: object, where: str) -> float | None:
    if value is None or value is _MISSING:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Bad(where, f"is {_kind(value)}, not a number")
    if not math.isfinite(value):
        raise _Bad(where, "is not a finite number")
    return float(value)


def _time(value: object, where: str) -> float | None:
    """An ISO 8601 time (a zone-less one is UTC) in epoch seconds; None if null or missing."""
    text = _optional_string(value, where, MAX_TIME_CHARS)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError) as exc:  # not a time, or one past datetime's range
        raise _Bad(where, "is not an ISO 8601 time") from exc


_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "an object"),
)


def _kind(value: object) -> str:
    """What ``value`` is, for a message (never the value itself)."""
    if value is _MISSING:
        return "missing"
    if value is None:
        return "null"
    return next((said for kind, said in _KINDS if isinstance(value, kind)), type(value).__name__)
