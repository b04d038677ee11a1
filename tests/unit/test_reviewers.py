"""Simulated reviewers: reproducible plans and the answer rule."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stream_router.review.content import input_content
from stream_router.sandbox.a2i.reviewers import (
    LoopPlan,
    claim,
    claimable,
    human_answers,
    iso_millis,
    lookup,
    plan_loop,
    portal_worker,
    sample,
    submit,
    true_label,
)
from stream_router.sandbox.a2i.seeds import settings_page
from stream_router.sandbox.a2i.template import elements, render
from stream_router.sandbox.settings import FlowDefinition, Latency, Reviewers, SandboxSettings
from tests.unit.review.requests import review_request

REPO = Path(__file__).resolve().parents[2]
names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)


def flow(**reviewers: object) -> FlowDefinition:
    return FlowDefinition(name="f", task_count=3, reviewers=Reviewers.model_validate(reviewers))


def plan_for(fd: FlowDefinition, name: str, content: dict[str, Any], created: float) -> LoopPlan:
    """The plan of a loop of settings flow ``fd`` (its default template: one classifier)."""
    return plan_loop(fd, name, content, created, settings_page(fd, content))


def router_content(label: str | None = None, truth: str | None = None) -> dict[str, Any]:
    """InputContent as the router writes it (``review/content.py``): the model's label under
    ``prediction``, the projected event (here with its ground truth) under ``event``."""
    event = {} if truth is None else {"ground_truth": truth}
    request = review_request("evt-1", label=label or "", **event)
    built = input_content(request, [], attempt=1)
    if label is None:
        built["prediction"]["label"] = None
        built["event"].pop("label")
    return built


@given(name=names, created=st.floats(min_value=0, max_value=4e9), seed=st.integers(0, 10**6))
def test_same_loop_same_plan(name: str, created: float, seed: int) -> None:
    fd = flow(seed=seed)
    content = router_content("cat", truth="dog")
    assert plan_for(fd, name, content, created) == plan_for(fd, name, content, created)


@given(name=names)
def test_plan_round_trips_through_json(name: str) -> None:
    plan = plan_for(flow(), name, router_content("cat"), 1_700_000_000.0)
    assert LoopPlan.from_json(plan.to_json()) == plan


def test_ground_truth_wins_over_model_label_without_errors() -> None:
    fd = flow(error_rate=0.0)
    for index in range(50):
        plan = plan_for(fd, f"loop-{index}", router_content("cat", truth="dog"), 0.0)
        assert [a.label("label") for a in plan.answers] == ["dog", "dog", "dog"]


def test_model_label_is_the_fallback() -> None:
    plan = plan_for(flow(error_rate=0.0), "x", router_content("bird"), 0.0)
    assert {a.label("label") for a in plan.answers} == {"bird"}


def test_error_rate_is_respected_roughly() -> None:
    fd = flow(error_rate=0.3)
    answers = [
        a.label("label")
        for i in range(400)
        for a in plan_for(fd, f"l{i}", router_content(truth="cat"), 0.0).answers
    ]
    wrong = sum(label != "cat" for label in answers) / len(answers)
    assert 0.25 < wrong < 0.35
    assert "cat" not in Counter(label for label in answers if label != "cat")


def test_abandoned_loops_expire_at_the_lifetime() -> None:
    fd = FlowDefinition(
        name="f", task_availability_lifetime_s=60, reviewers=Reviewers(abandon_rate=1.0)
    )
    plan = plan_for(fd, "x", router_content("cat"), 100.0)
    assert plan.expires
    assert plan.ends_at == 160.0
    assert plan.answers == ()


def test_pickup_after_the_lifetime_expires() -> None:
    fd = FlowDefinition(
        name="f",
        task_availability_lifetime_s=5,
        reviewers=Reviewers(pickup=Latency(distribution="fixed", median_s=10)),
    )
    assert plan_for(fd, "x", {}, 0.0).expires


def test_timings_are_ordered_and_distinct_workers() -> None:
    plan = plan_for(flow(), "x", router_content("cat"), 1000.0)
    assert len({a.worker_id for a in plan.answers}) == 3
    for answer in plan.answers:
        assert 1000.0 <= answer.accepted_at <= answer.submitted_at <= plan.ends_at
    assert plan.ends_at == max(a.submitted_at for a in plan.answers)
    assert plan.held_at(plan.ends_at)
    assert not plan.held_at(999.0)


@given(st.sampled_from(["fixed", "uniform", "lognormal"]), st.floats(0, 100), st.floats(0, 2))
def test_samples_are_non_negative_and_clamped(
    distribution: str, median: float, spread: float
) -> None:
    latency = Latency.model_validate(
        {"distribution": distribution, "median_s": median, "spread": spread, "max_s": 50}
    )
    value = sample(latency, random.Random(1))
    assert 0 <= value <= 50


def test_lookup_and_true_label() -> None:
    assert lookup({"a": {"b": 3}}, "a.b") == 3
    assert lookup({"a": 1}, "a.b") is None
    fd = FlowDefinition(name="f", reviewers=Reviewers(ground_truth_path="meta.truth"))
    assert true_label(fd, {"meta": {"truth": 7}, "prediction": {"label": "x"}}) == "7"
    assert true_label(fd, {"meta": {"truth": True}, "prediction": {"label": "x"}}) == "x"


def test_the_example_sandbox_config_answers_the_routers_ground_truth() -> None:
    """config/sandbox.yaml's reviewers read the fields where the router puts them."""
    settings = SandboxSettings.from_yaml(REPO / "config" / "sandbox.yaml")
    for fd in settings.flow_definitions:
        careful = fd.model_copy(
            update={"reviewers": fd.reviewers.model_copy(update={"error_rate": 0.0})}
        )
        assert true_label(careful, router_content("cat", truth="dog")) == "dog"
        assert true_label(careful, router_content("cat")) == "cat"
    assert true_label(fd, {}) is None


def test_human_answers_shape() -> None:
    fd = flow()
    plan = plan_for(fd, "x", router_content("cat"), 1_700_000_000.0)
    entries = human_answers(fd, plan, "eu-west-1")
    assert len(entries) == 3
    assert entries[0]["answerContent"] == {"label": {"label": plan.answers[0].label("label")}}
    assert entries[0]["workerMetadata"]["identityData"]["issuer"].startswith(
        "https://cognito-idp.eu-west-1.amazonaws.com/"
    )
    public = FlowDefinition(name="f", reviewers=Reviewers(workforce="public"))
    assert "workerMetadata" not in human_answers(public, plan_for(public, "x", {}, 0.0), "r")[0]


def test_iso_millis() -> None:
    assert iso_millis(1_609_181_955.1915) == "2020-12-28T18:59:15.191Z"


SURVEY = """<crowd-form>
  <crowd-classifier name="sentiment" categories="{{ task.input.choices | to_json | escape }}">
  </crowd-classifier>
  <crowd-classifier-multi-select name="topics" categories="['price', 'quality', 'delivery']">
  </crowd-classifier-multi-select>
  <crowd-text-area name="why"></crowd-text-area>
  <crowd-slider name="stars" min="1" max="5" step="1"></crowd-slider>
</crowd-form>"""


def test_answers_follow_the_template_and_the_judging_element_gets_the_truth() -> None:
    """A template's own element names and categories, not the settings' label list: the
    element named answer_name judges (ground truth, else the model's label)."""
    fd = FlowDefinition(
        name="f",
        reviewers=Reviewers(error_rate=0.0, answer_name="sentiment", labels=["unused"]),
    )
    content = {"choices": ["pos", "neg"], "prediction": {"label": "neg"}}
    page = elements(render(SURVEY, content))
    for index in range(20):
        (answer,) = plan_loop(fd, f"l{index}", content, 0.0, page).answers
        assert answer.content is not None
        assert answer.content["sentiment"] == {"label": "neg"}
        assert set(answer.content["topics"]["labels"]) <= {"price", "quality", "delivery"}
        assert isinstance(answer.content["why"], str)
        assert answer.content["stars"] in (1, 2, 3, 4, 5)


def test_a_person_takes_the_slot_of_the_simulated_worker_who_would_come_last() -> None:
    fd = flow(pickup=Latency(distribution="fixed", median_s=10.0))
    plan = plan_for(fd, "x", router_content("cat"), 0.0)
    worker = portal_worker()
    assert claimable(plan, 5.0, fd.task_count)
    taken = claim(plan, 5.0, 60.0, worker)
    humans = [a for a in taken.answers if a.human]
    assert len(humans) == 1
    assert humans[0].pending
    assert humans[0].worker_id == worker[0]
    assert humans[0].accepted_at == 5.0
    assert taken.ends_at == 65.0  # open until the person submits or their time is up
    assert not claimable(taken, 6.0, fd.task_count)  # one portal worker per loop
    assert LoopPlan.from_json(taken.to_json()) == taken

    done = submit(taken, {"label": {"label": "dog"}}, 20.0)
    assert not any(a.pending for a in done.answers)
    assert done.ends_at == max(a.submitted_at for a in done.answers)
    entries = human_answers(fd, done, "us-east-1")
    assert {"label": {"label": "dog"}} in [e["answerContent"] for e in entries]
    mine = next(e for e in entries if e["workerId"] == worker[0])
    assert mine["timeSpentInSeconds"] == 15.0


def test_held_tasks_are_not_offered_and_nobodys_tasks_are() -> None:
    fd = FlowDefinition(
        name="f", reviewers=Reviewers(pickup=Latency(distribution="fixed", median_s=1.0))
    )
    plan = plan_for(fd, "x", router_content("cat"), 0.0)
    assert claimable(plan, 0.5, 1)
    assert not claimable(plan, 1.5, 1)  # the simulated worker holds it now
    nobody = plan_for(
        FlowDefinition(
            name="f", task_availability_lifetime_s=60, reviewers=Reviewers(abandon_rate=1.0)
        ),
        "y",
        router_content("cat"),
        0.0,
    )
    assert claimable(nobody, 59.0, 1)
    assert not claimable(nobody, 60.0, 1)  # expired
    assert not claimable(nobody, 1.0, 3)  # the portal is one worker: three would never come
    taken = claim(nobody, 1.0, 30.0, portal_worker())
    assert not taken.expires
    assert [a.human for a in taken.answers] == [True]


def test_plans_stored_before_answers_followed_templates_still_load() -> None:
    stored = {
        "expires": False,
        "ends_at": 3.0,
        "answers": [
            {
                "worker_id": "w",
                "worker_sub": "s",
                "label": "cat",
                "accepted_at": 1.0,
                "submitted_at": 3.0,
            }
        ],
    }
    (answer,) = LoopPlan.from_json(stored).answers
    assert answer.content == {"label": {"label": "cat"}}
