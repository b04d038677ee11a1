"""Review-path envelopes: built from real review requests, validated against the JSON Schemas."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from referencing import Registry, Resource

from stream_router.envelope import ENVELOPE_SCHEMA, accepted_envelope, review_request
from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Decision
from stream_router.review.backend import ReviewResult, ReviewStatus, WorkerAnswer
from stream_router.review.consolidate import consolidate
from stream_router.review.outcome import (
    REVIEW_SCHEMA,
    ReviewerData,
    UnreviewedCode,
    is_correction,
    reviewed_envelope,
    reviewed_record,
    unreviewed_envelope,
    unreviewed_record,
)
from stream_router.review.request import ReviewRequest

REPO = Path(__file__).resolve().parents[3]
REQUESTED_S = 1_700_000_100.0

# The change proposed for envelope-v1.schema.json: `review` refers to review-v1, and the decision
# selects the variant. Applied here in memory until the schema's owner has applied it.
REVIEW_PROPERTY = {
    "description": "The human review (decision reviewed), or why there was none (unreviewed); "
    "null when accepted. Schema: review-v1.schema.json.",
    "oneOf": [{"type": "null"}, {"$ref": "review-v1.schema.json"}],
}
DECISION_SELECTS_REVIEW = [
    {
        "if": {"required": ["decision"], "properties": {"decision": {"const": decision}}},
        "then": {"properties": {"review": review}},
    }
    for decision, review in (
        ("accepted", {"type": "null"}),
        ("reviewed", {"$ref": "review-v1.schema.json#/$defs/reviewed"}),
        ("unreviewed", {"$ref": "review-v1.schema.json#/$defs/unreviewed"}),
    )
]


def load(path: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((REPO / path).read_text())
    return schema


@cache
def validators() -> tuple[jsonschema.Draft202012Validator, ...]:
    """(envelope schema as in the file, envelope with the proposed change, review schema)."""
    envelope, review = load(ENVELOPE_SCHEMA), load(REVIEW_SCHEMA)
    proposed = copy.deepcopy(envelope)
    if "review-v1.schema.json" not in json.dumps(proposed["properties"]["review"]):
        proposed["properties"]["review"] = REVIEW_PROPERTY
        proposed["allOf"] = DECISION_SELECTS_REVIEW
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in (proposed, review)
    )
    for schema in (envelope, proposed, review):
        jsonschema.Draft202012Validator.check_schema(schema)
    return tuple(
        jsonschema.Draft202012Validator(schema, registry=registry)
        for schema in (envelope, proposed, review)
    )


def validate(record: dict[str, Any]) -> None:
    as_filed, proposed, review = validators()
    as_filed.validate(record)
    proposed.validate(record)
    if record["review"] is not None:
        review.validate(record["review"])


def errors(record: dict[str, Any]) -> list[str]:
    return [error.message for error in validators()[1].iter_errors(record)]


def prediction(key: bytes | None = b"order-42") -> Prediction:
    return Prediction(
        event_id="evt-42",
        label="dog",
        confidence=0.41,
        scores={"dog": 0.41, "cat": 0.39},
        model_name="animals",
        model_version="7",
        timestamp_s=1_700_000_000.0,
        event={"id": "evt-42", "label": "dog", "image": "s3://bucket/42.jpg"},
        source=SourceRef("predictions", 3, 1234, key, 1_700_000_000_000),
    )


def request(key: bytes | None = b"order-42") -> ReviewRequest:
    """A request as ingest writes it, parsed as the review role does."""
    decision = Decision(True, "low-confidence", "fd-animals", "confidence", "0.41 < 0.6")
    raw = review_request(prediction(key), decision, "v3", "evt-42-abc123", REQUESTED_S)
    return ReviewRequest.parse(raw)


def answer(worker_id: str, label: Any, submitted_s: float | None) -> WorkerAnswer:
    return WorkerAnswer(
        worker_id=worker_id,
        content={"label": {"label": label}},
        accepted_at_s=None if submitted_s is None else submitted_s - 30,
        submitted_at_s=submitted_s,
        time_spent_s=None if submitted_s is None else 30.0,
    )


def review_of(*answers: WorkerAnswer) -> ReviewResult:
    return ReviewResult(name="evt-42-abc123", flow="fd-animals", answers=answers)


def test_reviewed_envelope_of_three_workers() -> None:
    base = REQUESTED_S
    consolidation = consolidate(
        review_of(
            answer("w1", "cat", base + 50),
            answer("w2", "dog", base + 60),
            answer("w3", "cat", base + 70),
        )
    )
    record = reviewed_record(request(), consolidation, observed_s=base + 99, started_s=base + 2)
    validate(record)

    assert record["decision"] == "reviewed"
    assert (
        record["prediction"] == request().fields["prediction"]
    )  # the model's prediction unchanged
    assert (record["key"], record["route"], record["policy_version"]) == (
        "order-42",
        "low-confidence",
        "v3",
    )
    assert not {"loop_name", "review_flow", "requested_s"} & record.keys()
    review = record["review"]
    assert (review["label"], review["corrected"], review["workers"], review["answered"]) == (
        "cat",
        True,
        3,
        3,
    )
    assert review["agreement"] == pytest.approx(2 / 3)
    assert (review["loop_name"], review["review_flow"], review["status"]) == (
        "evt-42-abc123",
        "fd-animals",
        "Completed",
    )
    assert (review["started_s"], review["ended_s"], review["review_latency_s"]) == (
        base + 2,
        base + 70,
        70,
    )
    assert review["answers"][1] == {
        "worker_id": "w2",
        "answer": "dog",
        "content": {"label": {"label": "dog"}},
        "accepted_s": base + 30,
        "submitted_s": base + 60,
        "time_spent_s": 30.0,
    }
    assert record["timestamps"] == {
        "event_s": 1_700_000_000.0,
        "decided_s": REQUESTED_S,
        "reviewed_s": base + 70,
    }


@pytest.mark.parametrize("mode", ["pseudonymous", "minimal"])
def test_reviewer_data_pseudonyms_and_minimal_content(mode: str) -> None:
    """Worker ids become keyed pseudonyms (stable per worker, different under another key);
    minimal also empties each answer's content; the envelope stays valid."""
    with_comment = WorkerAnswer(
        worker_id="w1", content={"label": {"label": "cat"}, "comment": "my name is Ann"},
        accepted_at_s=None, submitted_at_s=REQUESTED_S + 5, time_spent_s=None,
    )  # fmt: skip
    consolidation = consolidate(review_of(with_comment, answer("w2", "cat", REQUESTED_S + 9)))

    def published(key: bytes) -> list[dict[str, Any]]:
        reviewers = ReviewerData(mode, key)  # type: ignore[arg-type]
        record = reviewed_record(
            request(), consolidation, observed_s=REQUESTED_S + 10, reviewers=reviewers
        )
        validate(record)
        answers: list[dict[str, Any]] = record["review"]["answers"]
        return answers

    first, again, other = published(b"k1"), published(b"k1"), published(b"k2")
    ids = [a["worker_id"] for a in first]
    assert ids == [a["worker_id"] for a in again]  # stable
    assert ids != [a["worker_id"] for a in other]  # keyed
    assert all(i.startswith("p-") and len(i) == 18 for i in ids)
    assert len(set(ids)) == 2
    assert "w1" not in json.dumps(first)
    assert [a["answer"] for a in first] == ["cat", "cat"]
    shown = json.dumps(first)
    assert ("my name is Ann" in shown) == (mode == "pseudonymous")


def test_envelope_bytes_match_the_record() -> None:
    consolidation = consolidate(review_of(answer("w1", "dog", REQUESTED_S + 5)))
    raw = reviewed_envelope(request(), consolidation, observed_s=REQUESTED_S + 9)
    record = reviewed_record(request(), consolidation, observed_s=REQUESTED_S + 9)
    assert orjson.loads(raw) == record
    assert record["review"]["corrected"] is False
    why = "no worker took the task"
    assert orjson.loads(
        unreviewed_envelope(request(), failure_code="Expired", reason=why)
    ) == unreviewed_record(request(), failure_code="Expired", reason=why)


def test_no_submission_times_end_when_observed_and_latency_never_negative() -> None:
    record = reviewed_record(
        request(), consolidate(review_of(answer("w1", "cat", None))), observed_s=REQUESTED_S + 40
    )
    validate(record)
    assert record["review"]["ended_s"] == record["timestamps"]["reviewed_s"] == REQUESTED_S + 40
    early = reviewed_record(
        request(), consolidate(review_of(answer("w1", "cat", REQUESTED_S - 3))), observed_s=0
    )
    assert early["review"]["review_latency_s"] == 0


def test_no_answers_is_reviewed_without_label() -> None:
    consolidation = consolidate(review_of(answer("w1", "", REQUESTED_S + 5)))
    record = reviewed_record(request(), consolidation, observed_s=REQUESTED_S + 9)
    validate(record)
    review = record["review"]
    assert (review["label"], review["agreement"], review["corrected"]) == (None, 0, False)
    assert review["answers"][0]["answer"] is None


def test_multi_select_and_stopped_with_output() -> None:
    consolidation = consolidate(
        review_of(answer("w1", ["dog", "cat"], REQUESTED_S + 5)), answer_path="label.label"
    )
    record = reviewed_record(
        request(key=b"\xff\x00"),
        consolidation,
        observed_s=REQUESTED_S + 9,
        status=ReviewStatus.STOPPED,
    )
    validate(record)
    assert record["review"]["label"] == ["cat", "dog"]
    assert (record["review"]["status"], record["review"]["corrected"]) == ("Stopped", True)
    assert record["key_encoding"] == "base64"


def test_reviewed_needs_a_status_with_output() -> None:
    consolidation = consolidate(review_of(answer("w1", "dog", REQUESTED_S + 5)))
    with pytest.raises(ValueError, match="Failed"):
        reviewed_record(request(), consolidation, observed_s=0, status=ReviewStatus.FAILED)


@pytest.mark.parametrize(
    ("status", "code", "ended_s"),
    [
        (ReviewStatus.FAILED, "Expired", REQUESTED_S + 3600),
        (ReviewStatus.FAILED, "InternalError", REQUESTED_S + 10),
        (ReviewStatus.STOPPED, UnreviewedCode.NO_OUTPUT, REQUESTED_S + 10),
        (None, UnreviewedCode.BUDGET_EXHAUSTED, None),
        (None, UnreviewedCode.INPUT_TOO_LARGE, None),
    ],
)
def test_unreviewed_envelopes(
    status: ReviewStatus | None, code: str, ended_s: float | None
) -> None:
    record = unreviewed_record(
        request(), failure_code=code, reason="why, for people", status=status, ended_s=ended_s
    )
    validate(record)
    assert record["decision"] == "unreviewed"
    assert record["prediction"]["label"] == "dog"
    assert record["review"] == {
        "backend": "a2i",
        "loop_name": "evt-42-abc123",
        "review_flow": "fd-animals",
        "status": None if status is None else status.value,
        "failure_code": str(code),
        "reason": "why, for people",
    }
    assert record["timestamps"]["reviewed_s"] == ended_s


def test_unreviewed_on_an_escalation_flow() -> None:
    record = unreviewed_record(
        request(),
        failure_code="Expired",
        reason="escalation expired too",
        status=ReviewStatus.FAILED,
        loop_name="evt-42-abc123-e1",
        review_flow="fd-experts",
    )
    validate(record)
    assert (record["review"]["loop_name"], record["review"]["review_flow"]) == (
        "evt-42-abc123-e1",
        "fd-experts",
    )
    with pytest.raises(ValueError, match="failure_code"):
        unreviewed_record(request(), failure_code="", reason="")


def test_a_request_without_its_event_still_gives_a_valid_envelope() -> None:
    small = request().without_event()
    record = unreviewed_record(small, failure_code="InputTooLarge", reason="too big")
    validate(record)
    assert record["event"] == {}
    assert record["prediction"] == request().fields["prediction"]
    assert request().fields["event"]["image"] == "s3://bucket/42.jpg"  # the original is kept


def test_proposed_schema_ties_the_review_to_the_decision() -> None:
    consolidation = consolidate(review_of(answer("w1", "cat", REQUESTED_S + 5)))
    reviewed = reviewed_record(request(), consolidation, observed_s=0)
    unreviewed = unreviewed_record(request(), failure_code="Expired", reason="")

    assert errors({**reviewed, "review": unreviewed["review"]})
    assert errors({**unreviewed, "review": reviewed["review"]})
    assert errors({**reviewed, "decision": "accepted"})
    assert errors({**reviewed, "review": {**reviewed["review"], "surprise": 1}})
    assert errors({**reviewed, "review": {**reviewed["review"], "agreement": 1.5}})

    decision = Decision(False, None, None, "default", "confident")
    accepted = orjson.loads(accepted_envelope(prediction(), decision, "v3", REQUESTED_S))
    validate(accepted)  # ingest's accepted envelopes still validate under the change


def test_is_correction() -> None:
    assert not is_correction("dog", "dog")
    assert is_correction("cat", "dog")
    assert not is_correction(("dog",), "dog")
    assert is_correction(("cat", "dog"), "dog")
    assert is_correction(True, "dog")
    assert not is_correction(None, "dog")


scalars = st.one_of(
    st.sampled_from(["cat", "dog", ""]),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
)
raw_labels = st.one_of(scalars, st.lists(scalars, max_size=3), st.none(), st.just({"x": 1}))


@given(st.lists(st.tuples(raw_labels, st.one_of(st.none(), st.floats(0, 1e9))), max_size=3))
def test_any_consolidation_gives_a_valid_envelope(answers: list[tuple[Any, float | None]]) -> None:
    review = review_of(*(answer(f"w{i}", label, t) for i, (label, t) in enumerate(answers)))
    validate(reviewed_record(request(), consolidate(review), observed_s=REQUESTED_S + 1))
