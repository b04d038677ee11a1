"""Result envelopes (v1) for the review path: reviewed by people, or published unreviewed.

Built from the review request (``review/request.py``, validated when it arrived) and what
became of the review, on either backend (``review.backend``: ``review.backend`` in the record
names it; nothing else differs):

- a :class:`~stream_router.review.consolidate.Consolidation` gives decision ``reviewed``: the
  model's ``prediction`` unchanged and a ``review`` object with the consolidated label,
  agreement, every worker's answer and the timing;
- no usable review gives decision ``unreviewed``: the model's prediction stands and ``review``
  says why (the backend's status and failure code, or one of :class:`UnreviewedCode`).

The ``review`` object's schema is ``stream_router/schemas/review-v1.schema.json``
(``$defs/reviewed`` and ``$defs/unreviewed``); the envelope schema refers to it.

Times: ``timestamps.decided_s`` is the request's ``requested_s`` (ingest decides and requests in
one step); ``review.ended_s`` (and ``timestamps.reviewed_s``) is the last worker's submission,
else when the review path observed the end; ``review_latency_s`` is ``ended_s - requested_s``,
what a consumer waited for the human answer including queueing for rate and budget (clamped at
0, since worker times come from the backend's clock). ``started_s`` is when the review was
started at the backend, when the caller knows it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import orjson

from stream_router.review.backend import ReviewStatus
from stream_router.review.consolidate import Answer, Consolidation, RawAnswer
from stream_router.review.request import CARRIED, ReviewRequest

REVIEW_SCHEMA = "stream_router/schemas/review-v1.schema.json"

_WITH_OUTPUT = (ReviewStatus.COMPLETED, ReviewStatus.STOPPED)


class UnreviewedCode(StrEnum):
    """Failure codes of our own; a backend's codes (A2I: ValidationError, Expired,
    InternalError) pass through as they are."""

    BUDGET_EXHAUSTED = "BudgetExhausted"  #: the route's budget was spent (accept-unreviewed)
    INPUT_TOO_LARGE = "InputTooLarge"  #: the review input exceeds the backend's limit
    NO_OUTPUT = "NoOutput"  #: the review ended (e.g. Stopped) without any answer


@dataclass(frozen=True)
class ReviewerData:
    """What a reviewed envelope says of its reviewers (``review.reviewer_data``).

    ``full`` publishes the backend's worker ids and each answer's whole content (free-text
    comments included); ``pseudonymous`` replaces each worker id by the first 16 hex digits of
    HMAC-SHA256(key, worker id): stable, so agreement per worker can still be studied, and not
    reversible without the key; ``minimal`` also empties each answer's content (``{}``), keeping
    only the answer the answer path read.
    """

    mode: Literal["full", "pseudonymous", "minimal"] = "full"
    key: bytes = b""

    def worker(self, worker_id: str) -> str:
        if self.mode == "full":
            return worker_id
        digest = hmac.new(self.key, worker_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"p-{digest[:16]}"

    def content(self, content: Any) -> Any:
        return {} if self.mode == "minimal" else _plain(content)


FULL = ReviewerData()


def reviewed_record(
    request: ReviewRequest,
    consolidation: Consolidation,
    *,
    observed_s: float,
    started_s: float | None = None,
    status: ReviewStatus = ReviewStatus.COMPLETED,
    backend: str = "a2i",
    reviewers: ReviewerData = FULL,
) -> dict[str, Any]:
    """The envelope (as a dict) of a prediction people reviewed; see the module doc for times."""
    if status not in _WITH_OUTPUT:
        raise ValueError(f"a reviewed outcome needs status Completed or Stopped, got {status}")
    record = _carried(request)
    requested_s = request.requested_s
    last = consolidation.last_submitted_s
    ended_s = observed_s if last is None else last
    model_label = record["prediction"]["label"]
    record["decision"] = "reviewed"
    record["review"] = {
        "backend": backend,
        "loop_name": consolidation.name,
        "review_flow": consolidation.flow,
        "status": status.value,
        "answer_path": consolidation.answer_path,
        "label": _json_answer(consolidation.label),
        "agreement": consolidation.agreement,
        "workers": consolidation.workers,
        "answered": consolidation.answered,
        "tie": consolidation.tie,
        "corrected": is_correction(consolidation.label, model_label),
        "answers": [_answer(answer, reviewers) for answer in consolidation.answers],
        "started_s": started_s,
        "ended_s": ended_s,
        "review_latency_s": max(0.0, ended_s - requested_s),
    }
    record["timestamps"] = _timestamps(record, requested_s, ended_s)
    return record


def reviewed_envelope(
    request: ReviewRequest,
    consolidation: Consolidation,
    *,
    observed_s: float,
    started_s: float | None = None,
    status: ReviewStatus = ReviewStatus.COMPLETED,
    backend: str = "a2i",
    reviewers: ReviewerData = FULL,
) -> bytes:
    """:func:`reviewed_record` serialised for the output topic."""
    return orjson.dumps(
        reviewed_record(
            request,
            consolidation,
            observed_s=observed_s,
            started_s=started_s,
            status=status,
            backend=backend,
            reviewers=reviewers,
        )
    )


def unreviewed_record(
    request: ReviewRequest,
    *,
    failure_code: str,
    reason: str,
    status: ReviewStatus | None = None,
    ended_s: float | None = None,
    loop_name: str | None = None,
    review_flow: str | None = None,
    backend: str = "a2i",
) -> dict[str, Any]:
    """The envelope (as a dict) of a prediction published without a human review.

    ``status`` is the review's final status, None when no review ran (budget, oversize input);
    ``ended_s`` when it ended, if it ran. ``loop_name``/``review_flow`` default to the request's
    (pass them when the review that failed ran on an escalation flow).
    """
    if not failure_code:
        raise ValueError("failure_code must be a non-empty code")
    record = _carried(request)
    requested_s = request.requested_s
    record["decision"] = "unreviewed"
    record["review"] = {
        "backend": backend,
        "loop_name": loop_name if loop_name is not None else request.loop_name,
        "review_flow": review_flow if review_flow is not None else request.review_flow,
        "status": None if status is None else status.value,
        "failure_code": str(failure_code),
        "reason": reason,
    }
    record["timestamps"] = _timestamps(record, requested_s, ended_s)
    return record


def unreviewed_envelope(
    request: ReviewRequest,
    *,
    failure_code: str,
    reason: str,
    status: ReviewStatus | None = None,
    ended_s: float | None = None,
    loop_name: str | None = None,
    review_flow: str | None = None,
    backend: str = "a2i",
) -> bytes:
    """:func:`unreviewed_record` serialised for the output topic."""
    return orjson.dumps(
        unreviewed_record(
            request,
            failure_code=failure_code,
            reason=reason,
            status=status,
            ended_s=ended_s,
            loop_name=loop_name,
            review_flow=review_flow,
            backend=backend,
        )
    )


def is_correction(label: Answer | None, model_label: str) -> bool:
    """Whether the reviewed label differs from the model's (no label corrects nothing).

    A multi-select answer agrees with the model only when it is exactly the model's label.
    """
    if label is None:
        return False
    if isinstance(label, tuple):
        return label != (model_label,)
    return not (isinstance(label, str) and label == model_label)


def _carried(request: ReviewRequest) -> dict[str, Any]:
    fields = request.fields
    record = {name: fields[name] for name in CARRIED}
    if "review_probability" in fields:  # absent from requests of an older ingest
        record["review_probability"] = fields["review_probability"]
    return record


def _timestamps(
    record: Mapping[str, Any], requested_s: float, reviewed_s: float | None
) -> dict[str, Any]:
    return {
        "event_s": record["prediction"].get("timestamp_s"),
        "decided_s": requested_s,
        "reviewed_s": reviewed_s,
    }


def _json_answer(answer: Answer | None) -> Any:
    return list(answer) if isinstance(answer, tuple) else answer


def _answer(answer: RawAnswer, reviewers: ReviewerData) -> dict[str, Any]:
    return {
        "worker_id": reviewers.worker(answer.worker_id),
        "answer": _json_answer(answer.answer),
        "content": reviewers.content(answer.content),
        "accepted_s": answer.accepted_at_s,
        "submitted_s": answer.submitted_at_s,
        "time_spent_s": answer.time_spent_s,
    }


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so the record is plain JSON data."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
