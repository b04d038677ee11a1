"""Wire formats of what ingest writes: result envelope v1, review requests, dead letters.

The result envelope is the contract with downstream consumers; its JSON Schema is
``stream_router/schemas/envelope-v1.schema.json`` (tests validate every produced record
against it). Records are keyed like the input so consumers can compact and dedupe by key.

Building these is on the hot path: plain dicts and ``orjson.dumps``, no model validation.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Decision

SCHEMA_VERSION = 1
ENVELOPE_SCHEMA = "stream_router/schemas/envelope-v1.schema.json"


def encode_bytes(data: bytes | None) -> tuple[str | None, str]:
    """(text, encoding): UTF-8 text when the bytes are valid UTF-8, else base64."""
    if data is None:
        return None, "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _source(source: SourceRef) -> dict[str, Any]:
    return {
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
        "timestamp_ms": source.timestamp_ms,
    }


def _common(prediction: Prediction, decision: Decision, policy_version: str) -> dict[str, Any]:
    source = prediction.source
    raw_key = source.key
    if raw_key is None:
        key, key_encoding = None, "utf-8"
    else:
        try:
            key, key_encoding = raw_key.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            key, key_encoding = base64.b64encode(raw_key).decode("ascii"), "base64"
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": prediction.event_id,
        "event_id_derived": prediction.id_derived,
        "key": key,
        "key_encoding": key_encoding,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
        },
        "prediction": {
            "label": prediction.label,
            "confidence": prediction.confidence,
            "scores": prediction.scores,
            "model_name": prediction.model_name,
            "model_version": prediction.model_version,
            "timestamp_s": prediction.timestamp_s,
        },
        "event": prediction.event,
        "route": decision.route,
        "policy": decision.policy,
        "policy_version": policy_version,
        "reason": decision.reason,
    }


def accepted_envelope(
    prediction: Prediction, decision: Decision, policy_version: str, decided_s: float
) -> bytes:
    """The envelope of a prediction accepted without review."""
    record = _common(prediction, decision, policy_version)
    record["decision"] = "accepted"
    record["review"] = None
    record["timestamps"] = {
        "event_s": prediction.timestamp_s,
        "decided_s": decided_s,
        "reviewed_s": None,
    }
    return orjson.dumps(record)


def review_request(
    prediction: Prediction,
    decision: Decision,
    policy_version: str,
    loop_name: str,
    requested_s: float,
) -> bytes:
    """A request for human review, for the review path (keyed by ``loop_name``)."""
    record = _common(prediction, decision, policy_version)
    record["loop_name"] = loop_name
    record["review_flow"] = decision.review_flow
    record["requested_s"] = requested_s
    return orjson.dumps(record)


def dead_letter(
    value: bytes | None, source: SourceRef, reason_class: str, reason: str, failed_s: float
) -> bytes:
    """What could not be processed, with why and where it came from; the input is kept whole."""
    text, encoding = encode_bytes(value)
    key, key_encoding = encode_bytes(source.key)
    record = {
        "schema_version": SCHEMA_VERSION,
        "reason_class": reason_class,
        "reason": reason,
        "source": _source(source),
        "key": key,
        "key_encoding": key_encoding,
        "value": text,
        "value_encoding": encoding,
        "failed_s": failed_s,
    }
    return orjson.dumps(record)


def review_dead_letter(
    request: Mapping[str, Any], reason_class: str, reason: str, failed_s: float
) -> bytes:
    """A review request the review path gives up on, whole, with why."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "reason_class": reason_class,
        "reason": reason,
        "source": request.get("source"),
        "key": request.get("key"),
        "key_encoding": request.get("key_encoding", "utf-8"),
        "review_request": request,
        "failed_s": failed_s,
    }
    return orjson.dumps(record)
