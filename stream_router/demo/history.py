"""``stream-router demo history``: a long history of result envelopes, written offline.

What the router would publish on its output topic for a synthetic model's predictions, one
envelope per event, without Kafka, the sandbox or a clock to wait on, through the router's own
parts:

1. **the model** (``history`` in the demo settings): a prediction's label is drawn by share; it
   is right with the label's accuracy, else the truth is another label; its confidence comes
   from the label's Beta distribution for right or wrong predictions. The event is what the
   demo's producer writes (``ground_truth`` included), keyed by its event id, on the partition
   Kafka's default partitioner gives that key;
2. **ingest**: the configuration's :class:`~stream_router.ingest.parser.EventParser` parses the
   record value, :class:`~stream_router.policies.routes.Routes` decides batches of
   ``ingest.batch_max_records``, ``accepted_envelope`` publishes an accepted prediction and
   ``review_request`` (named by ``naming.loop_name``) asks for a review;
3. **review**: the request is parsed (``ReviewRequest.parse``), its InputContent built as the
   review role builds it, and the sandbox's simulated reviewers plan the loop
   (``sandbox/a2i/reviewers.py``: the workers, answers, times and expiry the A2I emulator would
   give that loop name). A completed loop's output.json is read by the A2I backend's parser,
   consolidated and published (``reviewed_record``). An expired one follows ``review.on_failure``
   as the review role does: escalate to the route's escalation flow while attempts remain, else
   ``unreviewed_record`` with failure code ``Expired``; with ``dead-letter`` the event goes to
   the dead-letter topic, so it has no line in the history (it is counted).

Not simulated: review budgets and the start rate limit (the history assumes the review path
kept up and every route had budget left), retries and crashes (no duplicate records), and
malformed events. Every review is on A2I flow definitions of the sandbox settings.

Time: event ``i`` happens at ``history.start_s + i / history.rate_per_s``; ingest decides
:data:`INGEST_LAG_S` later, a review starts :data:`START_LAG_S` after its request (or after the
failed attempt it escalates) and its end is observed :data:`OBSERVE_LAG_S` after it happens.

Deterministic: the same settings, seed and event count give the same bytes. The seed is part of
every event id, so histories of different seeds have independent audit samples and reviewers.

Ground truth rides in every event (``event.ground_truth``), so the true error of any threshold
can be checked against a backtest: :class:`HistoryStats` gives it for what was accepted, and
:func:`true_selective_error` for predictions at or above given thresholds.
"""

from __future__ import annotations

import copy
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from random import Random
from typing import Any, Final

import orjson
from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream_router.aws.a2i_output import parse_output
from stream_router.config_errors import describe_validation_error
from stream_router.demo.settings import DemoSettings, HistorySettings
from stream_router.envelope import accepted_envelope, review_request
from stream_router.errors import ConfigError
from stream_router.ingest.parser import EventParser
from stream_router.models import Prediction, SourceRef
from stream_router.naming import attempt_name, loop_name
from stream_router.policies.routes import Routes
from stream_router.review.backend import ReviewState, ReviewStatus
from stream_router.review.consolidate import consolidate
from stream_router.review.content import input_content
from stream_router.review.outcome import ReviewerData, reviewed_record, unreviewed_record
from stream_router.review.request import ReviewRequest
from stream_router.sandbox.a2i.reviewers import human_answers, plan_loop
from stream_router.sandbox.a2i.seeds import settings_page
from stream_router.sandbox.settings import FlowDefinition, SandboxSettings
from stream_router.settings import (
    IngestSettings,
    PoliciesSettings,
    ReviewSettings,
    move_old_keys,
)

#: Seconds from an event's time to ingest's decision (``timestamps.decided_s``).
INGEST_LAG_S: Final = 0.05
#: Seconds from a review request (or a failed attempt's end) to the review's start.
START_LAG_S: Final = 0.2
#: Seconds from a review's end to the review role observing it (watchers, S3 notification).
OBSERVE_LAG_S: Final = 1.0
#: The A2I emulator's reason for an expired loop (``sandbox/a2i/server.py``).
EXPIRED_REASON: Final = (
    "The human loop expired: no worker accepted the task within the task availability "
    "lifetime of {lifetime_s:g} seconds"
)
DECISIONS: Final = ("accepted", "reviewed", "unreviewed", "dead-lettered")


@dataclass(frozen=True)
class LabelErrors:
    """How often the model was wrong on the predictions of one label (the truth is known)."""

    predictions: int
    wrong: int
    accepted: int  #: decision ``accepted``: what the router auto-accepted
    accepted_wrong: int

    @property
    def error(self) -> float | None:
        return None if self.predictions == 0 else self.wrong / self.predictions

    @property
    def accepted_error(self) -> float | None:
        """The true error rate of what the router auto-accepted for this label."""
        return None if self.accepted == 0 else self.accepted_wrong / self.accepted


@dataclass(frozen=True)
class HistoryStats:
    """What :func:`write_history` wrote, and the truth behind it."""

    path: str
    events: int
    seed: int
    records: int  #: lines written (events minus dead letters)
    bytes: int
    decisions: dict[str, int]  #: accepted, reviewed, unreviewed, dead-lettered
    routes: dict[str, dict[str, int]]  #: review route -> its events' final decisions
    failure_codes: dict[str, int]  #: of unreviewed and dead-lettered reviews
    escalations: int  #: attempts started on an escalation flow
    reviewed_right: int  #: reviewed events whose consolidated label is the ground truth
    audited: int  #: reviewed events whose review probability was below 1
    audited_corrected: int  #: ... where the reviewers' label differs from the model's
    labels: dict[str, LabelErrors]  #: by predicted label
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "events": self.events,
            "seed": self.seed,
            "records": self.records,
            "bytes": self.bytes,
            "decisions": self.decisions,
            "routes": self.routes,
            "failure_codes": self.failure_codes,
            "escalations": self.escalations,
            "reviewed_right": self.reviewed_right,
            "audited": self.audited,
            "audited_corrected": self.audited_corrected,
            "labels": {
                label: {
                    "predictions": errors.predictions,
                    "wrong": errors.wrong,
                    "error": errors.error,
                    "accepted": errors.accepted,
                    "accepted_wrong": errors.accepted_wrong,
                    "accepted_error": errors.accepted_error,
                }
                for label, errors in self.labels.items()
            },
            "elapsed_s": self.elapsed_s,
            "events_per_s": self.events_per_s,
        }


class _RouterSections(BaseModel):
    """The router sections the history runs (the others are the live demo's business)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ingest: IngestSettings = Field(IngestSettings())
    policies: PoliciesSettings = Field(PoliciesSettings())
    review: ReviewSettings = Field(ReviewSettings())


def history_router(demo: DemoSettings) -> dict[str, Any]:
    """The demo's router sections with flow names as the sandbox's ARNs (as the live demo
    writes them): ``ingest``, ``policies`` and ``review`` are what the history runs."""
    config = copy.deepcopy(demo.router)
    arns = {flow.name: demo.sandbox.flow_arn(flow.name) for flow in demo.sandbox.flow_definitions}
    for route in config.get("policies", {}).get("routes", []):
        if isinstance(route, dict) and isinstance(route.get("review_flow"), str):
            route["review_flow"] = arns.get(route["review_flow"], route["review_flow"])
    flows = config.get("review", {}).get("escalation_flows", {})
    for route_name, flow in list(flows.items()):
        flows[route_name] = arns.get(flow, flow)
    return config


def _sections(demo: DemoSettings) -> _RouterSections:
    try:
        router, _ = move_old_keys(history_router(demo))
        sections = _RouterSections.model_validate(router)
    except ValidationError as exc:
        problem = describe_validation_error(exc, None, _RouterSections)
        raise ConfigError(f"the demo's router section: {problem}") from exc
    except ValueError as exc:  # an old key beside its new place
        raise ConfigError(f"the demo's router section: {exc}") from exc
    if sections.review.backend.name != "a2i":
        raise ConfigError(
            f"review.backend is {sections.review.backend.name!r}: the history simulates the "
            "sandbox's "
            "A2I reviewers only; use review.backend a2i"
        )
    return sections


def _flow_definitions(
    sandbox: SandboxSettings, sections: _RouterSections
) -> dict[str, FlowDefinition]:
    """Flow definitions by ARN; every flow the routes and escalations name must be one."""
    by_arn = {sandbox.flow_arn(flow.name): flow for flow in sandbox.flow_definitions}
    named = [(f"policies.routes.{route.name}.review_flow", route.review_flow)
             for route in sections.policies.routes if not route.shadow]  # fmt: skip
    named += [(f"review.escalation_flows.{route}", flow)
              for route, flow in sections.review.escalation_flows.items()]  # fmt: skip
    routes = sorted(route.name for route in sections.policies.routes)
    for route in sections.review.escalation_flows:
        if route not in routes:
            raise ConfigError(
                f"router review.escalation_flows.{route}: no route is named {route!r} "
                f"(policies.routes: {routes})"
            )
    for where, flow in named:
        if flow not in by_arn:
            raise ConfigError(
                f"router {where} is {flow!r}, not a flow definition of the sandbox settings "
                f"(known: {sorted(f.name for f in sandbox.flow_definitions)}): the history's "
                "simulated reviewers work only on those"
            )
    return by_arn


class _Model:
    """The synthetic model: draws (label, truth, confidence) from one seeded generator."""

    def __init__(self, settings: HistorySettings, rng: Random) -> None:
        self.rng = rng
        labels = list(settings.labels)
        models = [settings.labels[label] for label in labels]
        self.labels = labels
        self.cumulative = list(accumulate(model.share for model in models))
        self.accuracy = [model.accuracy for model in models]
        self.right = [(m.confidence_right.alpha, m.confidence_right.beta) for m in models]
        self.wrong = [(m.confidence_wrong.alpha, m.confidence_wrong.beta) for m in models]
        self.others = [[other for other in labels if other != label] for label in labels]
        self.others_cumulative = [
            list(accumulate(settings.labels[other].share for other in others))
            for others in self.others
        ]

    def draw(self) -> tuple[str, str, float]:
        """(predicted label, true label, confidence rounded to 4 places, as the demo's)."""
        rng = self.rng
        random = rng.random
        cumulative = self.cumulative
        index = bisect_right(cumulative, random() * cumulative[-1])
        index = min(index, len(cumulative) - 1)  # guards the float edge
        label = self.labels[index]
        if random() < self.accuracy[index]:
            truth = label
            alpha, beta = self.right[index]
        else:
            others = self.others_cumulative[index]
            pick = min(bisect_right(others, random() * others[-1]), len(others) - 1)
            truth = self.others[index][pick]
            alpha, beta = self.wrong[index]
        return label, truth, round(rng.betavariate(alpha, beta), 4)


@dataclass
class _Tally:
    decisions: Counter[str] = field(default_factory=Counter)
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    escalations: int = 0
    reviewed_right: int = 0
    audited: int = 0
    audited_corrected: int = 0
    predictions: Counter[str] = field(default_factory=Counter)
    wrong: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    accepted_wrong: Counter[str] = field(default_factory=Counter)


class HistoryGenerator:
    """The envelope lines of a history, batch by batch (see the module docstring).

    ``settings`` gives the model (``history``), the router sections (``router``), the simulated
    reviewers (``sandbox``) and the input topic's partitions (``producer.topic_partitions``).
    ``seed`` None: ``history.seed``. Raises :class:`ConfigError` for settings it cannot run.
    """

    def __init__(
        self, settings: DemoSettings | None = None, *, events: int, seed: int | None = None
    ) -> None:
        if events < 0:
            raise ValueError(f"events must be >= 0, got {events}")
        self.settings = settings = settings or DemoSettings()
        self.events = events
        self.seed = settings.history.seed if seed is None else seed
        sections = _sections(settings)
        self.ingest, self.review = sections.ingest, sections.review
        self.routes = Routes(sections.policies)
        self.version = self.routes.version
        self.parser = EventParser(self.ingest.mapping)
        self.flows = _flow_definitions(settings.sandbox, sections)
        self.region = settings.sandbox.aws.region
        key = self.review.pseudonym_key
        self.reviewer_data = ReviewerData(  # as the review role's Completer builds it
            self.review.reviewer_data,
            key.get_secret_value().encode() if key else self.review.app_id.encode(),
        )
        self.model = _Model(settings.history, Random(self.seed))
        self.tally = _Tally()
        self._partitions = settings.producer.topic_partitions
        self._offsets = [0] * self._partitions
        self._width = max(7, len(str(max(0, events - 1))))

    def batches(self) -> Iterator[list[bytes]]:
        """The envelope lines (without newlines), one list per ingest batch, in event order."""
        size = self.ingest.batch_max_records
        self.routes.start()
        try:
            for first in range(0, self.events, size):
                yield self._batch(first, min(first + size, self.events))
        finally:
            self.routes.close()

    def records(self) -> Iterator[bytes]:
        """Every envelope line, in event order."""
        for batch in self.batches():
            yield from batch

    def _batch(self, first: int, end: int) -> list[bytes]:
        history = self.settings.history
        start_s, rate = history.start_s, history.rate_per_s
        model_name, topic = history.model_name, self.ingest.input_topics[0]
        draw, parse, dumps = self.model.draw, self.parser.parse, orjson.dumps
        offsets, partitions = self._offsets, self._partitions
        prefix, width = f"evt-{self.seed}-", self._width
        predictions: list[Prediction] = []
        truths: list[str] = []
        for index in range(first, end):
            label, truth, confidence = draw()
            event_id = f"{prefix}{index:0{width}d}"
            at_s = round(start_s + index / rate, 6)
            value = dumps(
                {
                    "event_id": event_id,
                    "model": model_name,
                    "model_version": "1",
                    "label": label,
                    "confidence": confidence,
                    "ground_truth": truth,
                    "timestamp": at_s,
                }
            )
            key = event_id.encode()
            partition = (murmur2(key) & 0x7FFFFFFF) % partitions  # Kafka's default partitioner
            offset = offsets[partition]
            offsets[partition] = offset + 1
            source = SourceRef(topic, partition, offset, key, round(at_s * 1000))
            predictions.append(parse(value, source))
            truths.append(truth)
        decisions = self.routes.decide(predictions)
        lines: list[bytes] = []
        tally, version = self.tally, self.version
        for prediction, decision, truth in zip(predictions, decisions, truths, strict=True):
            label = prediction.label
            wrong = label != truth
            tally.predictions[label] += 1
            tally.wrong[label] += wrong
            decided_s = round((prediction.timestamp_s or 0.0) + INGEST_LAG_S, 6)
            if not decision.review:
                lines.append(accepted_envelope(prediction, decision, version, decided_s))
                tally.decisions["accepted"] += 1
                tally.accepted[label] += 1
                tally.accepted_wrong[label] += wrong
                continue
            name = loop_name(prediction.event_id, version)
            request = ReviewRequest.parse(
                review_request(prediction, decision, version, name, decided_s)
            )
            record = self._reviewed(request)
            outcome = "dead-lettered" if record is None else record["decision"]
            tally.decisions[outcome] += 1
            tally.routes[(request.route, outcome)] += 1
            if record is None:
                continue
            review = record["review"]
            if outcome == "reviewed":
                tally.reviewed_right += review["label"] == truth
                if request.audited:
                    tally.audited += 1
                    tally.audited_corrected += review["corrected"]
            lines.append(dumps(record))
        return lines

    def _reviewed(self, request: ReviewRequest) -> dict[str, Any] | None:
        """The outcome record of a review request; None when it is dead-lettered."""
        review = self.review
        flow = request.review_flow
        attempt = 1
        started_s = round(request.requested_s + START_LAG_S, 6)
        while True:
            definition = self.flows[flow]
            name = attempt_name(request.loop_name, attempt)
            content = input_content(request, review.projection, attempt)
            plan = plan_loop(
                definition, name, content, started_s, settings_page(definition, content)
            )
            observed_s = round(plan.ends_at + OBSERVE_LAG_S, 6)
            if not plan.expires:
                output = {
                    "flowDefinitionArn": flow,
                    "humanAnswers": human_answers(definition, plan, self.region),
                    "humanLoopName": name,
                    "inputContent": content,
                }
                state = ReviewState(name, ReviewStatus.COMPLETED, flow, output_uri="s3://history")
                result = parse_output(orjson.dumps(output), state)
                return reviewed_record(
                    request,
                    consolidate(result, review.answer_path),
                    observed_s=observed_s,
                    started_s=started_s,
                    backend=review.backend.name,
                    reviewers=self.reviewer_data,
                )
            next_flow = review.escalation_flows.get(request.route)
            if review.on_failure == "escalate" and next_flow and attempt < review.max_attempts:
                attempt += 1
                flow = next_flow
                started_s = round(observed_s + START_LAG_S, 6)
                self.tally.escalations += 1
                continue
            self.tally.failure_codes["Expired"] += 1
            if review.on_failure == "dead-letter":
                return None
            return unreviewed_record(
                request,
                failure_code="Expired",
                reason=EXPIRED_REASON.format(lifetime_s=definition.task_availability_lifetime_s),
                status=ReviewStatus.FAILED,
                ended_s=observed_s,
                loop_name=name,
                review_flow=flow,
                backend=review.backend.name,
            )

    def stats(self, path: Path | str, written: int, elapsed_s: float) -> HistoryStats:
        tally = self.tally
        routes: dict[str, dict[str, int]] = {}
        for (route, outcome), count in sorted(tally.routes.items()):
            routes.setdefault(route, {})[outcome] = count
        return HistoryStats(
            path=str(path),
            events=self.events,
            seed=self.seed,
            records=self.events - tally.decisions["dead-lettered"],
            bytes=written,
            decisions={name: tally.decisions[name] for name in DECISIONS},
            routes=routes,
            failure_codes=dict(sorted(tally.failure_codes.items())),
            escalations=tally.escalations,
            reviewed_right=tally.reviewed_right,
            audited=tally.audited,
            audited_corrected=tally.audited_corrected,
            labels={
                label: LabelErrors(
                    tally.predictions[label],
                    tally.wrong[label],
                    tally.accepted[label],
                    tally.accepted_wrong[label],
                )
                for label in self.model.labels
            },
            elapsed_s=elapsed_s,
        )


def write_history(
    path: Path | str,
    *,
    events: int,
    seed: int | None = None,
    settings: DemoSettings | None = None,
) -> HistoryStats:
    """Write ``events`` envelopes as JSONL to ``path`` (replaced); see the module docstring.

    ``settings`` None: the demo's defaults; ``seed`` None: ``settings.history.seed``. Raises
    :class:`ConfigError` for settings the history cannot run, ``OSError`` when it cannot write.
    """
    generator = HistoryGenerator(settings, events=events, seed=seed)
    started = time.perf_counter()
    written = 0
    with Path(path).open("wb") as out:
        for batch in generator.batches():
            if batch:
                chunk = b"\n".join(batch) + b"\n"
                out.write(chunk)
                written += len(chunk)
    return generator.stats(path, written, time.perf_counter() - started)


def _pct(part: int, whole: int) -> str:
    return f"{part}" if whole == 0 else f"{part} ({100 * part / whole:.1f} %)"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def render(stats: HistoryStats) -> str:
    """What ``stream-router demo history`` prints: the counts, and the true error per label."""
    lines = [
        f"wrote {stats.records} envelopes ({stats.bytes / 1e6:.1f} MB) to {stats.path} in "
        f"{stats.elapsed_s:.1f} s ({stats.events_per_s:,.0f} events/s), seed {stats.seed}",
        "",
        "decisions",
    ]
    lines += [f"  {name:<14} {_pct(n, stats.events)}" for name, n in stats.decisions.items()]
    lines.append("review routes")
    for route, outcomes in stats.routes.items():
        shown = ", ".join(f"{outcome} {count}" for outcome, count in outcomes.items())
        lines.append(f"  {route:<14} {shown}")
    codes = ", ".join(f"{code} {n}" for code, n in stats.failure_codes.items()) or "none"
    lines.append(f"reviews that failed: {codes}; escalated attempts: {stats.escalations}")
    reviewed = stats.decisions["reviewed"]
    lines.append(f"reviewers right {_pct(stats.reviewed_right, reviewed)} of reviewed")
    lines.append(
        f"audited reviews {stats.audited}, corrected {_pct(stats.audited_corrected, stats.audited)}"
    )
    lines += ["", "true error by predicted label (from event.ground_truth)"]
    lines.append(f"  {'label':<10} {'predictions':>12} {'error':>8} {'accepted':>10} {'error':>8}")
    for label, errors in stats.labels.items():
        lines.append(
            f"  {label:<10} {errors.predictions:>12} {_rate(errors.error):>8} "
            f"{errors.accepted:>10} {_rate(errors.accepted_error):>8}"
        )
    return "\n".join(lines)


def true_selective_error(
    path: Path | str, thresholds: Mapping[str, float]
) -> dict[str, LabelErrors]:
    """The true error of each label's predictions with confidence >= its threshold in a history
    file (what a certified threshold promises about), from ``event.ground_truth``.

    ``predictions``/``wrong`` count those predictions; ``accepted``/``accepted_wrong`` the ones
    among them the router accepted. Lines without a ground truth are left out.
    """
    counts: dict[str, list[int]] = {label: [0, 0, 0, 0] for label in thresholds}
    with Path(path).open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            label = record["prediction"]["label"]
            threshold = thresholds.get(label)
            truth = record["event"].get("ground_truth")
            if threshold is None or truth is None:
                continue
            if record["prediction"]["confidence"] < threshold:
                continue
            wrong = truth != label
            kept = counts[label]
            kept[0] += 1
            kept[1] += wrong
            if record["decision"] == "accepted":
                kept[2] += 1
                kept[3] += wrong
    return {label: LabelErrors(*kept) for label, kept in counts.items()}
