"""The synthetic model: prediction events at a steady rate, with a ground truth to judge them by.

:class:`PredictionGenerator` is pure and seeded: the same settings and seed give the same events
(ids, labels, confidences, which ones are malformed). Each event's true label is drawn from the
label mix; the model is right with probability ``model_accuracy`` (else it says another label);
its confidence comes from ``confidence_right`` or ``confidence_wrong``. ``ground_truth`` rides
in the event so the simulated reviewers can answer like careful people, and so the demo can tell
whether a correction was right.

:class:`PredictionProducer` sends them to Kafka on a schedule (not in bursts) and remembers when
each event id was sent, for the latency figures. Every record's key is its event id, so even a
malformed event can be followed to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from stream_router.demo.settings import ProducerSettings

MALFORMED_KINDS = ("not_json", "missing_confidence", "confidence_out_of_range")


@dataclass(frozen=True)
class SyntheticEvent:
    """One record to produce; ``truth``/``label`` are None for a malformed one."""

    event_id: str
    value: bytes
    truth: str | None
    label: str | None
    confidence: float | None
    malformed: str | None = None


class PredictionGenerator:
    """Seeded source of synthetic predictions (see the module docstring)."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._labels = list(settings.label_mix)
        self._weights = [settings.label_mix[label] for label in self._labels]
        self.total = max(1, round(settings.rate_per_s * settings.duration_s))
        self._malformed_at = malformed_positions(self.total, settings.malformed)

    def events(self) -> Iterator[SyntheticEvent]:
        """All ``rate_per_s * duration_s`` events, in production order."""
        for index in range(self.total):
            kind = self._malformed_at.get(index)
            yield self._malformed(index, kind) if kind else self._prediction(index)

    def _prediction(self, index: int) -> SyntheticEvent:
        rng = self._rng
        truth = rng.choices(self._labels, self._weights)[0]
        right = rng.random() < self.settings.model_accuracy
        label = truth if right else rng.choice([x for x in self._labels if x != truth])
        shape = self.settings.confidence_right if right else self.settings.confidence_wrong
        confidence = round(rng.betavariate(shape.alpha, shape.beta), 4)
        event_id = f"evt-{index:06d}"
        event = {
            "event_id": event_id,
            "model": self.settings.model_name,
            "model_version": "1",
            "label": label,
            "confidence": confidence,
            "ground_truth": truth,
            "timestamp": time.time(),
        }
        return SyntheticEvent(event_id, json.dumps(event).encode(), truth, label, confidence)

    def _malformed(self, index: int, kind: str) -> SyntheticEvent:
        event_id = f"bad-{index:06d}"
        if kind == "not_json":
            value = b'{"event_id": "' + event_id.encode() + b'", "label": "cat", '
        elif kind == "missing_confidence":
            value = json.dumps({"event_id": event_id, "label": "cat"}).encode()
        else:
            value = json.dumps({"event_id": event_id, "label": "dog", "confidence": 1.7}).encode()
        return SyntheticEvent(event_id, value, None, None, None, malformed=kind)


def malformed_positions(total: int, count: int) -> dict[int, str]:
    """Where the malformed events go: spread evenly through the run, kinds in turn."""
    count = min(count, total)
    if count == 0:
        return {}
    step = total / count
    return {
        int(step * i + step / 2): MALFORMED_KINDS[i % len(MALFORMED_KINDS)] for i in range(count)
    }


class PredictionProducer:
    """Produces a generator's events to ``topic`` at ``rate_per_s``; records send times."""

    def __init__(self, bootstrap_servers: str, topic: str, generator: PredictionGenerator) -> None:
        self.topic = topic
        self.generator = generator
        self.sent_s: dict[str, float] = {}  #: event id -> when it was handed to the producer
        self.events: dict[str, SyntheticEvent] = {}
        self.acknowledged = 0
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, client_id="demo-model"
        )

    @property
    def produced(self) -> int:
        return len(self.sent_s)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send every event on schedule; returns once all are acknowledged (or ``stop`` is set)."""
        rate = self.generator.settings.rate_per_s
        await self._producer.start()
        try:
            pending: list[asyncio.Future[object]] = []
            started = time.monotonic()
            for index, event in enumerate(self.generator.events()):
                if stop is not None and stop.is_set():
                    break
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing: the schedule, not synchronisation
                self.sent_s[event.event_id] = time.time()
                self.events[event.event_id] = event
                future = await self._producer.send(
                    self.topic, event.value, key=event.event_id.encode()
                )
                future.add_done_callback(self._acked)
                pending.append(future)
            await asyncio.gather(*pending)
        finally:
            await self._producer.stop()

    def _acked(self, future: asyncio.Future[object]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.acknowledged += 1
