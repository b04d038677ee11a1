"""Validators for result envelopes (envelope-v1 with its review-v1 reference resolved) and dead
letters (dead-letter-v1)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "stream_router" / "schemas"


@cache
def envelope_validator() -> jsonschema.Draft202012Validator:
    envelope = json.loads((SCHEMAS / "envelope-v1.schema.json").read_text())
    review = json.loads((SCHEMAS / "review-v1.schema.json").read_text())
    registry: Registry = Registry().with_resources(
        [(schema["$id"], Resource.from_contents(schema)) for schema in (envelope, review)]
    )
    jsonschema.Draft202012Validator.check_schema(envelope)
    return jsonschema.Draft202012Validator(envelope, registry=registry)


@cache
def dead_letter_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "dead-letter-v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)
