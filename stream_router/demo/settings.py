"""What the demo runs: the synthetic producer, the sandbox it stands on, and the router's config.

``config/demo.yaml`` spells out these defaults with comments; ``stream-router demo --config F``
reads such a file (every key optional). Four sections:

- ``producer``: rate, duration, label mix, how often the model is right, the confidence of right
  and wrong predictions, and how many malformed events to slip in;
- ``sandbox``: the sandbox's settings (flow definitions, simulated reviewers, faults);
- ``router``: router configuration sections (as in ``config/router.yaml``) laid over what the demo
  fills in itself: the broker address, the watchers' queue URLs, the metrics port and the review
  data directory. A ``review_flow`` or escalation flow may name a sandbox flow definition instead
  of giving its ARN;
- ``history``: the synthetic model of ``stream-router demo history`` (``demo/history.py``), which
  writes a long history of result envelopes offline through the same router sections and
  simulated reviewers: per predicted label, how often the model is right and how sure it is.

The simulated reviewers answer from the event's ground truth, so the router's ``review.projection``
must include ``ground_truth`` here; a real deployment would never show reviewers the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stream_router.config_errors import describe_validation_error
from stream_router.config_files import load_yaml_mapping
from stream_router.errors import ConfigError
from stream_router.sandbox.settings import (
    FlowDefinition,
    Latency,
    Reviewers,
    SandboxSettings,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Beta(_Section):
    """A Beta(alpha, beta) distribution on [0, 1], for confidences."""

    alpha: float = Field(gt=0, description="Alpha of the Beta distribution.")
    beta: float = Field(gt=0, description="Beta of the Beta distribution.")


class ProducerSettings(_Section):
    """The synthetic model: what it predicts, how sure it is, and how often it is wrong."""

    rate_per_s: float = Field(10.0, gt=0, le=5000, description="Predictions produced per second.")
    duration_s: float = Field(30.0, gt=0, description="How long to produce, in seconds.")
    topic_partitions: int = Field(2, ge=1, description="Partitions of every demo topic.")
    label_mix: dict[str, float] = Field(
        default_factory=lambda: {"cat": 0.4, "dog": 0.35, "bird": 0.15, "other": 0.1},
        description="Relative frequency of each true label (the ground truth).",
    )
    model_accuracy: float = Field(
        0.85, ge=0, le=1, description="Probability that the model's label is the true one."
    )
    confidence_right: Beta = Field(
        Beta(alpha=8.0, beta=2.0), description="Confidence of predictions the model gets right."
    )
    confidence_wrong: Beta = Field(
        Beta(alpha=3.0, beta=3.0), description="Confidence of predictions the model gets wrong."
    )
    model_name: str = Field("pets-v1", description="The model name every prediction carries.")
    malformed: int = Field(
        3, ge=0, description="Malformed events slipped in (not JSON, missing or bad confidence)."
    )
    seed: int = Field(7, description="Seed of the generator; the same seed gives the same events.")

    @field_validator("label_mix")
    @classmethod
    def _mix(cls, value: dict[str, float]) -> dict[str, float]:
        if len(value) < 2 or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("label_mix needs two or more labels with weights >= 0, not all 0")
        return value


class LabelModel(_Section):
    """The synthetic model on the predictions of one label."""

    share: float = Field(gt=0, description="Relative frequency of predictions of this label.")
    accuracy: float = Field(
        ge=0, le=1, description="Probability that a prediction of this label is right."
    )
    confidence_right: Beta = Field(description="Confidence of the right predictions.")
    confidence_wrong: Beta = Field(description="Confidence of the wrong predictions.")


def _history_labels() -> dict[str, LabelModel]:
    """Over-confident, unequally wrong: cats and dogs are rarely wrong when very sure, a wrong
    bird is about as sure as a right one, and ``other`` is rare and often doubtful."""

    def model(share: float, accuracy: float, right: Beta, wrong: Beta) -> LabelModel:
        return LabelModel(
            share=share, accuracy=accuracy, confidence_right=right, confidence_wrong=wrong
        )

    return {
        "cat": model(0.4, 0.95, Beta(alpha=30, beta=1), Beta(alpha=4, beta=1.5)),
        "dog": model(0.35, 0.94, Beta(alpha=40, beta=1), Beta(alpha=5, beta=1.5)),
        "bird": model(0.15, 0.85, Beta(alpha=14, beta=1), Beta(alpha=10, beta=1)),
        "other": model(0.1, 0.9, Beta(alpha=12, beta=1), Beta(alpha=5, beta=1.5)),
    }


class HistorySettings(_Section):
    """``stream-router demo history``: the model behind a long offline history of envelopes.

    A prediction's label is drawn by ``share``; it is right with the label's ``accuracy``, else
    the truth is another label (drawn by share); its confidence comes from the label's
    ``confidence_right`` or ``confidence_wrong``. Nothing waits: events are ``1 / rate_per_s``
    apart on the history's own clock, from ``start_s``.
    """

    labels: dict[str, LabelModel] = Field(
        default_factory=_history_labels,
        description="Per predicted label: its share, how often it is right, its confidences.",
    )
    model_name: str = Field("pets-v1", description="The model name every prediction carries.")
    rate_per_s: float = Field(
        10.0, gt=0, description="Events per second of the history's clock (its timestamps)."
    )
    start_s: float = Field(
        1_767_225_600.0, ge=0, description="Time of the first event, epoch seconds (2026-01-01)."
    )
    seed: int = Field(7, description="Seed; the same settings and seed give the same bytes.")

    @field_validator("labels")
    @classmethod
    def _two_labels(cls, value: dict[str, LabelModel]) -> dict[str, LabelModel]:
        if len(value) < 2:
            raise ValueError("labels needs two or more labels (a wrong prediction needs another)")
        return value


def demo_sandbox() -> SandboxSettings:
    """Two flows whose simulated people answer the event's ground truth within seconds."""
    paths = {"ground_truth_path": "event.ground_truth", "model_label_path": "prediction.label"}
    return SandboxSettings(
        flow_definitions=[
            FlowDefinition(
                name="demo-general",
                task_availability_lifetime_s=6.0,
                reviewers=Reviewers(
                    pickup=Latency(median_s=1.0, spread=0.5, max_s=8.0),
                    work=Latency(median_s=1.5, spread=0.4, max_s=6.0),
                    abandon_rate=0.04,
                    error_rate=0.05,
                    **paths,
                ),
            ),
            FlowDefinition(
                name="demo-experts",
                task_count=3,
                reviewers=Reviewers(
                    pickup=Latency(median_s=1.0, spread=0.4, max_s=4.0),
                    work=Latency(median_s=2.0, spread=0.3, max_s=6.0),
                    abandon_rate=0.01,
                    error_rate=0.02,
                    **paths,
                ),
            ),
        ],
        stop_settle_s=0.3,
    )


def demo_router() -> dict[str, Any]:
    """The router's sections for the demo (see ``config/demo.yaml`` for the commented form)."""
    return {
        "kafka": {"session_timeout_s": 6, "heartbeat_interval_s": 1},
        "ingest": {
            "input_topics": ["predictions"],
            "output_topic": "predictions-routed",
            "review_requests_topic": "review-requests",
            "dead_letter_topic": "predictions-dead-letter",
            "group_id": "demo-ingest",
            "fetch_wait_s": 0.05,
        },
        "policies": {
            "version": "demo-1",
            "routes": [
                {
                    "name": "experts",
                    "review_flow": "demo-experts",
                    "policy": {
                        "type": "all",
                        "policies": [
                            {"type": "field", "field": "label", "op": "eq", "value": "bird"},
                            {"type": "confidence", "below": 0.85},
                        ],
                    },
                },
                {
                    "name": "general",
                    "review_flow": "demo-general",
                    "policy": {"type": "confidence", "below": 0.7},
                },
                {
                    "name": "audit",
                    "review_flow": "demo-experts",
                    "policy": {"type": "sample", "percent": 2, "salt": "demo"},
                },
            ],
        },
        "review": {
            "app_id": "demo-review",
            "loop_events_topic": "loop-events",
            "rate_per_s": 20,
            "burst": 10,
            "budgets": {"experts": {"per_hour": 12}, "*": {"per_hour": 1000}},
            "budget_fallback": "accept-unreviewed",
            "projection": ["event_id", "label", "confidence", "model", "ground_truth"],
            "on_failure": "escalate",
            "escalation_flows": {"general": "demo-experts", "audit": "demo-experts"},
            "max_attempts": 2,
            "backend": {"name": "a2i", "wait_time_s": 1},
        },
        "watchers": {
            "enabled": ["eventbridge", "s3-output", "reconciler"],
            "reconcile_interval_s": 5,
            "reconcile_grace_s": 10,
        },
        "logging": {"level": "INFO"},
    }


class DemoSettings(_Section):
    """Everything ``stream-router demo`` runs."""

    producer: ProducerSettings = Field(ProducerSettings(), description="The synthetic model.")
    sandbox: SandboxSettings = Field(
        default_factory=demo_sandbox, description="Flow definitions, simulated reviewers, faults."
    )
    router: dict[str, Any] = Field(
        default_factory=demo_router,
        description="Router configuration sections laid over what the demo fills in.",
    )
    history: HistorySettings = Field(
        HistorySettings(), description="The model of `stream-router demo history`."
    )
    drain_timeout_s: float = Field(
        45.0, gt=0, description="After producing, how long to wait for every event's outcome."
    )
    router_ready_timeout_s: float = Field(
        90.0, gt=0, description="How long the router may take to start consuming."
    )

    def with_overrides(
        self, *, drain_timeout_s: float | None = None, **producer: float | int | None
    ) -> DemoSettings:
        """These settings with command-line values (None: keep) applied and validated."""
        try:
            given = {key: value for key, value in producer.items() if value is not None}
            data = self.model_dump()
            data["producer"].update(given)
            if drain_timeout_s is not None:
                data["drain_timeout_s"] = drain_timeout_s
            return DemoSettings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, None, DemoSettings)) from exc


def load_demo_settings(path: Path | None) -> DemoSettings:
    """Read a demo YAML (None: the defaults); a problem raises ConfigError naming the field."""
    if path is None:
        return DemoSettings()
    data = load_yaml_mapping(
        path, what="demo configuration", top_level="a mapping (producer, sandbox, router)"
    )
    try:
        return DemoSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, path, DemoSettings)) from exc
