from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stream_router.policies.sampling import _PER_BUCKET, BUCKETS, SamplePolicy
from stream_router.testing import make_prediction
from tests.unit.policies.conftest import build

percents = st.floats(min_value=0.0, max_value=100.0)
salts = st.text(max_size=16)
event_ids = st.text(max_size=40)


def policy(**params: Any) -> SamplePolicy:
    return build(SamplePolicy, params)


def test_bucket_is_the_documented_keyed_blake2b() -> None:
    # Pinned values: a change here re-draws every audit sample in production.
    assert policy(percent=5).bucket("evt-1") == 13709923198989065287
    assert policy(percent=5, salt="audit").bucket("evt-1") == 15840708211535007705


def test_the_bucket_shown_is_the_exact_quotient() -> None:
    """Reasons show ``bucket * _PER_BUCKET``: the same float as ``bucket / BUCKETS``."""
    rng = random.Random(5)
    buckets = [0, 1, 2**53 - 1, 2**53, 2**53 + 1, 2**63, BUCKETS - 2, BUCKETS - 1]
    buckets += [rng.getrandbits(64) for _ in range(200_000)]
    buckets += [rng.getrandbits(rng.randrange(1, 65)) for _ in range(50_000)]
    assert all(bucket * _PER_BUCKET == bucket / BUCKETS for bucket in buckets)


@given(event_id=event_ids, salt=salts)
def test_bucket_matches_the_formula(event_id: str, salt: str) -> None:
    digest = hashlib.blake2b(
        event_id.encode("utf-8", "surrogatepass"), key=salt.encode(), digest_size=8
    ).digest()
    assert policy(percent=5, salt=salt).bucket(event_id) == int.from_bytes(digest, "big")


@given(event_id=event_ids, salt=salts, percent=percents)
def test_same_id_same_verdict_across_policy_objects(
    event_id: str, salt: str, percent: float
) -> None:
    first = policy(percent=percent, salt=salt).check(make_prediction(event_id=event_id))
    second = policy(percent=percent, salt=salt).check(make_prediction(event_id=event_id))
    assert first == second


@given(
    event_id=event_ids,
    percent=percents,
    topic=st.text(min_size=1, max_size=10),
    partition=st.integers(min_value=0, max_value=1023),
    offset=st.integers(min_value=0, max_value=2**62),
)
def test_verdict_ignores_topic_partition_offset(
    event_id: str, percent: float, topic: str, partition: int, offset: int
) -> None:
    p = policy(percent=percent, salt="s")
    here = p.check(make_prediction(event_id=event_id))
    there = p.check(
        make_prediction(
            event_id=event_id,
            topic=topic,
            partition=partition,
            offset=offset,
            confidence=0.1,
            label="other",
            event={"anything": 1},
        )
    )
    assert here == there


SAMPLE_SIZE = 10_000


@settings(max_examples=20, deadline=None)
@given(percent=percents, salt=salts, seed=st.integers(min_value=0, max_value=2**32))
def test_reviewed_fraction_is_close_to_percent(percent: float, salt: str, seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"{rng.getrandbits(64):016x}-{i}" for i in range(SAMPLE_SIZE)]
    verdicts = policy(percent=percent, salt=salt).evaluate(
        [make_prediction(event_id=event_id) for event_id in ids]
    )
    reviewed = sum(verdict.review for verdict in verdicts)
    expected = percent / 100
    # 6 standard deviations of a binomial count, plus a little for the smallest percents.
    tolerance = 6 * math.sqrt(expected * (1 - expected) / SAMPLE_SIZE) + 3 / SAMPLE_SIZE
    assert abs(reviewed / SAMPLE_SIZE - expected) <= tolerance


@given(event_id=event_ids)
def test_zero_and_hundred_percent_are_absolute(event_id: str) -> None:
    assert not policy(percent=0).check(make_prediction(event_id=event_id)).review
    assert policy(percent=100).check(make_prediction(event_id=event_id)).review


@given(event_id=event_ids, low=percents, high=percents)
def test_a_larger_percent_keeps_every_id_a_smaller_one_sampled(
    event_id: str, low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    prediction = make_prediction(event_id=event_id)
    if policy(percent=low, salt="x").check(prediction).review:
        assert policy(percent=high, salt="x").check(prediction).review


def test_reasons_name_the_sample_and_bucket() -> None:
    # "evt-1" with salt "audit" hashes to bucket 0.8587...
    sampled = policy(percent=90, salt="audit").check(make_prediction(event_id="evt-1"))
    assert sampled.review
    assert sampled.reason == "in 90% audit sample (bucket 0.8587 < 0.9)"
    skipped = policy(percent=2.5, salt="audit").check(make_prediction(event_id="evt-1"))
    assert not skipped.review
    assert skipped.reason == "not in 2.5% audit sample (bucket 0.8587 >= 0.025)"


def test_lone_surrogates_in_ids_do_not_crash() -> None:
    assert policy(percent=50).check(make_prediction(event_id="a\ud800b")).reason


@pytest.mark.parametrize(
    ("params", "loc", "message"),
    [
        ({}, ("percent",), "Field required"),
        ({"percent": -1}, ("percent",), "greater than or equal to 0"),
        ({"percent": 100.5}, ("percent",), "less than or equal to 100"),
        ({"percent": math.nan}, ("percent",), "finite"),
        ({"percent": 5, "salt": "é" * 33}, ("salt",), "66 bytes"),
    ],
)
def test_bad_params_name_the_field(
    params: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        policy(**params)
    errors = caught.value.errors()
    assert [error["loc"] for error in errors] == [loc]
    assert message in errors[0]["msg"]
