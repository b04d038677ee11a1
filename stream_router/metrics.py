"""Prometheus metrics, built on an injected ``CollectorRegistry`` so tests can read them.

Names are in base units (seconds), counters end in ``_total``, labels are low-cardinality
(topic, route, policy, reason class; never an event id or a label value from the data).

Ingest:

- ``stream_router_ingest_consumed_total{topic}``
- ``stream_router_ingest_accepted_total{policy}``
- ``stream_router_ingest_review_requested_total{route,policy}``
- ``stream_router_ingest_dead_lettered_total{reason_class}``
- ``stream_router_ingest_tombstones_skipped_total{topic}``: records without a value, skipped
- ``stream_router_ingest_undecodable_batches_total{topic,outcome}``: batches the Kafka client
  could not decode, skipped (a stand-in dead letter) or fatal (ingest exits)
- ``stream_router_ingest_shadow_hits_total{route,policy}``: shadow policies that would review
- ``stream_router_ingest_batch_duration_seconds``: one batch, fetch excluded, commit included
- ``stream_router_ingest_batch_size``: records per batch
- ``stream_router_ingest_decision_latency_seconds``: event timestamp to acknowledged produce
- ``stream_router_ingest_consumer_lag{topic,partition}``: records behind the high watermark
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BatchHistogram(Collector):
    """A label-less histogram fed a batch of values at a time.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets for every value;
    on the ingest hot path that is measurable. This keeps plain bucket counts, updated with
    ``bisect`` per value and one lock per batch, and exposes the standard histogram series.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        bounds = self.bounds
        counts = [0] * len(self._counts)
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative = 0
        buckets = []
        for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


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
        self.tombstones_skipped = PromCounter(
            "stream_router_ingest_tombstones_skipped",
            "Records without a value (tombstones) skipped, their offsets committed "
            "(ingest.tombstones: skip; with dead_letter they are dead letters instead).",
            ["topic"],
            registry=registry,
        )
        self.undecodable = PromCounter(
            "stream_router_ingest_undecodable_batches",
            "Record batches the Kafka client could not decode: skipped (dead-lettered as one "
            "stand-in, reason_class undecodable) or fatal (ingest exits naming the partition "
            "and offset).",
            ["topic", "outcome"],
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
        self.decision_latency = BatchHistogram(
            "stream_router_ingest_decision_latency_seconds",
            "From the prediction's timestamp to the acknowledged produce of its decision.",
            LATENCY_BUCKETS_S,
            registry,
        )
        self.consumer_lag = Gauge(
            "stream_router_ingest_consumer_lag",
            "Records between the position ingest has decided up to and the high watermark "
            "(updated when a batch is acknowledged).",
            ["topic", "partition"],
            registry=registry,
        )
        self.unacknowledged = Gauge(
            "stream_router_ingest_unacknowledged_seconds",
            "How long the oldest batch ingest produced has waited for the brokers' "
            "acknowledgement (0: none waits). Past kafka.request_timeout_s the brokers refuse "
            "or do not answer its writes (fewer replicas in sync than min.insync.replicas, a "
            "partition without a leader); the producer keeps trying and nothing is committed.",
            registry=registry,
        )

    def count(self, counter: PromCounter, counts: Mapping[tuple[str, ...], int]) -> None:
        """Add aggregated counts: {label values: n}."""
        for labels, amount in counts.items():
            counter.labels(*labels).inc(amount)


REVIEW_BUCKETS_S = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    14400.0,
    86400.0,
)

WATCHER_LAG_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class ReviewMetrics:
    """The review path's metrics.

    Metrics about what the review backend did carry its name, ``backend`` (``a2i`` or
    ``label-studio``), so a dashboard can set two backends side by side.

    - ``stream_router_review_start_outcomes_total{backend,route,outcome}``: started,
      already-started, over-budget, oversize, rejected, conflict
    - ``stream_router_review_start_throttled_total{backend}``: 429/5xx answers to starts
    - ``stream_router_review_capacity_waits_total{backend}``: starts paused by the open-reviews
      quota
    - ``stream_router_review_loops_in_flight``: reviews open (started, not yet published)
    - ``stream_router_review_budget_remaining{route,window}``: reviews left this hour/day
    - ``stream_router_review_outcomes_total{backend,outcome,status,route}``: reviewed,
      unreviewed, dead-lettered, escalated, by the review's final status
    - ``stream_router_review_loops_failed_total{backend,code}``: failure codes (Expired, ...)
    - ``stream_router_review_time_in_review_seconds{backend}``: review start to published
      result
    - ``stream_router_review_watcher_events_total{watcher}``: loop events forwarded
    - ``stream_router_review_watcher_last_poll_timestamp_seconds{watcher}``: stall detection
      (only a poll without errors counts)
    - ``stream_router_review_watcher_errors_total{watcher,kind}``: kind sqs, forward, unparseable
    - ``stream_router_review_watcher_event_lag_seconds{watcher}``: the event's own time (status
      change, object creation, a review's end) to its forwarding onto loop-events
    - ``stream_router_review_webhook_posts_total{result}``: Label Studio's webhook posts
    - ``stream_router_review_duplicate_reviews_removed_total{backend}``: second tasks of one
      review deleted (Label Studio)
    - ``stream_router_review_tasks_ignored_total{reason}``: Label Studio tasks under a review's
      name left alone: ``foreign`` (not tagged by the router), ``malformed`` (unreadable)
    - ``stream_router_review_requests_recovered_total``: review requests the intake did not
      deliver, read directly and recorded (a gap in offsets, or left unrecorded too long)
    - ``stream_router_review_requests_duplicate_total``: copies of requests already recorded
    - ``stream_router_review_requests_malformed_total``: review-requests records that are not
      review requests (dead-lettered)
    - ``stream_router_review_requests_refused_total{reason}``: review requests naming a route or
      flow the configuration does not review (``unknown_route``, ``unknown_flow``; dead-lettered,
      never started)
    - ``stream_router_review_loop_events_malformed_total``: loop-events records that are not
      loop events (dead-lettered)
    - ``stream_router_review_loop_events_ignored_total``: notices of no open attempt
      (duplicates, late, or of an earlier attempt)
    - ``stream_router_review_requests_backlog{partition}``: review requests not yet recorded
    - ``stream_router_review_oldest_unrecorded_age_seconds``: age of the oldest of them
    - ``stream_router_review_oldest_pending_age_seconds``: age of the oldest ledger entry
      waiting to start (pending or escalated; held entries wait on purpose)
    - ``stream_router_review_ledger_entries{state}``: ledger entries of owned partitions
    - ``stream_router_review_ledger_pruned_total``: closed ledger entries deleted after their
      retention
    - ``stream_router_review_ledger_unacknowledged_seconds``: how long the oldest ledger write
      under way has waited for the brokers (0: none waits); every step waits for its write

    The audit monitor (``review/audit.py``), per configured route and model label (the first
    ``review.audit.max_labels`` of each partition, later ones ``(other)``; ``(all)`` is the
    route's total), over the audited reviews of the current ``policies.version`` in the ledgers
    of the partitions this instance owns (gauges: a partition's counts move with it; summed over
    instances they are the whole stream's):

    - ``stream_router_review_audit_reviews{route,label}``: audited reviews with an answer
    - ``stream_router_review_audit_errors{route,label}``: of those, reviews whose label differs
      from the model's
    - ``stream_router_review_audit_error_ratio_lower_bound{route,label}`` and
      ``..._upper_bound``: the anytime-valid confidence sequence of the error rate at level
      ``review.audit.delta`` (``review/confidence.py``)
    - ``stream_router_review_audit_log_evidence{route,label}``: ln of the e-value against the
      route's target; summed over instances, at least the threshold with the error rate above
      the target means the whole stream's lower bound is above the target (the alert)
    - ``stream_router_review_audit_log_evidence_threshold``: ln(1 / review.audit.delta)
    - ``stream_router_review_audit_target_error_ratio{route}``: the configured target error
    """

    def __init__(self, registry: CollectorRegistry, backend: str = "a2i") -> None:
        self.registry = registry
        self.backend = backend
        self.start_outcomes = PromCounter(
            "stream_router_review_start_outcomes",
            "What happened to review requests at start.",
            ["backend", "route", "outcome"],
            registry=registry,
        )
        self.start_throttled = PromCounter(
            "stream_router_review_start_throttled",
            "Throttling or transient errors met while starting reviews.",
            ["backend"],
            registry=registry,
        ).labels(backend)
        self.capacity_waits = PromCounter(
            "stream_router_review_capacity_waits",
            "Starts paused because the backend's quota of open reviews was reached.",
            ["backend"],
            registry=registry,
        ).labels(backend)
        self.in_flight = Gauge(
            "stream_router_review_loops_in_flight",
            "Reviews started and not yet published.",
            registry=registry,
        )
        self.budget_remaining = Gauge(
            "stream_router_review_budget_remaining",
            "Reviews the route may still start in the current window.",
            ["route", "window"],
            registry=registry,
        )
        self.outcomes = PromCounter(
            "stream_router_review_outcomes",
            "Finished reviews by outcome and final status.",
            ["backend", "outcome", "status", "route"],
            registry=registry,
        )
        self.failed = PromCounter(
            "stream_router_review_loops_failed",
            "Reviews that ended Failed, by failure code.",
            ["backend", "code"],
            registry=registry,
        )
        self.time_in_review = Histogram(
            "stream_router_review_time_in_review_seconds",
            "From the review's start to its published result.",
            ["backend"],
            buckets=REVIEW_BUCKETS_S,
            registry=registry,
        ).labels(backend)
        self.watcher_events = PromCounter(
            "stream_router_review_watcher_events",
            "Loop events forwarded by each watcher.",
            ["watcher"],
            registry=registry,
        )
        self.watcher_last_poll = Gauge(
            "stream_router_review_watcher_last_poll_timestamp_seconds",
            "When each watcher last completed a poll without errors (epoch seconds).",
            ["watcher"],
            registry=registry,
        )
        self.watcher_errors = PromCounter(
            "stream_router_review_watcher_errors",
            "Watcher failures by kind: sqs (receive or delete failed), forward (loop event not "
            "forwarded, message left for redelivery), unparseable (malformed message, deleted).",
            ["watcher", "kind"],
            registry=registry,
        )
        self.watcher_event_lag = Histogram(
            "stream_router_review_watcher_event_lag_seconds",
            "From a loop event's own timestamp to its forwarding onto loop-events, by watcher.",
            ["watcher"],
            buckets=WATCHER_LAG_BUCKETS_S,
            registry=registry,
        )
        self.webhook_posts = PromCounter(
            "stream_router_review_webhook_posts",
            "Label Studio webhook posts by result: queued (the review is checked), duplicate, "
            "ignored (not an annotation of a review), refused (bad secret or body), dropped.",
            ["result"],
            registry=registry,
        )
        self.tasks_ignored = PromCounter(
            "stream_router_review_tasks_ignored",
            "Label Studio tasks under a review's name left alone, once per task, by reason: "
            "foreign (not tagged by the router: imported by someone else), malformed (a task "
            "the router cannot read; a review it belongs to ends OutputUnreadable).",
            ["reason"],
            registry=registry,
        )
        self.duplicates_removed = PromCounter(
            "stream_router_review_duplicate_reviews_removed",
            "Second tasks of one review found in the backend and deleted (Label Studio, whose "
            "import is not idempotent). Two instances deleting one copy at once may both count "
            "it: Label Studio answers both deletes.",
            ["backend"],
            registry=registry,
        ).labels(backend)
        self.requests_recovered = PromCounter(
            "stream_router_review_requests_recovered",
            "Review requests the intake did not deliver, read directly and recorded.",
            registry=registry,
        )
        self.ledger_pruned = PromCounter(
            "stream_router_review_ledger_pruned",
            "Closed ledger entries deleted after review.ledger_retention_s.",
            registry=registry,
        )
        self.ledger_unacknowledged = Gauge(
            "stream_router_review_ledger_unacknowledged_seconds",
            "How long the oldest ledger write under way has waited for the brokers' "
            "acknowledgement (0: none waits). Every step of a review waits for its write; past "
            "kafka.request_timeout_s the brokers refuse or do not answer writes (fewer replicas "
            "in sync than min.insync.replicas, a partition without a leader); the producer keeps "
            "trying and no review moves meanwhile.",
            registry=registry,
        )
        self.requests_duplicate = PromCounter(
            "stream_router_review_requests_duplicate",
            "Review requests received again after they were recorded (redeliveries).",
            registry=registry,
        )
        self.requests_malformed = PromCounter(
            "stream_router_review_requests_malformed",
            "Review-requests records that are not review requests (dead-lettered).",
            registry=registry,
        )
        self.requests_refused = PromCounter(
            "stream_router_review_requests_refused",
            "Review requests naming a route or flow the configuration does not review, by "
            "reason (unknown_route, unknown_flow): dead-lettered, never started or billed.",
            ["reason"],
            registry=registry,
        )
        self.loop_events_malformed = PromCounter(
            "stream_router_review_loop_events_malformed",
            "Loop-events records that are not loop events (dead-lettered).",
            registry=registry,
        )
        self.loop_events_ignored = PromCounter(
            "stream_router_review_loop_events_ignored",
            "Loop events naming no open attempt: duplicates, late notices, earlier attempts.",
            registry=registry,
        )
        self.requests_backlog = Gauge(
            "stream_router_review_requests_backlog",
            "Review requests written but not yet recorded in the ledger, per owned partition.",
            ["partition"],
            registry=registry,
        )
        self.oldest_unrecorded_age = Gauge(
            "stream_router_review_oldest_unrecorded_age_seconds",
            "Age of the oldest review request not yet recorded in the ledger (0: none).",
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "stream_router_review_oldest_pending_age_seconds",
            "Age of the oldest ledger entry waiting to start, pending or escalated (0: none).",
            registry=registry,
        )
        self.ledger_entries = Gauge(
            "stream_router_review_ledger_entries",
            "Ledger entries of the partitions this instance owns, by state.",
            ["state"],
            registry=registry,
        )
        self.audit_reviews = Gauge(
            "stream_router_review_audit_reviews",
            "Audited reviews with an answer in the ledgers of the partitions this instance owns "
            "(current policies.version), by route and model label ((all): the route's total).",
            ["route", "label"],
            registry=registry,
        )
        self.audit_errors = Gauge(
            "stream_router_review_audit_errors",
            "Of the audited reviews, those whose label differs from the model's (errors of "
            "what the router accepts unreviewed).",
            ["route", "label"],
            registry=registry,
        )
        self.audit_error_lower = Gauge(
            "stream_router_review_audit_error_ratio_lower_bound",
            "Lower bound of the anytime-valid confidence sequence (level review.audit.delta) of "
            "the audited error rate, over this instance's partitions.",
            ["route", "label"],
            registry=registry,
        )
        self.audit_error_upper = Gauge(
            "stream_router_review_audit_error_ratio_upper_bound",
            "Upper bound of the anytime-valid confidence sequence of the audited error rate, "
            "over this instance's partitions.",
            ["route", "label"],
            registry=registry,
        )
        self.audit_log_evidence = Gauge(
            "stream_router_review_audit_log_evidence",
            "ln of the e-value of this instance's audited reviews against the route's target "
            "error; adds up over instances (sum it, compare with the threshold).",
            ["route", "label"],
            registry=registry,
        )
        self.audit_log_evidence_threshold = Gauge(
            "stream_router_review_audit_log_evidence_threshold",
            "ln(1 / review.audit.delta): the evidence at which the target leaves the "
            "confidence sequence.",
            registry=registry,
        )
        self.audit_target_error = Gauge(
            "stream_router_review_audit_target_error_ratio",
            "The configured target error of each review route's auto-accepted predictions.",
            ["route"],
            registry=registry,
        )

    def watcher_forwarded(self, watcher: str, event_time_s: float | None, now_s: float) -> None:
        """Count a forwarded loop event; observe its lag when the event carries its own time.

        A negative lag (clocks apart) counts as 0.
        """
        self.watcher_events.labels(watcher).inc()
        if event_time_s is not None:
            self.watcher_event_lag.labels(watcher).observe(max(0.0, now_s - event_time_s))

    def watcher_polled(self, watcher: str, errors: Mapping[str, int], now_s: float) -> bool:
        """After one poll: count its ``errors`` by kind (sqs, forward, unparseable).

        The poll counts as progress (the last-poll time moves) only when SQS and forwarding both
        worked: a watcher whose every receive is denied must look stalled, not alive. Returns
        whether the poll was such progress.
        """
        for kind, count in errors.items():
            if count:
                self.watcher_errors.labels(watcher, kind).inc(count)
        clean = not errors.get("sqs") and not errors.get("forward")
        if clean:
            self.watcher_last_poll.labels(watcher).set(now_s)
        return clean
