"""The short chaos run (the long one: ``scripts/chaos --long``); see ``tests/chaos/harness.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_router.sandbox.stack import Backend
from tests.chaos.harness import Plan, run

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.parametrize(
    "backend", ["a2i", pytest.param("label-studio", marks=pytest.mark.label_studio)]
)
async def test_every_event_ends_once_through_every_fault_at_once(
    tmp_path: Path, backend: Backend
) -> None:
    plan = Plan.short(backend)
    report = await run(plan, tmp_path, seed=7, backend=backend)
    text = "\n".join(report.lines())
    print(text)  # the figures, in the test's output
    assert report.events >= plan.duration_s * plan.rate_per_s * 0.9
    assert report.lost == [], text
    assert report.conflicting == {}, text
    assert report.duplicate_loops == 0, text
    assert report.paid_twice == 0, text
    assert report.loops_without_outcome == [], text
    # Exits on their own are reported (and make scripts/chaos exit 1), not asserted here: one
    # review instance exited once in a CI run with its cause unseen; each life now keeps its log.
    assert min(report.kills.values()) >= plan.kills_per_role, text
