"""The review role warns at start when reviewers would see whole events."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream_router.metrics import ReviewMetrics
from stream_router.review.fake import FakeReviewBackend
from stream_router.review_role import ReviewService
from stream_router.settings import Settings

ROUTE = {"name": "general", "review_flow": "f", "policy": {"type": "sample", "percent": 1}}


@pytest.mark.parametrize(("projection", "warned"), [([], True), (["event_id"], False)])
def test_start_up_warns_about_an_empty_projection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, projection: list[str], warned: bool
) -> None:
    review = {"data_dir": str(tmp_path), "projection": projection}
    settings = Settings.model_validate(
        {"policies": {"routes": [ROUTE]}, "review": review, "watchers": {"enabled": ["reconciler"]}}
    )
    with caplog.at_level(logging.WARNING, logger="stream_router.review_role"):
        ReviewService(settings, ReviewMetrics(CollectorRegistry()), backend=FakeReviewBackend())
    said = [
        r.getMessage() for r in caplog.records if "review.projection is empty" in r.getMessage()
    ]
    assert len(said) == (1 if warned else 0)
    if warned:
        assert "every field of an event goes to its reviewers (routes general)" in said[0]
