"""Reading records anything can write (review-requests, loop-events): the checks every parser
of them starts with, in one wording."""

from __future__ import annotations

import math
from typing import Any

import orjson


def json_object(value: bytes | None, malformed: type[Exception]) -> dict[str, Any]:
    """The record value as a JSON object; ``malformed`` (with the reason) for a tombstone,
    bytes that are not JSON, or JSON that is not an object."""
    if value is None:
        raise malformed("the record has no value (a tombstone)")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise malformed(f"the value is not JSON ({exc})") from exc
    return object_of(data, malformed)


def object_of(data: object, malformed: type[Exception]) -> dict[str, Any]:
    """``data`` if it is a JSON object, else ``malformed``."""
    if not isinstance(data, dict):
        raise malformed(f"the value is a JSON {type(data).__name__}, not an object")
    return data


def finite_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (not a bool) and finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
