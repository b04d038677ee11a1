"""``review_probability`` on the wire: written by ingest on accepted envelopes and review
requests, checked by the review role, carried onto every outcome; envelope schema revision 1.1.

What the README promises consumers is tested here: records of 1.0 (without the field) and of
1.1 both validate against the revised schema, and a consumer still validating with the 1.0 file
(``tests/fixtures/schemas/envelope-v1.0.schema.json``, as released) rejects a 1.1 record for
exactly one reason, the new property.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource

from stream_router.envelope import accepted_envelope, review_request
from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Routes
from stream_router.review.backend import ReviewResult, WorkerAnswer
from stream_router.review.consolidate import consolidate
from stream_router.review.outcome import reviewed_record, unreviewed_record
from stream_router.review.request import MAX_PROBABILITY_ROUTES, MalformedRequest, ReviewRequest
from stream_router.settings import PoliciesSettings
from tests.envelope_schema import envelope_validator

ROOT = Path(__file__).resolve().parents[2]
OLD_SCHEMA = ROOT / "tests" / "fixtures" / "schemas" / "envelope-v1.0.schema.json"
REQUESTED_S = 1_700_000_100.0


def _old_validator() -> jsonschema.Draft202012Validator:
    envelope = json.loads(OLD_SCHEMA.read_text())
    review = json.loads((ROOT / "stream_router/schemas/review-v1.schema.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        [(schema["$id"], Resource.from_contents(schema)) for schema in (envelope, review)]
    )
    return jsonschema.Draft202012Validator(envelope, registry=registry)


def _routes() -> Routes:
    routes = Routes(
        PoliciesSettings.model_validate(
            {
                "routes": [
                    {
                        "name": "low",
                        "review_flow": "fd-low",
                        "policy": {"type": "confidence", "below": 0.9},
                    },
                    {
                        "name": "audit",
                        "review_flow": "fd-audit",
                        "policy": {"type": "sample", "percent": 50},
                    },
                ]
            }
        )
    )
    routes.start()
    return routes


def _prediction(event_id: str, confidence: float) -> Prediction:
    return Prediction(
        event_id, "dog", confidence, None, "animals", "7", 1_700_000_000.0,
        {"id": event_id}, SourceRef("predictions", 0, 1, b"k", 1),
    )  # fmt: skip


def _decided(confidence: float, *, review: bool) -> tuple[Prediction, Any]:
    """A prediction and the routes' decision for it, drawing event ids until the decision is
    ``review`` (the audit samples half of the confident ones)."""
    routes = _routes()
    for i in range(200):
        prediction = _prediction(f"evt-{i}", confidence)
        [decision] = routes.decide([prediction])
        if decision.review == review:
            return prediction, decision
    raise AssertionError("no such draw in 200 ids")


def test_accepted_and_requested_records_carry_it() -> None:
    prediction, decision = _decided(0.95, review=False)
    record = orjson.loads(accepted_envelope(prediction, decision, "v1", REQUESTED_S))
    assert record["review_probability"] == {"total": 0.5, "routes": {"audit": 0.5}}
    envelope_validator().validate(record)

    prediction, decision = _decided(0.95, review=True)
    request = ReviewRequest.parse(
        review_request(prediction, decision, "v1", "evt-x-1", REQUESTED_S)
    )
    assert request.review_probability == 0.5
    assert request.audited

    prediction, decision = _decided(0.5, review=True)
    request = ReviewRequest.parse(
        review_request(prediction, decision, "v1", "evt-y-1", REQUESTED_S)
    )
    assert request.review_probability == 1.0
    assert not request.audited


def _audited_request() -> ReviewRequest:
    prediction, decision = _decided(0.95, review=True)
    return ReviewRequest.parse(review_request(prediction, decision, "v1", "evt-x-1", REQUESTED_S))


def _answered() -> Any:
    answer = WorkerAnswer("w1", {"label": {"label": "cat"}}, REQUESTED_S + 1, REQUESTED_S + 5, 4.0)
    return consolidate(ReviewResult(name="evt-x-1", flow="fd-audit", answers=(answer,)))


def test_outcomes_carry_it_from_the_request_and_validate() -> None:
    request = _audited_request()
    reviewed = reviewed_record(request, _answered(), observed_s=REQUESTED_S + 9)
    unreviewed = unreviewed_record(request, failure_code="Expired", reason="nobody answered")
    for record in (reviewed, unreviewed):
        assert record["review_probability"] == {"total": 0.5, "routes": {"audit": 0.5}}
        envelope_validator().validate(orjson.loads(orjson.dumps(record)))


def test_records_without_it_still_validate_and_carry_nothing() -> None:
    request = _audited_request()
    old = ReviewRequest.parse(
        orjson.dumps({k: v for k, v in request.fields.items() if k != "review_probability"})
    )
    assert old.review_probability is None
    assert not old.audited
    record = reviewed_record(old, _answered(), observed_s=REQUESTED_S + 9)
    assert "review_probability" not in record
    envelope_validator().validate(record)
    _old_validator().validate(record)


def test_a_consumer_on_the_old_schema_sees_one_error_the_new_property() -> None:
    prediction, decision = _decided(0.95, review=False)
    record = orjson.loads(accepted_envelope(prediction, decision, "v1", REQUESTED_S))
    messages = [error.message for error in _old_validator().iter_errors(record)]
    assert messages == [
        "Additional properties are not allowed ('review_probability' was unexpected)"
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0.5", "not an object of total and routes"),
        ({"total": 0.5}, "not an object of total and routes"),
        ({"total": 0.5, "routes": {}, "extra": 1}, "not an object of total and routes"),
        ({"total": 1.5, "routes": {}}, "total 1.5 is not in"),
        ({"total": -0.1, "routes": {}}, "is not in"),
        ({"total": True, "routes": {}}, "is not in"),
        ({"total": float("nan"), "routes": {}}, "is not in"),
        ({"total": 0.5, "routes": []}, "routes is not an object"),
        ({"total": 0.5, "routes": {"a": 2}}, "value outside"),
        (
            {"total": 0.5, "routes": {f"r{i}": 0.0 for i in range(MAX_PROBABILITY_ROUTES + 1)}},
            "at most",
        ),
    ],
)
def test_a_forged_probability_makes_the_request_malformed(value: Any, why: str) -> None:
    fields = dict(_audited_request().fields)
    fields["review_probability"] = value
    with pytest.raises(MalformedRequest, match=why):
        ReviewRequest.from_fields(fields)
