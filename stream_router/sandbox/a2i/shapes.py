"""What the emulated services share: modeled errors and validation as the service models say.

Both the A2I runtime (``api.py``, REST-JSON) and SageMaker's control plane (``control.py``,
JSON 1.1) answer a malformed request with a ValidationException whose message names the member
and the constraint, in the words AWS uses ("1 validation error detected: Value ... at ...
failed to satisfy constraint: ..."), and other failures with the error code of the model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

NAME_PATTERN = r"[a-z0-9](-*[a-z0-9])*"
DEFAULT_PAGE_SIZE = 10  #: items a List operation returns unless MaxResults says (assumed)
TAG_PATTERN = r"[\w\s.:/=+\-@]*"


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int


VALIDATION = ErrorKind("ValidationException", 400)
QUOTA_EXCEEDED = ErrorKind("ServiceQuotaExceededException", 402)
NOT_FOUND = ErrorKind("ResourceNotFoundException", 404)
CONFLICT = ErrorKind("ConflictException", 409)
THROTTLING = ErrorKind("ThrottlingException", 429)
INTERNAL = ErrorKind("InternalServerException", 500)


class ApiError(Exception):
    """A modeled error of the service: code, HTTP status and message."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def parse_timestamp(value: str, member: str) -> float:
    """ISO 8601 (as botocore and the CLI send it) or epoch seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise invalid(value, member, "Member must be an ISO 8601 timestamp") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def invalid(value: object, member: str, constraint: str) -> ApiError:
    shown = value if not isinstance(value, str) or len(value) <= 64 else value[:64] + "..."
    return ApiError(
        VALIDATION,
        f"1 validation error detected: Value '{shown}' at '{member}' failed to satisfy "
        f"constraint: {constraint}",
    )


def required(body: dict[str, Any], member: str, where: str = "") -> Any:
    if body.get(member) is None:
        path = f"{where}{member[:1].lower()}{member[1:]}"
        raise ApiError(
            VALIDATION,
            f"1 validation error detected: Value null at '{path}' failed to satisfy "
            "constraint: Member must not be null",
        )
    return body[member]


def string(
    value: Any, member: str, *, low: int = 0, high: int | None = None, pattern: str | None = None
) -> str:
    if not isinstance(value, str):
        raise invalid(value, member, "Member must be a string")
    if len(value) < low or (high is not None and len(value) > high):
        limit = f"less than or equal to {high} and at least {low}" if high else f"at least {low}"
        raise invalid(value, member, f"Member must have length {limit}")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise invalid(value, member, f"Member must satisfy regular expression pattern: {pattern}")
    return value


def integer(value: Any, member: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(value, member, "Member must be an integer")
    if value < low or (high is not None and value > high):
        limit = f"less than or equal to {high} and at least {low}" if high else f"at least {low}"
        raise invalid(value, member, f"Member must have value {limit}")
    return value


def name_of(body: dict[str, Any], member: str) -> str:
    lowered = f"{member[:1].lower()}{member[1:]}"
    return string(required(body, member), lowered, low=1, high=63, pattern=NAME_PATTERN)


def tags_of(value: Any) -> tuple[dict[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 50:
        raise invalid(value, "tags", "Member must be a list of at most 50 tags")
    for index, tag in enumerate(value):
        if not isinstance(tag, dict):
            raise invalid(tag, f"tags.{index + 1}", "Member must be a structure")
        string(
            required(tag, "Key", f"tags.{index + 1}."),
            "tags.key",
            low=1,
            high=128,
            pattern=TAG_PATTERN,
        )
        string(
            required(tag, "Value", f"tags.{index + 1}."),
            "tags.value",
            high=256,
            pattern=TAG_PATTERN,
        )
    return tuple({"Key": t["Key"], "Value": t["Value"]} for t in value)


def page_of(
    body: dict[str, Any],
    items: Sequence[Any],
    kind: str,
    *,
    created: Callable[[Any], float] = lambda item: float(item.created_at),
) -> tuple[list[Any], dict[str, str]]:
    """One page of ``items``: filtered by CreationTimeAfter/Before, sorted, from the
    NextToken's offset; the token for the next page when there is one."""
    sort = body.get("SortOrder", "Descending")
    if sort not in ("Ascending", "Descending"):
        raise invalid(
            sort, "sortOrder", "Member must satisfy enum value set: [Ascending, Descending]"
        )
    size = integer(body.get("MaxResults", DEFAULT_PAGE_SIZE), "maxResults", low=1, high=100)
    bounds = []
    for member in ("CreationTimeAfter", "CreationTimeBefore"):
        value = body.get(member)
        bounds.append(None if value is None else parse_timestamp(str(value), member))
    after, before = bounds
    chosen = [
        item
        for item in items
        if (after is None or created(item) >= after) and (before is None or created(item) <= before)
    ]
    chosen.sort(key=created, reverse=sort == "Descending")
    query = hashlib.sha256(f"{kind}|{sort}|{after}|{before}".encode()).hexdigest()[:16]
    offset = 0
    token = body.get("NextToken")
    if token is not None:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(str(token).encode()))
            if data["q"] != query:
                raise ValueError("a token of another query")
            offset = int(data["o"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ApiError(VALIDATION, "The NextToken is invalid for this request") from exc
    page = chosen[offset : offset + size]
    if offset + size < len(chosen):
        raw = json.dumps({"q": query, "o": offset + size}).encode()
        return page, {"NextToken": base64.urlsafe_b64encode(raw).decode()}
    return page, {}
