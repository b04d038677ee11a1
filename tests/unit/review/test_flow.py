"""The review flow without faust: copies of a request, every way a request ends, loop events.

The request audit (``review/audit.py``) relies on two promises checked here: every way a
request ends leaves a ledger entry, and a copy of a request still in hand starts nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_router.envelope import review_request
from stream_router.errors import ReviewNameConflict, ReviewRejected, UpstreamError
from stream_router.metrics import ReviewMetrics
from stream_router.models import Prediction, SourceRef
from stream_router.naming import attempt_name
from stream_router.policies.routes import Decision
from stream_router.review.backend import StartOutcome
from stream_router.review.budget import Budget, BudgetLimits
from stream_router.review.completion import Completer
from stream_router.review.events import EventSource, LoopEvent
from stream_router.review.fake import FakeReviewBackend
from stream_router.review.flow import Outlets, ReviewFlow
from stream_router.review.limiter import RateLimiter
from stream_router.review.reconciler import Reconciler
from stream_router.review.shares import PartitionBudgets
from stream_router.review.starter import Starter
from stream_router.review.supervision import Supervisor
from stream_router.settings import ReviewSettings

NOW = 1_700_000_000.0
FLOW = "arn:aws:sagemaker:us-east-1:000000000000:flow-definition/fast"


class GatedBackend(FakeReviewBackend):
    """Starts wait for ``gate``; ``entered`` is set when a start begins."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: NOW)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def start(self, name: str, flow: str, content: Mapping[str, Any]) -> StartOutcome:
        self.entered.set()
        await self.gate.wait()
        return await super().start(name, flow, content)


class Sent:
    """Every record the flow published, by outlet."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {"output": [], "dead_letter": []}
        self.events: list[LoopEvent] = []

    def outlet(self, name: str) -> Any:
        async def send(key: bytes | None, value: bytes) -> None:
            self.records.setdefault(name, []).append(orjson.loads(value))

        return send

    async def loop_event(self, event: LoopEvent) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def make_flow(
    backend: FakeReviewBackend, clock: Any = lambda: NOW, **review: Any
) -> tuple[ReviewFlow, dict[str, Any], Sent]:
    settings = ReviewSettings.model_validate({"topic_partitions": 2, **review})
    limits = {
        route: BudgetLimits(per_hour=b.per_hour, per_day=b.per_day)
        for route, b in settings.budgets.items()
    }
    ledger: dict[str, Any] = {}
    sent = Sent()
    flow = ReviewFlow(
        settings,
        backend=backend,
        starter=Starter(backend, RateLimiter(1000.0, 100), Budget({}), projection=[], clock=clock),
        completer=Completer(backend, settings, clock=clock),
        ledger=ledger,
        budgets=PartitionBudgets(limits, BudgetLimits(), settings.topic_partitions, {}),
        outlets=Outlets(
            output=sent.outlet("output"),
            dead_letter=sent.outlet("dead_letter"),
            requests=sent.outlet("requests"),
            loop_events=sent.loop_event,
        ),
        metrics=ReviewMetrics(CollectorRegistry()),
        supervisor=Supervisor(300.0),
        owned=lambda: [0],
        stopping=lambda: False,
        stop=asyncio.Event(),
        clock=clock,
    )
    return flow, ledger, sent


def request(event_id: str = "e1", **event: Any) -> dict[str, Any]:
    """A review request as ingest writes it (the wire builder), named ``<event_id>-loop``."""
    prediction = Prediction(
        event_id=event_id,
        label="cat",
        confidence=0.4,
        scores={"cat": 0.4, "dog": 0.35},
        model_name="animals",
        model_version="7",
        timestamp_s=NOW,
        event={"label": "cat", **event},
        source=SourceRef("predictions", 0, 12, b"k1", int(NOW * 1000)),
    )
    decision = Decision(True, "general", FLOW, "confidence", "0.4 < 0.6")
    parsed: dict[str, Any] = orjson.loads(
        review_request(prediction, decision, "v1", f"{event_id}-loop", NOW)
    )
    return parsed


async def test_a_copy_of_a_request_in_hand_starts_nothing() -> None:
    backend = GatedBackend()
    flow, ledger, _ = make_flow(backend)
    first = asyncio.create_task(flow.request(request(), "e1-loop", 0))
    await backend.entered.wait()  # the first copy is inside StartHumanLoop

    # A copy (re-sent by the audit) arrives; without the guard it would wait at the gate too.
    await asyncio.wait_for(flow.request(request(), "e1-loop", 0), 5)
    assert "e1-loop" in flow.in_hand
    backend.gate.set()
    await first

    assert backend.start_calls == ["e1-loop"]
    assert flow.in_flight == 1
    assert ledger["e1-loop"]["name"] == "e1-loop"
    assert flow.in_hand == set()


async def test_a_request_with_a_ledger_entry_does_nothing() -> None:
    backend = FakeReviewBackend(clock=lambda: NOW)
    flow, ledger, sent = make_flow(backend)
    await flow.request(request(), "e1-loop", 0)
    entry = dict(ledger["e1-loop"])
    await flow.request(request(), "e1-loop", 0)
    assert backend.start_calls == ["e1-loop"]
    assert ledger["e1-loop"] == entry
    assert flow.in_flight == 1
    assert sent.records == {"output": [], "dead_letter": []}


@pytest.mark.parametrize(
    ("review", "event", "fail", "where", "decision"),
    [
        ({"budgets": {"general": {"per_day": 0}}, "budget_fallback": "accept-unreviewed"},
         {}, None, "output", "unreviewed"),
        ({"budgets": {"general": {"per_day": 0}}, "budget_fallback": "dead-letter"},
         {}, None, "dead_letter", None),
        ({}, {"blob": "x" * 3_200_000}, None, "output", "unreviewed"),
        ({}, {}, ReviewRejected("ValidationException: bad input"), "dead_letter", None),
        ({}, {}, ReviewNameConflict("the name is taken on another flow"), "dead_letter", None),
    ],
    ids=["over-budget-accept", "over-budget-dead-letter", "oversize", "rejected", "conflict"],
)  # fmt: skip
async def test_every_request_that_starts_no_review_leaves_a_closed_ledger_entry(
    review: dict[str, Any],
    event: dict[str, Any],
    fail: Exception | None,
    where: str,
    decision: str | None,
) -> None:
    backend = FakeReviewBackend(clock=lambda: NOW)
    if fail is not None:
        backend.fail_next(fail)
    flow, ledger, sent = make_flow(backend, **review)
    await flow.request(request(**event), "e1-loop", 0)

    assert ledger["e1-loop"]["closed"] is True
    [record] = sent.records[where]
    other = "dead_letter" if where == "output" else "output"
    assert sent.records[other] == []
    if decision is not None:
        assert record["decision"] == decision
    assert flow.in_flight == 0
    await flow.request(request(**event), "e1-loop", 0)  # a copy publishes nothing more
    assert len(sent.records[where]) == 1


async def test_a_loop_event_publishes_once_and_closes_the_entry() -> None:
    backend = FakeReviewBackend(clock=lambda: NOW)
    flow, ledger, sent = make_flow(backend)
    await flow.request(request(), "e1-loop", 0)
    state = backend.complete("e1-loop", "dog")
    event = LoopEvent("e1-loop", EventSource.EVENTBRIDGE, state.status, state.output_uri, FLOW)

    await flow.loop_event("e1-loop", event, 0)
    await flow.loop_event("e1-loop", event, 0)  # a second notice

    [reviewed] = sent.records["output"]
    assert reviewed["decision"] == "reviewed"
    assert reviewed["review"]["label"] == "dog"
    assert ledger["e1-loop"]["closed"] is True
    assert flow.in_flight == 0


async def test_closed_entries_are_deleted_after_the_retention_in_their_own_partition() -> None:
    clock = Clock()
    backend = FakeReviewBackend(clock=clock)
    budgets = {"general": {"per_day": 0}}  # every request ends at once, unreviewed
    flow, ledger, _ = make_flow(
        backend, clock, ledger_retention_s=100, budgets=budgets, budget_fallback="accept-unreviewed"
    )
    await flow.request(request("a"), "a-loop", 0)
    await flow.request(request("b"), "b-loop", 1)
    clock.now += 50
    await flow.request(request("c"), "c-loop", 0)

    clock.now += 60  # a and b closed 110 s ago, c 60 s ago
    assert flow.prune(0) == 1
    assert set(ledger) == {"b-loop", "c-loop"}
    assert flow.prune(1) == 1
    assert set(ledger) == {"c-loop"}

    flow.forget_closed()  # a rebalance: the index is rebuilt from the ledger
    assert flow.prune(0) == 0
    clock.now += 50
    assert flow.prune(0) == 1
    assert ledger == {}


async def test_an_entry_opened_again_is_not_deleted_and_deletions_are_bounded() -> None:
    clock = Clock()
    budgets = {"general": {"per_day": 0}}
    flow, ledger, _ = make_flow(
        FakeReviewBackend(clock=clock), clock, ledger_retention_s=10, budgets=budgets,
        budget_fallback="accept-unreviewed",
    )  # fmt: skip
    for i in range(3):
        await flow.request(request(f"e{i}"), f"e{i}-loop", 0)
    assert flow.prune(0) == 0  # the index is built now; nothing has expired
    ledger["e0-loop"] = {"name": "e0-loop-2", "attempt": 2}  # an escalation re-opened it
    clock.now += 5
    for i in (3, 4):  # closed while the index exists: added to it
        await flow.request(request(f"e{i}"), f"e{i}-loop", 0)

    clock.now += 6  # e0-e2 closed 11 s ago, e3 and e4 6 s ago
    assert flow.prune(0, limit=1) == 1
    assert set(ledger) == {"e0-loop", "e2-loop", "e3-loop", "e4-loop"}
    assert flow.prune(0) == 1
    assert set(ledger) == {"e0-loop", "e3-loop", "e4-loop"}
    clock.now += 5
    assert flow.prune(0) == 2
    assert set(ledger) == {"e0-loop"}


async def test_an_escalation_whose_start_fails_is_held_and_re_sent_by_the_reconciler() -> None:
    clock = Clock()
    backend = FakeReviewBackend(clock=clock)
    second = FLOW.replace("fast", "experts")
    flow, ledger, sent = make_flow(
        backend, clock, on_failure="escalate", escalation_flows={"general": second}
    )
    await flow.request(request(), "e1-loop", 0)
    state = backend.fail("e1-loop")
    failed = LoopEvent("e1-loop", EventSource.EVENTBRIDGE, state.status, None, FLOW, "Expired")
    backend.fail_next(UpstreamError("connection reset"))
    with pytest.raises(UpstreamError):
        await flow.loop_event("e1-loop", failed, 0)
    assert ledger["e1-loop"]["held"] is True  # the next attempt, not started, is on record
    assert (ledger["e1-loop"]["attempt"], ledger["e1-loop"]["flow"]) == (2, second)
    await flow.loop_event("e1-loop", failed, 0)  # the retry of the event does nothing
    assert flow.in_flight == 0
    assert flow.held == set()

    clock.now += 60
    await Reconciler(flow, flow.metrics, grace_s=30, clock=clock).resend_orphaned_holds()
    [handed_back] = sent.records["requests"]
    await flow.request(handed_back, "e1-loop", 0)
    second_name = attempt_name("e1-loop", 2)
    assert backend.states[second_name].flow == second
    assert ledger["e1-loop"]["name"] == second_name
    assert flow.in_flight == 1
    assert sent.records["output"] == []
