"""Offline policy evaluation: ``stream-router policies test --config F --input events.jsonl``.

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
    parser = EventParser(settings.ingest.mapping)
    routes = Routes(settings.policies)
    routes.start()
    report = BacktestReport()
    for key in routes.shadow_keys():  # listed even when they would review nothing
        report.shadow_hits[key] = 0
    batch: list[Prediction] = []
    try:
        for offset, line in enumerate(lines):
            if not line.strip():
                continue
            report.events += 1
            try:
                batch.append(parser.parse(line, SourceRef(topic, 0, offset, None)))
            except PoisonEvent as poison:
                report.dead_lettered[poison.reason_class] += 1
            if len(batch) >= BATCH:
                _decide(routes, batch, report)
                batch = []
        _decide(routes, batch, report)
    finally:
        routes.close()
    return report


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
