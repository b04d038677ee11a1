"""Review requests for unit tests: every field ingest writes, parsed as the review role does."""

from __future__ import annotations

from typing import Any

from stream_router.naming import loop_name
from stream_router.review.request import ReviewRequest

REQUESTED_S = 1_700_000_000.0


def review_request(
    event_id: str = "e1",
    route: str = "general",
    *,
    label: str = "cat",
    flow: str = "fd-general",
    name: str | None = None,
    key: str | None = None,
    review_probability: float | None = None,
    policy_version: str = "1",
    **event: Any,
) -> ReviewRequest:
    """A valid request for ``event_id``; ``event`` adds fields to the event.

    ``review_probability`` (the route's share; below 1 for an audit sample) is left out unless
    given, as an older ingest wrote requests.
    """
    fields: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id,
        "event_id_derived": False,
        "key": key if key is not None else event_id,
        "key_encoding": "utf-8",
        "source": {"topic": "in", "partition": 0, "offset": 7, "timestamp_ms": 1},
        "prediction": {
            "label": label,
            "confidence": 0.4,
            "scores": None,
            "model_name": "m",
            "model_version": "1",
            "timestamp_s": REQUESTED_S - 1,
        },
        "event": {"label": label, **event},
        "route": route,
        "policy": "confidence",
        "policy_version": policy_version,
        "reason": "low confidence",
        "loop_name": name or loop_name(event_id, "1"),
        "review_flow": flow,
        "requested_s": REQUESTED_S,
    }
    if review_probability is not None:
        fields["review_probability"] = {
            "total": review_probability,
            "routes": {route: review_probability},
        }
    return ReviewRequest.from_fields(fields)
