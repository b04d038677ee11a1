"""Configuration of the local sandbox: AWS resources, flow definitions, reviewers and faults.

The sandbox is configured separately from the router: it stands in for AWS, so its settings
describe what AWS would hold (buckets, queues, flow definitions) and how simulated people behave.
``config/sandbox.yaml`` is a commented example; every field has a default so an empty file (or
none) gives a working sandbox.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream_router.config_files import load_yaml_mapping

NAME_RE = re.compile(r"^[a-z0-9](-*[a-z0-9])*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Section):
    """A distribution of durations in seconds."""

    distribution: Literal["fixed", "uniform", "lognormal"] = Field(
        "lognormal", description="Shape: fixed (always median_s), uniform, or lognormal."
    )
    median_s: float = Field(1.0, ge=0, description="Median duration in seconds.")
    spread: float = Field(
        0.5,
        ge=0,
        description="lognormal: sigma of the underlying normal; uniform: half-width as a "
        "fraction of median_s.",
    )
    max_s: float | None = Field(None, gt=0, description="Upper clamp in seconds (none: no clamp).")


class Reviewers(_Section):
    """How the simulated workers of one flow definition behave."""

    pickup: Latency = Field(
        Latency(median_s=1.0, spread=0.5),
        description="Time from loop creation until a worker accepts the task.",
    )
    work: Latency = Field(
        Latency(median_s=1.5, spread=0.4),
        description="Time a worker spends on the task once accepted.",
    )
    abandon_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of loops no worker picks up; they expire."
    )
    error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Probability that one worker answers a wrong category (another of the "
        "judging element's categories).",
    )
    ground_truth_path: str = Field(
        "event.ground_truth",
        description="Dotted path in InputContent of the true label; the answer when present. "
        "The router's InputContent nests the event's projected fields under `event` (so the "
        "field must be in review.projection to be seen).",
    )
    model_label_path: str = Field(
        "prediction.label",
        description="Dotted path in InputContent of the model's label (the fallback); the "
        "router puts it at `prediction.label`.",
    )
    labels: list[str] = Field(
        default_factory=lambda: ["cat", "dog", "bird", "other"],
        description="Categories of the default worker template (a flow without "
        "template_file); with a template, its elements' own categories count.",
    )
    answer_name: str = Field(
        "label",
        description="Name of the template's crowd element that carries the judgement (ground "
        "truth, or the model's label, answered right with probability 1 - error_rate); when "
        "the template has none of that name, its first classifier-like element. Also the "
        "default template's crowd-classifier name.",
    )
    workforce: Literal["private", "public"] = Field(
        "private", description="private adds workerMetadata (Cognito identity) to each answer."
    )
    seed: int = Field(0, description="Seed; the same seed and loop name give the same answers.")


class FlowDefinition(_Section):
    """A flow definition as the sandbox's A2I knows it."""

    name: str = Field(description="FlowDefinitionName (1-63 chars, lowercase, digits, hyphens).")
    s3_output_path: str | None = Field(
        None,
        description="S3OutputPath, s3://bucket/prefix; default: the sandbox bucket and prefix.",
    )
    task_count: int = Field(1, ge=1, le=3, description="Workers per loop (TaskCount).")
    task_availability_lifetime_s: float = Field(
        600.0, gt=0, description="How long a task waits for a worker before the loop expires."
    )
    task_time_limit_s: float = Field(
        3600.0, gt=0, description="How long a worker has once the task is accepted."
    )
    reviewers: Reviewers = Field(Reviewers(), description="Simulated workers.")
    template_file: Path | None = Field(
        None,
        description="Worker template (Liquid HTML with crowd elements) of the flow's human task "
        "UI; the simulated reviewers answer what it asks. Default: a crowd-classifier named "
        "reviewers.answer_name with reviewers.labels as categories.",
    )

    @field_validator("name")
    @classmethod
    def _name_pattern(cls, value: str) -> str:
        if not (1 <= len(value) <= 63 and NAME_RE.match(value)):
            raise ValueError(
                f"flow definition name {value!r} must be 1-63 chars matching {NAME_RE.pattern}"
            )
        return value

    @field_validator("template_file")
    @classmethod
    def _template_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"template_file {str(value)!r} is not a readable file")
        return value

    @field_validator("s3_output_path")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not re.match(
            r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", value
        ):
            raise ValueError(f"s3_output_path {value!r} is not an s3://bucket/prefix URI")
        return value.rstrip("/") if value else value


class Faults(_Section):
    """Fault injection; settable at start and while the emulator runs."""

    quota_rps: float | None = Field(
        None, gt=0, description="Requests per second per operation; beyond it, 429 Throttling."
    )
    quota_burst: int = Field(5, ge=1, description="Burst of the per-operation request quota.")
    max_active_loops: int | None = Field(
        None, ge=0, description="Loops InProgress or Stopping; beyond it, 402 ServiceQuotaExceeded."
    )
    internal_error_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of requests answered 500 InternalServerException."
    )
    extra_latency_s: float = Field(0.0, ge=0, description="Delay added to every API response.")


class SandboxAws(_Section):
    """Names of the AWS resources the sandbox creates in moto."""

    region: str = Field("us-east-1", description="AWS Region of every sandbox resource.")
    account_id: str = Field("123456789012", pattern=r"^[0-9]{12}$", description="Account id.")
    output_bucket: str = Field("stream-router-a2i-output", description="A2I output bucket.")
    output_prefix: str = Field("a2i", description="Prefix of S3OutputPath in the output bucket.")
    event_queue: str = Field(
        "stream-router-a2i-events", description="SQS queue the EventBridge rule delivers to."
    )
    output_queue: str = Field(
        "stream-router-a2i-output",
        description="SQS queue receiving S3 ObjectCreated notifications for output.json.",
    )
    event_rule: str = Field(
        "stream-router-a2i-status", description="EventBridge rule for A2I status changes."
    )
    broker_bucket: str = Field(
        "stream-router-broker", description="Bucket of the broker's s3:// storage, when used."
    )


class Workteam(_Section):
    """The sandbox's private workteam: the simulated workers of flows created through the API."""

    name: str = Field(
        "sandbox-reviewers",
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="WorkteamName of the private workteam (its ARN ends "
        "workteam/private-crowd/NAME).",
    )
    workers: int = Field(
        3, ge=1, le=10, description="Workers in the team; a flow's TaskCount may not exceed it."
    )
    reviewers: Reviewers = Field(
        Reviewers(),
        description="How the simulated workers answer loops of flow definitions created with "
        "CreateFlowDefinition (flows of flow_definitions have their own).",
    )


class SandboxSettings(_Section):
    """Everything the sandbox needs; the default is a working two-flow setup."""

    aws: SandboxAws = Field(SandboxAws(), description="AWS resources created in moto.")
    flow_definitions: list[FlowDefinition] = Field(
        default_factory=lambda: [
            FlowDefinition(name="sandbox-general"),
            FlowDefinition(
                name="sandbox-experts",
                task_count=3,
                reviewers=Reviewers(error_rate=0.02, work=Latency(median_s=2.0, spread=0.3)),
            ),
        ],
        description="Flow definitions the A2I emulator knows.",
    )
    workteam: Workteam = Field(Workteam(), description="The private workteam.")
    flow_activation_s: float = Field(
        1.0,
        ge=0,
        description="How long a flow definition created with CreateFlowDefinition stays "
        "Initializing before it is Active.",
    )
    flow_deletion_s: float = Field(
        0.5,
        ge=0,
        description="How long a deleted flow definition stays Deleting before it is gone.",
    )
    faults: Faults = Field(Faults(), description="Fault injection at start.")
    stop_settle_s: float = Field(
        0.5, ge=0, description="How long a loop stays Stopping before it is Stopped."
    )
    topics: list[str] = Field(
        default_factory=list, description="Kafka topics created when the broker starts."
    )
    topic_partitions: int = Field(4, ge=1, description="Partitions of each created topic.")

    @model_validator(mode="after")
    def _unique_flow_names(self) -> SandboxSettings:
        names = [fd.name for fd in self.flow_definitions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"flow definition names must be unique; repeated: {duplicates}")
        return self

    def flow_arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account_id}:flow-definition/{name}"

    def workteam_arn(self, public: bool = False) -> str:
        crowd = "public-crowd/default" if public else f"private-crowd/{self.workteam.name}"
        return f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account_id}:workteam/{crowd}"

    def output_path(self, flow: FlowDefinition) -> str:
        default = f"s3://{self.aws.output_bucket}/{self.aws.output_prefix}".rstrip("/")
        return flow.s3_output_path or default

    @classmethod
    def from_yaml(cls, path: Path | None) -> SandboxSettings:
        """Load from a YAML file; None or an empty file gives the defaults. A file that cannot
        be read, is not YAML or is not a mapping raises ``ConfigError`` naming it."""
        if path is None:
            return cls()
        data = load_yaml_mapping(path, what="sandbox settings", top_level="a mapping")
        for flow in data.get("flow_definitions") or ():
            # A template named relative to the settings file is found beside it.
            if isinstance(flow, dict) and isinstance(flow.get("template_file"), str):
                flow["template_file"] = str(path.parent / Path(flow["template_file"]).expanduser())
        return cls.model_validate(data)
