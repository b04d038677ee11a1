"""Wire formats of what ingest writes: result envelope v1, review requests, dead letters.

The result envelope is the contract with downstream consumers; its JSON Schema is
``stream_router/schemas/envelope-v1.schema.json`` (tests validate every produced record
against it). Records are keyed like the input so consumers can compact and dedupe by key.
Dead letters follow ``stream_router/schemas/dead-letter-v1.schema.json``.

Building these is on the hot path: plain dicts and ``orjson.dumps``, no model validation. Any
event orjson parsed encodes again, except one nested deeper than orjson's encoder allows (254
levels, counting the envelope's own): ``orjson.JSONEncodeError`` (the ingest loop dead-letters
the event as ``unencodable``).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from typing import Any

import orjson

from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Decision

SCHEMA_VERSION = 1
ENVELOPE_SCHEMA = "stream_router/schemas/envelope-v1.schema.json"
DEAD_LETTER_SCHEMA = "stream_router/schemas/dead-letter-v1.schema.json"

#: reason_class of the stand-in for records the Kafka client cannot decode.
UNDECODABLE = "undecodable"


class Omit(enum.Enum):
    """What a dead letter leaves out to stay within the record limit."""

    NOTHING = "nothing"
    VALUE = "value"
    VALUE_AND_KEY = "value and key"


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
    record: dict[str, Any] = {
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
    if decision.propensity is not None:  # None only for decisions built by hand
        record["review_probability"] = decision.propensity.wire
    return record


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
    # Encoded one level deeper than written (the brackets of a one-item array cut off): the
    # review role nests a request once more (its ledger entry, its dead letters), and that must
    # still encode.
    return orjson.dumps((record,))[1:-1]


def dead_letter(
    value: bytes | None,
    source: SourceRef,
    reason_class: str,
    reason: str,
    failed_s: float,
    *,
    omit: Omit = Omit.NOTHING,
) -> bytes:
    """What could not be processed, with why and where it came from; the input is kept whole
    unless ``omit`` leaves out the value (and the key), for a dead letter within the record
    limit. ``value_bytes`` is the original value's size either way."""
    if omit is Omit.NOTHING:
        text, encoding = encode_bytes(value)
    else:
        text, encoding = None, "utf-8"
    if omit is Omit.VALUE_AND_KEY:
        key, key_encoding = None, "utf-8"
    else:
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
        "value_omitted": omit is not Omit.NOTHING,
        "value_bytes": None if value is None else len(value),
        "failed_s": failed_s,
    }
    return orjson.dumps(record)


def undecodable_dead_letter(
    topic: str, partition: int, *, first_offset: int, next_offset: int, reason: str, failed_s: float
) -> bytes:
    """The stand-in for records the Kafka client could not decode, offsets ``first_offset`` up
    to ``next_offset`` (how many records the range held is unknown): no key, no value."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "reason_class": UNDECODABLE,
        "reason": reason,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": first_offset,
            "timestamp_ms": None,
        },
        "last_offset": next_offset - 1,
        "key": None,
        "key_encoding": "utf-8",
        "value": None,
        "value_encoding": "utf-8",
        "value_omitted": True,
        "value_bytes": None,
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
