"""Loop-events records are untrusted: anything that can write the topic can write anything, so
every member is checked before a notice reaches the scheduler (it dead-letters the rest)."""

from __future__ import annotations

import pytest

from stream_router.review.backend import ReviewStatus
from stream_router.review.events import (
    MAX_TEXT_CHARS,
    EventSource,
    LoopEvent,
    MalformedLoopEvent,
)

GOOD = LoopEvent("r-1", EventSource.EVENTBRIDGE, ReviewStatus.COMPLETED, "s3://b/k/output.json",
                 "arn:flow", None, None, 1.5, 1.0)  # fmt: skip


def test_an_event_reads_back_as_written() -> None:
    assert LoopEvent.parse(GOOD.to_json()) == GOOD


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "has no value"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'"r-1"', "a JSON str, not an object"),
        (b'{"source": "reconciler"}', "name is not a review name"),
        (b'{"name": 7, "source": "reconciler"}', "name is not a review name"),
        (b'{"name": "R 1!", "source": "reconciler"}', "name is not a review name"),
        (b'{"name": "r-1", "source": ["reconciler"]}', "source is not one of"),
        (b'{"name": "r-1", "source": "reconciler", "status": "Done"}', "status is not one of"),
        (b'{"name": "r-1", "source": "reconciler", "output_uri": {"a": 1}}',
         "output_uri is a dict, not a string"),
        (b'{"name": "r-1", "source": "reconciler", "failure_reason": "'
         + b"x" * (MAX_TEXT_CHARS + 1) + b'"}', f"at most {MAX_TEXT_CHARS}"),
        (b'{"name": "r-1", "source": "reconciler", "observed_at_s": true}',
         "observed_at_s is not a number"),
        (b'{"name": "r-1", "source": "reconciler", "event_time_s": "today"}',
         "event_time_s is not a number"),
        (b'{"name": "r-1", "source": "reconciler", "event_time_s": 1e999}',
         "not JSON|event_time_s is not a number"),  # orjson refuses infinity itself
    ],
)  # fmt: skip
def test_anything_else_is_malformed_with_its_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedLoopEvent, match=reason):
        LoopEvent.parse(raw)
