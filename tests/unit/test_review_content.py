"""InputContent: the projection reviewers see, plus the identity the join needs."""

from __future__ import annotations

from typing import Any

from stream_router.review.content import content_size, input_content, project
from stream_router.review.request import ReviewRequest
from tests.unit.review.requests import review_request


def request(**event: Any) -> ReviewRequest:
    fields = review_request("evt-1", name="evt-1-abc", **event).fields
    return ReviewRequest.from_fields(
        {
            **fields,
            "policy_version": "3",
            "reason": "confidence 0.4 < 0.7 (label cat)",
            "prediction": {
                **fields["prediction"],
                "scores": {"cat": 0.4, "dog": 0.6},
            },
        }
    )


def test_projection_keeps_only_named_paths() -> None:
    event = {"image": {"url": "s3://b/k", "w": 3}, "user": {"email": "x@y"}, "label": "cat"}
    assert project(event, ["image.url", "label", "missing.path"]) == {
        "image": {"url": "s3://b/k"},
        "label": "cat",
    }
    assert project(event, []) == event


def test_input_content_shape() -> None:
    content = input_content(request(image="s3://b/k", secret="pii"), ["image"], attempt=1)
    assert content["event"] == {"image": "s3://b/k"}
    assert content["prediction"] == {
        "label": "cat",
        "confidence": 0.4,
        "scores": {"cat": 0.4, "dog": 0.6},
    }
    assert content["reason"] == "confidence 0.4 < 0.7 (label cat)"
    assert content["_identity"] == {
        "loop_name": "evt-1-abc",
        "event_id": "evt-1",
        "route": "general",
        "policy_version": "3",
        "attempt": 1,
    }
    assert "pii" not in str(content)


def test_an_empty_projection_shows_the_whole_event_and_the_attempt_counts() -> None:
    content = input_content(request(image="s3://b/k"), [], attempt=2)
    assert content["event"] == {"label": "cat", "image": "s3://b/k"}
    assert content["_identity"]["attempt"] == 2


def test_content_size_counts_characters() -> None:
    assert content_size({"a": "é"}) == len('{"a":"é"}')
