"""Prometheus metrics, built on an injected ``CollectorRegistry`` so tests can read them.

Names are in base units (seconds), counters end in ``_total``, labels are low-cardinality
(topic, route, policy, reason class; never an event id or a label value from the data).

Ingest:

- ``stream_router_ingest_consumed_total{topic}``
- ``stream_router_ingest_accepted_total{policy}``
- ``stream_router_ingest_review_requested_total{route,policy}``
- ``stream_router_ingest_dead_lettered_total{reason_class}``
- ``stream_router_ingest_shadow_hits_total{route,policy}``: shadow policies that would review
- ``stream_router_ingest_batch_duration_seconds``: one batch, fetch excluded, commit included
- ``stream_router_ingest_batch_size``: records per batch
- ``stream_router_ingest_decision_latency_seconds``: event timestamp to acknowledged produce
- ``stream_router_ingest_consumer_lag{topic,partition}``: records behind the high watermark
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class IngestMetrics:
    """Ingest's metrics; the loop updates them once per batch with aggregated counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = PromCounter(
            "stream_router_ingest_consumed",
            "Records consumed from input topics.",
            ["topic"],
            registry=registry,
        )
        self.accepted = PromCounter(
            "stream_router_ingest_accepted",
            "Predictions accepted without review.",
            ["policy"],
            registry=registry,
        )
        self.review_requested = PromCounter(
            "stream_router_ingest_review_requested",
            "Predictions sent to human review.",
            ["route", "policy"],
            registry=registry,
        )
        self.dead_lettered = PromCounter(
            "stream_router_ingest_dead_lettered",
            "Records sent to the dead-letter topic.",
            ["reason_class"],
            registry=registry,
        )
        self.shadow_hits = PromCounter(
            "stream_router_ingest_shadow_hits",
            "Predictions a shadow route or policy would have sent to review.",
            ["route", "policy"],
            registry=registry,
        )
        self.batch_duration = Histogram(
            "stream_router_ingest_batch_duration_seconds",
            "Time to handle one batch: parse, decide, produce, commit.",
            buckets=BATCH_BUCKETS_S,
            registry=registry,
        )
        self.batch_size = Histogram(
            "stream_router_ingest_batch_size",
            "Records per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.decision_latency = Histogram(
            "stream_router_ingest_decision_latency_seconds",
            "From the prediction's timestamp to the acknowledged produce of its decision.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "stream_router_ingest_consumer_lag",
            "Records between the committed position and the high watermark.",
            ["topic", "partition"],
            registry=registry,
        )

    def count(self, counter: PromCounter, counts: Mapping[tuple[str, ...], int]) -> None:
        """Add aggregated counts: {label values: n}."""
        for labels, amount in counts.items():
            counter.labels(*labels).inc(amount)
