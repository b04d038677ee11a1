"""What reviewers see: the InputContent of a review, built from a review request.

Reviewers see a projection of the event (``review.projection``: dotted paths; empty means the
whole event) and the model's prediction, so the task template can show "the model says cat
(0.62)". An ``_identity`` block carries what the join needs if the ledger entry were missing:
the loop name, event id, route and policy version. A2I echoes all of it back in output.json.

Templates address top-level keys: ``{{ task.input.event.<field> }}``,
``{{ task.input.prediction.label }}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from stream_router.review.request import ReviewRequest


def project(event: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """The parts of ``event`` named by dotted ``paths``, nested as in the event."""
    if not paths:
        return dict(event)
    out: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        node: Any = event
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = node
    return out


def input_content(
    request: ReviewRequest, projection: Sequence[str], attempt: int
) -> dict[str, Any]:
    """The InputContent object for a review request (see the module docstring)."""
    fields = request.fields
    prediction = fields["prediction"]
    return {
        "event": project(fields["event"], projection),
        "prediction": {
            "label": request.label,
            "confidence": prediction.get("confidence"),
            "scores": prediction.get("scores"),
        },
        "reason": fields["reason"],
        "_identity": {
            "loop_name": request.loop_name,
            "event_id": request.event_id,
            "route": request.route,
            "policy_version": request.policy_version,
            "attempt": attempt,
        },
    }


def content_size(content: Mapping[str, Any]) -> int:
    """Characters of the JSON text (what a backend's ``max_input_chars`` limits)."""
    return len(orjson.dumps(content).decode())
