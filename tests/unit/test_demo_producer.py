"""The demo's synthetic model: seeded, and its events follow the configured distributions."""

from __future__ import annotations

import json
from collections import Counter
from statistics import fmean

import pytest

from stream_router.demo.producer import (
    MALFORMED_KINDS,
    PredictionGenerator,
    SyntheticEvent,
    malformed_positions,
)
from stream_router.demo.settings import Beta, ProducerSettings


def _content(event: SyntheticEvent) -> dict[str, object] | bytes:
    """The event without its wall-clock timestamp (the only part a seed does not fix)."""
    try:
        data = json.loads(event.value)
    except ValueError:
        return event.value
    data.pop("timestamp", None)
    return dict(data)


def many(**fields: object) -> list[SyntheticEvent]:
    settings = ProducerSettings.model_validate({"rate_per_s": 1000, "duration_s": 20, **fields})
    return list(PredictionGenerator(settings).events())


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = [_content(e) for e in many(seed=3)]
    again = [_content(e) for e in many(seed=3)]
    other = [_content(e) for e in many(seed=4)]
    assert first == again
    assert first != other


def test_count_is_rate_times_duration_with_unique_ids() -> None:
    events = list(PredictionGenerator(ProducerSettings(rate_per_s=7, duration_s=3)).events())
    assert len(events) == 21
    assert len({e.event_id for e in events}) == 21


def test_labels_accuracy_and_confidence_follow_the_settings() -> None:
    events = [e for e in many(malformed=0) if e.malformed is None]
    assert len(events) == 20_000
    truths = Counter(e.truth for e in events)
    mix = ProducerSettings().label_mix
    for label, weight in mix.items():
        assert truths[label] / len(events) == pytest.approx(weight / sum(mix.values()), abs=0.015)
    right = [e for e in events if e.label == e.truth]
    wrong = [e for e in events if e.label != e.truth]
    assert len(right) / len(events) == pytest.approx(0.85, abs=0.01)
    # Beta(8, 2) has mean 0.8, Beta(3, 3) mean 0.5
    assert fmean(e.confidence or 0 for e in right) == pytest.approx(0.8, abs=0.01)
    assert fmean(e.confidence or 0 for e in wrong) == pytest.approx(0.5, abs=0.015)
    assert all(0 <= (e.confidence or 0) <= 1 for e in events)


def test_a_perfect_model_with_a_fixed_mix() -> None:
    events = many(
        model_accuracy=1.0,
        label_mix={"a": 1, "b": 0},
        confidence_right=Beta(alpha=50, beta=1),
        malformed=0,
    )
    assert {(e.label, e.truth) for e in events} == {("a", "a")}
    assert min(e.confidence or 0 for e in events) > 0.8


def test_event_carries_what_the_router_and_the_reviewers_read() -> None:
    event = next(PredictionGenerator(ProducerSettings(malformed=0)).events())
    data = json.loads(event.value)
    assert data["event_id"] == event.event_id
    assert data["label"] == event.label
    assert data["confidence"] == event.confidence
    assert data["ground_truth"] == event.truth
    assert data["model"] == "pets-v1"


def test_malformed_events_are_spread_and_really_malformed() -> None:
    events = list(PredictionGenerator(ProducerSettings(rate_per_s=10, duration_s=3)).events())
    bad = [(i, e) for i, e in enumerate(events) if e.malformed]
    assert [i for i, _ in bad] == [5, 15, 25]
    assert [e.malformed for _, e in bad] == list(MALFORMED_KINDS)
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0][1].value)
    assert "confidence" not in json.loads(bad[1][1].value)
    assert json.loads(bad[2][1].value)["confidence"] > 1


@pytest.mark.parametrize(("total", "count", "expected"), [(10, 0, 0), (4, 9, 4), (100, 5, 5)])
def test_malformed_positions(total: int, count: int, expected: int) -> None:
    positions = malformed_positions(total, count)
    assert len(positions) == expected
    assert all(0 <= p < total for p in positions)


def test_label_mix_needs_two_labels() -> None:
    with pytest.raises(ValueError, match="label_mix"):
        ProducerSettings(label_mix={"cat": 1})
