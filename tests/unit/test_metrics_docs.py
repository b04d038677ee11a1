"""The README's metrics table is generated from the code's registry and kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream_router import metrics_docs
from stream_router.metrics import IngestMetrics, ReviewMetrics

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert metrics_docs.with_table(text) == text, (
        "README.md's metrics table is stale: run "
        "`.venv/bin/python -m stream_router.metrics_docs --write README.md`"
    )


def test_rows_show_scraped_names_types_and_labels() -> None:
    by_name = {row.name: row for row in metrics_docs.rows()}
    assert by_name["stream_router_ingest_consumed_total"].type == "counter"
    assert by_name["stream_router_ingest_consumer_lag"].labels == ("topic", "partition")
    assert by_name["stream_router_review_outcomes_total"].labels == (
        "backend",
        "outcome",
        "status",
        "route",
    )
    latency = by_name["stream_router_ingest_decision_latency_seconds"]
    assert (latency.type, latency.labels) == ("histogram", ())
    assert all(row.help for row in by_name.values())


def test_every_row_is_a_name_the_registry_exposes() -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry)
    ReviewMetrics(registry)
    exposed = generate_latest(registry).decode()
    for row in metrics_docs.rows():
        assert f"# TYPE {row.name} {row.type}" in exposed


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        metrics_docs.with_table("# no table here\n")
