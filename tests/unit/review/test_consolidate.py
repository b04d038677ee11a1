"""Answer consolidation: majority, agreement, ties, missing answers, multi-select."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_router.review.backend import ReviewResult, WorkerAnswer
from stream_router.review.consolidate import answer_at, consolidate


def worker(
    worker_id: str,
    content: Mapping[str, Any],
    submitted_at_s: float | None = None,
    accepted_at_s: float | None = None,
) -> WorkerAnswer:
    return WorkerAnswer(
        worker_id=worker_id,
        content=content,
        accepted_at_s=accepted_at_s,
        submitted_at_s=submitted_at_s,
        time_spent_s=None if accepted_at_s is None or submitted_at_s is None else 1.0,
    )


def result(*answers: WorkerAnswer) -> ReviewResult:
    return ReviewResult(name="loop-1", flow="fd-animals", answers=answers)


def classified(label: str) -> dict[str, Any]:
    return {"label": {"label": label}}


def test_single_worker() -> None:
    outcome = consolidate(result(worker("w1", classified("cat"), 20.0, 10.0)))
    assert (outcome.label, outcome.agreement, outcome.workers, outcome.answered) == ("cat", 1, 1, 1)
    assert not outcome.tie
    assert (outcome.first_accepted_s, outcome.last_submitted_s) == (10.0, 20.0)
    assert (outcome.name, outcome.flow, outcome.answer_path) == (
        "loop-1",
        "fd-animals",
        "label.label",
    )


def test_majority_of_three() -> None:
    outcome = consolidate(
        result(
            worker("w1", classified("dog"), 1.0),
            worker("w2", classified("cat"), 2.0),
            worker("w3", classified("cat"), 3.0),
        )
    )
    assert outcome.label == "cat"
    assert outcome.agreement == pytest.approx(2 / 3)
    assert not outcome.tie
    assert [a.answer for a in outcome.answers] == ["dog", "cat", "cat"]
    assert [a.worker_id for a in outcome.answers] == ["w1", "w2", "w3"]


def test_one_of_three_answered() -> None:
    outcome = consolidate(
        result(
            worker("w1", {}, 1.0),
            worker("w2", classified("cat"), 2.0),
            worker("w3", {"label": {"label": "  "}}, 3.0),
        )
    )
    assert (outcome.label, outcome.workers, outcome.answered) == ("cat", 3, 1)
    assert outcome.agreement == pytest.approx(1 / 3)  # abstentions weigh against agreement
    assert outcome.answers[0].content == {}  # raw content kept even without an answer


def test_all_missing_gives_no_label() -> None:
    outcome = consolidate(result(worker("w1", {}), worker("w2", {"other": {"label": "cat"}})))
    assert (outcome.label, outcome.agreement, outcome.answered, outcome.tie) == (None, 0, 0, False)
    assert outcome.last_submitted_s is None


def test_no_workers() -> None:
    outcome = consolidate(result())
    assert (outcome.label, outcome.agreement, outcome.workers) == (None, 0, 0)


def test_tie_goes_to_the_earliest_submission() -> None:
    outcome = consolidate(
        result(worker("w1", classified("dog"), 9.0), worker("w2", classified("cat"), 5.0))
    )
    assert (outcome.label, outcome.agreement, outcome.tie) == ("cat", 0.5, True)


def test_tie_without_times_goes_to_result_order() -> None:
    outcome = consolidate(result(worker("w1", classified("dog")), worker("w2", classified("cat"))))
    assert (outcome.label, outcome.tie) == ("dog", True)
    timed_later = consolidate(
        result(worker("w1", classified("dog")), worker("w2", classified("cat"), 100.0))
    )
    assert timed_later.label == "cat"  # a known time beats an unknown one


def test_multi_select_is_a_set() -> None:
    outcome = consolidate(
        result(
            worker("w1", {"tags": {"labels": ["b", "a"]}}, 1.0),
            worker("w2", {"tags": {"labels": ["a", "b", "a"]}}, 2.0),
            worker("w3", {"tags": {"labels": ["a"]}}, 3.0),
        ),
        answer_path="tags.labels",
    )
    assert outcome.label == ("a", "b")
    assert outcome.agreement == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("content", "path", "expected"),
    [
        ({"n": "free text"}, "n", "free text"),
        ({"n": {"value": True}}, "n.value", True),
        ({"n": {"value": 3}}, "n.value", 3),
        ({"n": {"labels": []}}, "n.labels", None),
        ({"n": {"labels": [{"x": 1}]}}, "n.labels", None),
        ({"n": {"label": "cat"}}, "n", None),  # an object is not an answer: wrong path
        ({"n": None}, "n", None),
        ({"n": ""}, "n", None),
        ({"n": float("nan")}, "n", None),
        ({"n": "cat"}, "n.label", None),
    ],
)
def test_answer_at(content: Mapping[str, Any], path: str, expected: object) -> None:
    assert answer_at(content, path.split(".")) == expected


def test_true_is_not_one() -> None:
    outcome = consolidate(
        result(
            worker("w1", {"n": 1}, 1.0),
            worker("w2", {"n": True}, 2.0),
            worker("w3", {"n": 1.0}, 3.0),
        ),
        answer_path="n",
    )
    assert outcome.label == 1
    assert outcome.label is not True
    assert outcome.agreement == pytest.approx(2 / 3)


@pytest.mark.parametrize("path", ["", "label.", ".label", "a..b"])
def test_rejects_bad_paths(path: str) -> None:
    with pytest.raises(ValueError, match="answer_path"):
        consolidate(result(), answer_path=path)


labels = st.sampled_from(["cat", "dog", "bird", ""])
contents = st.one_of(
    labels.map(classified),
    st.just({}),
    st.lists(labels, max_size=3).map(lambda ls: {"label": {"label": ls}}),
)
workers = st.lists(
    st.tuples(contents, st.one_of(st.none(), st.floats(min_value=0, max_value=100))),
    max_size=5,
)


@given(workers)
def test_properties(answers: list[tuple[dict[str, Any], float | None]]) -> None:
    review = result(*(worker(f"w{i}", c, t) for i, (c, t) in enumerate(answers)))
    outcome = consolidate(review)
    assert 0 <= outcome.agreement <= 1
    assert outcome.workers == len(answers)
    given_answers = [a.answer for a in outcome.answers if a.answer is not None]
    assert len(given_answers) == outcome.answered
    if given_answers:
        assert outcome.label in given_answers
        top = given_answers.count(outcome.label)
        assert all(given_answers.count(other) <= top for other in given_answers)
        assert outcome.agreement == pytest.approx(top / outcome.workers)
    else:
        assert outcome.label is None
        assert outcome.agreement == 0
    assert consolidate(review) == outcome  # deterministic
