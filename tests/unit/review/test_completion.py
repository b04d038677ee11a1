"""Completion: ended reviews to published results, escalations and dead letters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_router.envelope import review_request
from stream_router.models import Prediction, SourceRef
from stream_router.naming import attempt_name, first_name_of, is_valid_loop_name, loop_name
from stream_router.policies.routes import Decision
from stream_router.review.backend import ReviewStatus
from stream_router.review.completion import Action, Completer
from stream_router.review.ledger import End, Entry, State
from stream_router.review.request import ReviewRequest
from stream_router.settings import ReviewSettings
from stream_router.testing import FakeReviewBackend
from tests.envelope_schema import envelope_validator

NOW = 1_700_000_100.0


def request() -> ReviewRequest:
    """A request as ingest writes it, parsed as the review role does."""
    prediction = Prediction(
        "e1", "cat", 0.4, None, "m", "1", 1_700_000_000.0, {"label": "cat"},
        SourceRef("in", 0, 7, b"k1", None),
    )  # fmt: skip
    decision = Decision(True, "general", "fd-general", "low", "confidence 0.4 < 0.7")
    return ReviewRequest.parse(
        review_request(prediction, decision, "1", "e1-loop", 1_700_000_001.0)
    )


def ended(end: End, *, attempt: int = 1, flow: str = "fd-general", **changes: Any) -> Entry:
    """The ledger entry of review ``e1-loop`` (attempt ``attempt``) once a watcher saw it end."""
    return Entry(
        first_name="e1-loop",
        state=State.ENDED,
        attempt=attempt,
        flow=flow,
        recorded_s=NOW - 60,
        since_s=NOW,
        request=request(),
        started_s=NOW - 50,
        deadline_s=NOW + 1e4,
        end=end,
        **changes,
    )


async def setup(**settings: Any) -> tuple[Completer, FakeReviewBackend]:
    backend = FakeReviewBackend(clock=lambda: NOW)
    await backend.start("e1-loop", "fd-general", {"label": "cat"})
    completer = Completer(backend, ReviewSettings.model_validate(settings), clock=lambda: NOW)
    return completer, backend


async def test_completed_review_is_published_reviewed() -> None:
    completer, backend = await setup()
    state = backend.complete("e1-loop", "dog", "dog", "cat")
    entry = ended(End(state.status, state.output_uri, source="eventbridge"))
    completion = await completer.complete(entry)
    assert completion.action is Action.PUBLISH
    assert completion.outcome == "reviewed"
    assert completion.record is not None
    envelope = orjson.loads(completion.record)
    envelope_validator().validate(envelope)
    assert envelope["decision"] == "reviewed"
    assert envelope["review"]["label"] == "dog"
    assert envelope["review"]["agreement"] == 2 / 3
    assert envelope["review"]["corrected"] is True
    assert envelope["review"]["started_s"] == NOW - 50
    assert envelope["key"] == "k1"


async def test_s3_notification_without_status_counts_as_output() -> None:
    completer, backend = await setup()
    state = backend.complete("e1-loop", "cat")
    completion = await completer.complete(ended(End(None, state.output_uri, source="s3")))
    assert completion.action is Action.PUBLISH
    assert completion.outcome == "reviewed"


async def test_stopped_with_output_is_published_reviewed() -> None:
    completer, backend = await setup()
    state = backend.complete("e1-loop", "cat")
    completion = await completer.complete(ended(End(ReviewStatus.STOPPED, state.output_uri)))
    assert completion.outcome == "reviewed"
    assert completion.record is not None
    assert orjson.loads(completion.record)["review"]["status"] == "Stopped"


async def test_completed_without_output_is_a_failure() -> None:
    completer, _ = await setup()
    completion = await completer.complete(ended(End(ReviewStatus.COMPLETED)))
    assert completion.outcome == "unreviewed"
    assert completion.record is not None
    assert orjson.loads(completion.record)["review"]["failure_code"] == "NoOutput"


@pytest.mark.parametrize("status", [ReviewStatus.IN_PROGRESS, ReviewStatus.STOPPING])
async def test_open_review_waits(status: ReviewStatus) -> None:
    completer, _ = await setup()
    completion = await completer.complete(ended(End(status, source="reconciler")))
    assert completion.action is Action.WAIT
    assert completion.outcome == "open"


async def test_expired_review_is_published_unreviewed_by_default() -> None:
    completer, backend = await setup()
    backend.fail("e1-loop")
    entry = ended(End(ReviewStatus.FAILED, None, "Expired", "late"))
    completion = await completer.complete(entry)
    assert completion.action is Action.PUBLISH
    assert completion.outcome == "unreviewed"
    assert completion.record is not None
    envelope = orjson.loads(completion.record)
    envelope_validator().validate(envelope)
    assert envelope["decision"] == "unreviewed"
    assert envelope["review"]["failure_code"] == "Expired"
    assert envelope["review"]["reason"] == "late"
    assert envelope["review"]["status"] == "Failed"


async def test_escalation_then_fallback() -> None:
    completer, _ = await setup(
        on_failure="escalate", escalation_flows={"general": "fd-experts"}, max_attempts=2
    )
    failed = End(ReviewStatus.FAILED, None, "Expired")
    first = await completer.complete(ended(failed))
    assert (first.action, first.next_flow) == (Action.ESCALATE, "fd-experts")
    second_entry = ended(failed, attempt=2, flow="fd-experts")
    assert second_entry.name == attempt_name("e1-loop", 2)
    second = await completer.complete(second_entry)
    assert second.outcome == "unreviewed"  # attempts used up: the model's decision, marked
    assert second.record is not None
    review = orjson.loads(second.record)["review"]
    assert (review["loop_name"], review["review_flow"]) == (second_entry.name, "fd-experts")


async def test_dead_letter_on_failure() -> None:
    completer, _ = await setup(on_failure="dead-letter")
    completion = await completer.complete(ended(End(ReviewStatus.STOPPED)))
    assert completion.action is Action.DEAD_LETTER
    assert completion.record is not None
    record = orjson.loads(completion.record)
    assert record["reason_class"] == "NoOutput"
    assert record["review_request"]["event_id"] == "e1"


async def test_an_entry_that_has_not_ended_is_refused() -> None:
    completer, _ = await setup()
    started = ended(End(ReviewStatus.COMPLETED)).moved(State.STARTED, NOW, end=None)
    with pytest.raises(ValueError, match="not ended"):
        await completer.complete(started)


def test_attempt_names_stay_valid_and_map_back() -> None:
    first = loop_name("x" * 200, "v1")
    assert len(first) == 60
    for attempt in range(1, 10):
        name = attempt_name(first, attempt)
        assert is_valid_loop_name(name)
        assert first_name_of(name) == first
    assert first_name_of("plain-name-a2") == "plain-name-a2"  # not one of our names


DISAGREEMENT = {
    "escalation_flows": {"general": "fd-experts"},
    "escalate_below_agreement": {"general": 0.66},
    "max_attempts": 2,
}


@pytest.mark.parametrize(
    ("labels", "attempt", "action"),
    [
        (("dog", "cat", "bird"), 1, Action.ESCALATE),  # 1 of 3 agree: below 0.66
        (("dog", "dog", "cat"), 1, Action.PUBLISH),  # 2 of 3: enough
        (("dog", "cat", "bird"), 2, Action.PUBLISH),  # the last attempt publishes what it has
    ],
)
async def test_disagreement_escalates_while_attempts_remain(
    labels: tuple[str, ...], attempt: int, action: Action
) -> None:
    completer, backend = await setup(**DISAGREEMENT)
    name, flow = attempt_name("e1-loop", attempt), "fd-general" if attempt == 1 else "fd-experts"
    if attempt > 1:
        await backend.start(name, flow, {"label": "cat"})
    state = backend.complete(name, *labels)
    entry = ended(End(state.status, state.output_uri), attempt=attempt, flow=flow)
    completion = await completer.complete(entry)
    assert completion.action is action
    if action is Action.ESCALATE:
        assert completion.outcome == "escalated"
        assert completion.next_flow == "fd-experts"
        assert completion.record is None  # the disagreeing answers are not published
    else:
        assert completion.record is not None
        assert orjson.loads(completion.record)["review"]["agreement"] == labels.count("dog") / 3


async def test_disagreement_on_a_route_without_the_setting_publishes() -> None:
    completer, backend = await setup(**{**DISAGREEMENT, "escalate_below_agreement": {}})
    state = backend.complete("e1-loop", "dog", "cat", "bird")
    completion = await completer.complete(ended(End(state.status, state.output_uri)))
    assert completion.action is Action.PUBLISH
