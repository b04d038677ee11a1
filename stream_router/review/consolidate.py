"""Answer consolidation: one label out of several reviewers' answers, with how far they agreed.

A review can have up to three workers (A2I's TaskCount is 1-3) and A2I does not consolidate:
the result holds one answer per worker. :func:`consolidate` takes the answer each worker gave at
``answer_path`` and picks the majority.

- **Answer path.** Dotted keys into the worker's answer content; the first key is the template
  element's ``name``. For ``<crowd-classifier name="label">`` the content is
  ``{"label": {"label": "cat"}}`` and the path ``label.label``; for a multi-select classifier
  ``{"tags": {"labels": [...]}}`` the path is ``tags.labels``; for a checkbox ``n.value``; for a
  text input just ``n``.
- **Answers** are strings, numbers, booleans, or lists of those. A list (multi-select) is
  treated as a set: the answer is the sorted tuple of its distinct items, so ``["b", "a"]`` and
  ``["a", "b"]`` agree, and only the same selection counts as agreement.
- **No answer.** A worker whose content lacks the path, or has null, an empty or blank string,
  an empty list, or a value of another shape (an object, a list holding objects) there, gave no
  answer. Their raw content is still kept.
- **Majority and agreement.** The label is the answer most workers gave; ``agreement`` is the
  share of *all* workers (answering or not) who gave it, so a blank answer weighs against
  confidence. No answers at all: label None, agreement 0.
- **Ties** go to the answer submitted first (the earliest ``submitted_at_s`` among the workers
  giving it; unknown times count as latest), then by the position in the result of that
  earliest worker. ``tie`` says a tie was broken, so consumers can treat such labels with care.

Pure: no I/O, deterministic for a given result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_router.review.backend import ReviewResult

Scalar = str | int | float | bool
Answer = Scalar | tuple[Scalar, ...]

DEFAULT_ANSWER_PATH = "label.label"


@dataclass(frozen=True)
class RawAnswer:
    """One worker's answer: the value at the answer path (None: no answer) and the raw content."""

    worker_id: str
    answer: Answer | None
    content: Mapping[str, Any]
    accepted_at_s: float | None
    submitted_at_s: float | None
    time_spent_s: float | None


@dataclass(frozen=True)
class Consolidation:
    """The consolidated outcome of one review."""

    name: str  #: the review (human loop) name
    flow: str  #: the flow (for A2I, flow definition) that reviewed it
    answer_path: str
    label: Answer | None  #: the majority answer; None when no worker answered
    agreement: float  #: share of all workers who gave ``label``, in [0, 1]
    workers: int  #: workers in the result
    answered: int  #: workers who gave an answer at the path
    tie: bool  #: the majority was tied and broken by submission time
    answers: tuple[RawAnswer, ...]  #: every worker, in the result's order

    @property
    def first_accepted_s(self) -> float | None:
        """When the first worker took the task, if known."""
        times = [a.accepted_at_s for a in self.answers if a.accepted_at_s is not None]
        return min(times) if times else None

    @property
    def last_submitted_s(self) -> float | None:
        """When the last worker submitted, if known: the review's end."""
        times = [a.submitted_at_s for a in self.answers if a.submitted_at_s is not None]
        return max(times) if times else None


def consolidate(result: ReviewResult, answer_path: str = DEFAULT_ANSWER_PATH) -> Consolidation:
    """The majority answer of ``result``'s workers at ``answer_path`` (see the module doc)."""
    keys = answer_path.split(".")
    if not all(keys):
        raise ValueError(f"answer_path must be dot-separated non-empty keys, got {answer_path!r}")
    raw = tuple(
        RawAnswer(
            worker_id=worker.worker_id,
            answer=answer_at(worker.content, keys),
            content=worker.content,
            accepted_at_s=worker.accepted_at_s,
            submitted_at_s=worker.submitted_at_s,
            time_spent_s=worker.time_spent_s,
        )
        for worker in result.answers
    )
    # identity key -> (count, (earliest submission, first position), answer)
    tally: dict[Any, tuple[int, tuple[float, int], Answer]] = {}
    for position, worker in enumerate(raw):
        if worker.answer is None:
            continue
        key = _identity(worker.answer)
        submitted = math.inf if worker.submitted_at_s is None else worker.submitted_at_s
        count, first, answer = tally.get(key, (0, (math.inf, position), worker.answer))
        tally[key] = (count + 1, min(first, (submitted, position)), answer)
    label: Answer | None = None
    top = 0
    tie = False
    if tally:
        ranked = sorted(tally.values(), key=lambda entry: (-entry[0], entry[1]))
        top, _, label = ranked[0]
        tie = len(ranked) > 1 and ranked[1][0] == top
    return Consolidation(
        name=result.name,
        flow=result.flow,
        answer_path=answer_path,
        label=label,
        agreement=top / len(raw) if raw else 0.0,
        workers=len(raw),
        answered=sum(1 for worker in raw if worker.answer is not None),
        tie=tie,
        answers=raw,
    )


def answer_at(content: Mapping[str, Any], keys: list[str]) -> Answer | None:
    """The normalised answer at ``keys`` in ``content``; None when there is no usable answer."""
    value: Any = content
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if isinstance(value, list | tuple):
        items = [_scalar(item) for item in value]
        if not items or any(item is None for item in items):
            return None
        distinct = {_identity(item): item for item in items if item is not None}
        return tuple(distinct[key] for key in sorted(distinct))
    return _scalar(value)


def _scalar(value: Any) -> Scalar | None:
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


def _identity(answer: Answer) -> Any:
    """A key equal only for equal answers of the same kind (True is not 1; 1 is 1.0)."""
    if isinstance(answer, tuple):
        return ("list", tuple(_identity(item) for item in answer))
    if isinstance(answer, bool):
        return ("bool", answer)
    if isinstance(answer, str):
        return ("str", answer)
    return ("number", answer)
