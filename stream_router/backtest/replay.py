"""A configuration replayed over events: ``stream-router policies test --config F --input F``.

Runs the configured parser and routes over a file of events (one JSON per line) exactly as
ingest would, without Kafka, and reports the routing mix per route and label and the estimated
review cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from stream_router.errors import PoisonEvent
from stream_router.ingest.parser import EventParser
from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Routes
from stream_router.settings import Settings

BATCH = 1000


@dataclass
class BacktestReport:
    events: int = 0
    accepted: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    by_route_label: Counter[tuple[str, str]] = field(default_factory=Counter)
    shadow_hits: Counter[tuple[str, ...]] = field(default_factory=Counter)

    @property
    def reviews(self) -> int:
        return sum(self.by_route.values())

    def render(self, price_per_review_usd: float) -> str:
        total = max(self.events, 1)
        lines = [
            f"events: {self.events}",
            f"accepted: {self.accepted} ({self.accepted / total:.1%})",
            f"to review: {self.reviews} ({self.reviews / total:.1%})",
            f"dead-lettered: {sum(self.dead_lettered.values())}"
            + (f" ({_counts(self.dead_lettered)})" if self.dead_lettered else ""),
            "",
            f"{'route':<20} {'label':<20} {'reviews':>8} {'share':>7}",
        ]
        for (route, label), count in sorted(self.by_route_label.items()):
            lines.append(f"{route:<20} {label:<20} {count:>8} {count / total:>7.1%}")
        for route, count in sorted(self.by_route.items()):
            lines.append(f"{route:<20} {'(all labels)':<20} {count:>8} {count / total:>7.1%}")
        if self.shadow_hits:
            lines += ["", "shadow routes and policies (evaluated and counted, never routed):"]
            for (route, policy), count in sorted(self.shadow_hits.items()):
                lines.append(
                    f"  {route}/{policy} would review {count} ({count / total:.1%}), "
                    f"${count * price_per_review_usd:,.2f} if routed"
                )
        cost = self.reviews * price_per_review_usd
        lines += [
            "",
            f"estimated review cost: {self.reviews} x ${price_per_review_usd:.4f} = ${cost:,.2f}",
        ]
        return "\n".join(lines)


def backtest(settings: Settings, lines: Iterable[bytes], topic: str = "backtest") -> BacktestReport:
    """Replay a file of events (one JSON per line) through ``settings``' parser and routes."""
    with Replay(settings) as replay:
        for offset, line in enumerate(lines):
            if line.strip():
                replay.add(line, SourceRef(topic, 0, offset, None))
    return replay.report


class Replay:
    """Events fed one at a time through a configuration's parser and routes, decided in
    batches as ingest decides them; :attr:`report` is complete once the context exits."""

    def __init__(self, settings: Settings) -> None:
        self._parser = EventParser(settings.ingest.mapping)
        self._routes = Routes(settings.policies)
        self.report = BacktestReport()
        for key in self._routes.shadow_keys():  # listed even when they would review nothing
            self.report.shadow_hits[key] = 0
        self._batch: list[Prediction] = []

    def __enter__(self) -> Replay:
        self._routes.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                _decide(self._routes, self._batch, self.report)
                self._batch = []
        finally:
            self._routes.close()

    def add(self, line: bytes, source: SourceRef) -> None:
        """One event as its input record's value, from ``source``."""
        self.report.events += 1
        try:
            self._batch.append(self._parser.parse(line, source))
        except PoisonEvent as poison:
            self.report.dead_lettered[poison.reason_class] += 1
        if len(self._batch) >= BATCH:
            _decide(self._routes, self._batch, self.report)
            self._batch = []


def _decide(routes: Routes, batch: list[Prediction], report: BacktestReport) -> None:
    for prediction, decision in zip(batch, routes.decide(batch), strict=True):
        if decision.review and decision.route is not None:
            report.by_route[decision.route] += 1
            report.by_route_label[(decision.route, prediction.label)] += 1
        else:
            report.accepted += 1
    report.shadow_hits.update(routes.drain_shadow_hits())


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))
