"""The one retry policy: exponential, capped, jittered in the upper half, never before a hint."""

from __future__ import annotations

import random

import pytest

from stream_router.review.retry import RetryPolicy


class Ceiling(random.Random):
    """Always the top of the jitter range, so the ceilings themselves show."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=30.0, rng=Ceiling())
    delays = [policy.delay(failures) for failures in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_zeroth_failure_waits_like_the_first() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=30.0, rng=Ceiling())
    assert policy.delay(0) == policy.delay(1) == 0.5


def test_the_cap_holds_for_very_many_failures() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=30.0, rng=random.Random(3))
    assert 15.0 <= policy.delay(1000) <= 30.0


@pytest.mark.parametrize("failures", [1, 3, 8])
def test_never_sooner_than_the_hint(failures: int) -> None:
    policy = RetryPolicy(base_s=0.5, max_s=30.0, rng=random.Random(1))
    assert policy.delay(failures, hint_s=45.0) == 45.0  # the hint wins, even above max_s
    assert policy.delay(1, hint_s=0.1) >= 0.25  # a shorter hint does not shorten the pause
    assert policy.delay(failures, hint_s=None) <= 30.0


def test_jitter_stays_in_the_upper_half_of_the_ceiling() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=10.0, rng=random.Random(42))
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [policy.delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered, not one fixed pause


def test_a_seeded_policy_repeats_its_delays() -> None:
    first = RetryPolicy(rng=random.Random(7))
    second = RetryPolicy(rng=random.Random(7))
    assert [first.delay(n) for n in range(1, 8)] == [second.delay(n) for n in range(1, 8)]
