"""What became of each event: read from the router's output topics, and from its /metrics.

:class:`OutcomeTracker` reads the output topic (accepted, reviewed, unreviewed envelopes), the
dead-letter topic (malformed input, and review requests that could not be reviewed) and the
review-requests topic (what is in review) from the beginning, by direct assignment (no consumer
group to join), and files every record under its event id. It keeps what the summary needs:
each event's outcomes, when the reviewed record was written, the reviewers' label.

:func:`scrape` reads the router's Prometheus endpoint into a :class:`MetricsSnapshot`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

OUTCOMES = ("accepted", "reviewed", "unreviewed", "dead-lettered")


@dataclass(frozen=True)
class Reviewed:
    """A reviewed record, as far as the summary cares."""

    label: str | None
    model_label: str
    truth: str | None
    written_s: float  #: the output record's Kafka timestamp


@dataclass
class OutcomeTracker:
    """Outcome records by event id (see the module docstring)."""

    bootstrap_servers: str
    output_topic: str
    dead_letter_topic: str
    review_requests_topic: str
    partitions: int
    outcomes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requested: set[str] = field(default_factory=set)
    reviewed: dict[str, Reviewed] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unreadable: int = 0  #: records without an event id we could tell
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            client_id="demo-tracker",
        )
        await consumer.start()
        topics = (self.output_topic, self.dead_letter_topic, self.review_requests_topic)
        assigned = [TopicPartition(t, p) for t in topics for p in range(self.partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout_s: float = 0.2) -> int:
        """Read what arrived (waiting up to ``timeout_s``); returns the number of records."""
        if self._consumer is None:
            raise RuntimeError("the tracker is not started")
        batch = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        count = 0
        for tp, records in batch.items():
            for record in records:
                self._file(tp.topic, record.key, record.value, record.timestamp / 1000)
                count += 1
        return count

    def _file(self, topic: str, key: bytes | None, value: bytes | None, written_s: float) -> None:
        try:
            data: Any = json.loads(value or b"")
        except ValueError:
            self.unreadable += 1
            return
        if not isinstance(data, dict):
            self.unreadable += 1
            return
        if topic == self.review_requests_topic:
            self.requested.add(str(data.get("event_id")))
        elif topic == self.output_topic:
            self._file_result(data, written_s)
        else:
            self._file_dead_letter(data, key)

    def _file_result(self, data: dict[str, Any], written_s: float) -> None:
        event_id = str(data.get("event_id"))
        decision = str(data.get("decision"))
        self.outcomes[event_id].append(decision)
        if decision == "reviewed":
            review = data.get("review") or {}
            event = data.get("event") or {}
            label = review.get("label")
            self.reviewed[event_id] = Reviewed(
                label=None if label is None else str(label),
                model_label=str((data.get("prediction") or {}).get("label")),
                truth=event.get("ground_truth") if isinstance(event, dict) else None,
                written_s=written_s,
            )

    def _file_dead_letter(self, data: dict[str, Any], key: bytes | None) -> None:
        request = data.get("review_request")
        if isinstance(request, dict) and request.get("event_id"):
            event_id = str(request["event_id"])
        elif key is not None:
            event_id = key.decode("utf-8", "replace")  # the demo keys records by event id
        else:
            self.unreadable += 1
            return
        self.outcomes[event_id].append("dead-lettered")
        self.dead_letter_reasons[str(data.get("reason_class"))] += 1

    def counts(self) -> dict[str, int]:
        """Events by their (first) outcome, plus those in review with no outcome yet."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for decisions in self.outcomes.values():
            if decisions and decisions[0] in counts:
                counts[decisions[0]] += 1
        counts["in review"] = len(self.requested - self.outcomes.keys())
        return counts

    def finished(self, event_ids: set[str]) -> bool:
        """True when every one of ``event_ids`` has at least one outcome."""
        return event_ids <= self.outcomes.keys()


@dataclass(frozen=True)
class MetricsSnapshot:
    """The figures the progress line shows from the router's /metrics."""

    consumed: float = 0.0
    loops_in_flight: float = 0.0
    budget_left: dict[str, float] = field(default_factory=dict)  #: "route/window" -> reviews
    throttled: float = 0.0
    ok: bool = False


def parse_metrics(text: str) -> MetricsSnapshot:
    """Pick the demo's figures out of a Prometheus text exposition."""
    consumed = in_flight = throttled = 0.0
    budget: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "stream_router_ingest_consumed_total":
                consumed += sample.value
            elif sample.name == "stream_router_review_loops_in_flight":
                in_flight += sample.value
            elif sample.name == "stream_router_review_start_throttled_total":
                throttled += sample.value
            elif sample.name == "stream_router_review_budget_remaining":
                budget[f"{sample.labels['route']}/{sample.labels['window']}"] = sample.value
    return MetricsSnapshot(consumed, in_flight, budget, throttled, ok=True)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback http URL
        body: bytes = response.read()
    return body.decode()


async def scrape(url: str) -> MetricsSnapshot:
    """The router's metrics now; a snapshot with ``ok=False`` when it does not answer."""
    try:
        return parse_metrics(await asyncio.to_thread(_get, url))
    except OSError:
        return MetricsSnapshot()
