"""Completion: loop events to published results, escalations and dead letters."""

from __future__ import annotations

from typing import Any

import orjson

from stream_router.envelope import review_request
from stream_router.models import Prediction, SourceRef
from stream_router.naming import attempt_name, first_name_of, is_valid_loop_name, loop_name
from stream_router.policies.routes import Decision
from stream_router.review.backend import ReviewStatus
from stream_router.review.completion import Action, Completer
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.fake import FakeReviewBackend
from stream_router.review.ledger import LedgerEntry
from stream_router.settings import ReviewSettings
from tests.envelope_schema import envelope_validator

NOW = 1_700_000_100.0


def request() -> dict[str, Any]:
    prediction = Prediction(
        "e1", "cat", 0.4, None, "m", "1", 1_700_000_000.0, {"label": "cat"},
        SourceRef("in", 0, 7, b"k1", None),
    )  # fmt: skip
    decision = Decision(True, "general", "fd-general", "low", "confidence 0.4 < 0.7")
    raw: dict[str, Any] = orjson.loads(
        review_request(prediction, decision, "1", "e1-loop", 1_700_000_001.0)
    )
    return raw


async def setup(**settings: Any) -> tuple[Completer, FakeReviewBackend, LedgerEntry]:
    backend = FakeReviewBackend(clock=lambda: NOW)
    req = request()
    await backend.start("e1-loop", "fd-general", {"label": "cat"})
    entry = LedgerEntry("e1-loop", "e1-loop", "general", "fd-general", 1, NOW - 50, NOW + 1e4, req)
    completer = Completer(backend, ReviewSettings.model_validate(settings), clock=lambda: NOW)
    return completer, backend, entry


async def test_completed_review_is_published_reviewed() -> None:
    completer, backend, entry = await setup()
    state = backend.complete("e1-loop", "dog", "dog", "cat")
    event = LoopEvent("e1-loop", EventSource.EVENTBRIDGE, state.status, state.output_uri)
    completion = await completer.complete(event, entry)
    assert completion.action is Action.PUBLISH
    assert completion.outcome == "reviewed"
    assert completion.record is not None
    envelope = orjson.loads(completion.record)
    envelope_validator().validate(envelope)
    assert envelope["decision"] == "reviewed"
    assert envelope["review"]["label"] == "dog"
    assert envelope["review"]["agreement"] == 2 / 3
    assert envelope["review"]["corrected"] is True
    assert envelope["key"] == "k1"


async def test_s3_notification_without_status_counts_as_output() -> None:
    completer, backend, entry = await setup()
    state = backend.complete("e1-loop", "cat")
    event = LoopEvent("e1-loop", EventSource.S3_OUTPUT, None, state.output_uri)
    completion = await completer.complete(event, entry)
    assert completion.outcome == "reviewed"


async def test_open_review_waits() -> None:
    completer, _, entry = await setup()
    event = LoopEvent("e1-loop", EventSource.RECONCILER, ReviewStatus.IN_PROGRESS)
    assert (await completer.complete(event, entry)).action is Action.WAIT


async def test_expired_review_is_published_unreviewed_by_default() -> None:
    completer, backend, entry = await setup()
    backend.fail("e1-loop")
    event = LoopEvent(
        "e1-loop", EventSource.EVENTBRIDGE, ReviewStatus.FAILED, None, None, "Expired", "late"
    )
    completion = await completer.complete(event, entry)
    assert completion.outcome == "unreviewed"
    assert completion.record is not None
    envelope = orjson.loads(completion.record)
    envelope_validator().validate(envelope)
    assert envelope["decision"] == "unreviewed"
    assert envelope["review"]["failure_code"] == "Expired"


async def test_escalation_then_fallback() -> None:
    completer, _, entry = await setup(
        on_failure="escalate", escalation_flows={"general": "fd-experts"}, max_attempts=2
    )
    failed = LoopEvent(
        "e1-loop", EventSource.EVENTBRIDGE, ReviewStatus.FAILED, None, None, "Expired"
    )
    first = await completer.complete(failed, entry)
    assert (first.action, first.next_flow) == (Action.ESCALATE, "fd-experts")
    second_entry = LedgerEntry(
        attempt_name("e1-loop", 2),
        "e1-loop",
        "general",
        "fd-experts",
        2,
        NOW,
        NOW + 1,
        entry.request,
    )
    second = await completer.complete(failed, second_entry)
    assert second.outcome == "unreviewed"  # attempts used up: the model's decision, marked


async def test_dead_letter_on_failure() -> None:
    completer, _, entry = await setup(on_failure="dead-letter")
    stopped = LoopEvent("e1-loop", EventSource.EVENTBRIDGE, ReviewStatus.STOPPED)
    completion = await completer.complete(stopped, entry)
    assert completion.action is Action.DEAD_LETTER
    assert completion.record is not None
    record = orjson.loads(completion.record)
    assert record["reason_class"] == "NoOutput"
    assert record["review_request"]["event_id"] == "e1"


def test_attempt_names_stay_valid_and_map_back() -> None:
    first = loop_name("x" * 200, "v1")
    assert len(first) == 60
    for attempt in range(1, 10):
        name = attempt_name(first, attempt)
        assert is_valid_loop_name(name)
        assert first_name_of(name) == first
    assert first_name_of("plain-name-a2") == "plain-name-a2"  # not one of our names
