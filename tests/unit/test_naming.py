"""Human loop names: valid for A2I, deterministic, distinct per event and policy version."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream_router.naming import is_valid_loop_name, loop_name


@given(st.text(max_size=300), st.text(min_size=1, max_size=32))
def test_always_valid_and_deterministic(event_id: str, version: str) -> None:
    name = loop_name(event_id, version)
    assert is_valid_loop_name(name), name
    assert loop_name(event_id, version) == name


@given(st.text(max_size=50), st.text(max_size=50))
def test_distinct_events_get_distinct_names(first: str, second: str) -> None:
    if first != second:
        assert loop_name(first, "1") != loop_name(second, "1")


def test_policy_version_changes_the_name() -> None:
    assert loop_name("evt-1", "1") != loop_name("evt-1", "2")


def test_readable_prefix() -> None:
    assert loop_name("Order/42_A", "1").startswith("order-42-a-")
    assert len(loop_name("x" * 500, "1")) == 60  # room for an escalation suffix
