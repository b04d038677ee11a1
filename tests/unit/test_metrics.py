"""The batch histogram exposes the same series as prometheus_client's Histogram."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from stream_router.metrics import BatchHistogram


def test_batch_histogram_matches_prometheus_histogram() -> None:
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 1.0, 7.0, 61.0, 1e9]
    buckets = (0.005, 0.01, 0.5, 1.0, 60.0)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("h_seconds", "doc", buckets, ours)
    batch.observe_many(values[:4])
    batch.observe_many(values[4:])
    reference = Histogram("h_seconds", "doc", buckets=buckets, registry=theirs)
    for value in values:
        reference.observe(value)
    for bound in [*(repr(b) for b in buckets), "+Inf"]:
        assert ours.get_sample_value("h_seconds_bucket", {"le": bound}) == theirs.get_sample_value(
            "h_seconds_bucket", {"le": bound}
        ), bound
    assert ours.get_sample_value("h_seconds_count") == len(values)
    assert ours.get_sample_value("h_seconds_sum") == pytest.approx(
        theirs.get_sample_value("h_seconds_sum")
    )
