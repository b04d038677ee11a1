"""Configuration: one section per component, from a YAML file with environment overrides.

    kafka     brokers and security (SSL, SASL PLAIN/SCRAM)
    ingest    topics, consumer group, batching, where fields live in events
    policies  the routes and their policies (see ``policies/``)
    review    review path settings (price per review; the review role's options); its
              ``backend`` is the chosen review backend's own section (``backends.py``)
    aws       region, endpoints, credentials
    watchers  which completion watchers run, and the reconciler's pace (review role)
    metrics   the Prometheus endpoint
    logging   level and format

Precedence: ``STREAM_ROUTER_<SECTION>__<FIELD>`` environment variables, then the YAML file, then
the defaults. Unknown keys are refused with their path; secrets are ``SecretStr`` and print
masked. Each component receives only its own section.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from stream_router import config_errors
from stream_router.backends import BACKENDS, DEFAULT_BACKEND, all_signals, signals_of
from stream_router.config_files import load_yaml_mapping
from stream_router.config_section import BackendSettings, Section
from stream_router.errors import ConfigError

ENV_PREFIX = config_errors.ENV_PREFIX

if TYPE_CHECKING:
    BackendSection = BackendSettings
else:  # one section per line of the backend table, told apart by its ``name``
    BackendSection = Annotated[
        Union[tuple(entry.settings for entry in BACKENDS.values())],  # noqa: UP007
        Field(discriminator="name"),
    ]


class KafkaSettings(Section):
    """How to reach the Kafka cluster."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of brokers."
    )
    client_id: str = Field("stream-router", description="Client id sent to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Transport security."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify brokers (SSL).")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client key.")
    ssl_check_hostname: bool = Field(True, description="Verify broker host names (SSL).")
    session_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Consumer group session timeout; short values join faster. At most "
        "request_timeout_s (the review role's client requires it).",
    )
    heartbeat_interval_s: float = Field(
        3.0, gt=0, description="Consumer heartbeat interval; below a third of the session."
    )
    request_timeout_s: float = Field(40.0, gt=0, description="Client request timeout.")
    idempotence: bool = Field(
        True,
        description="Idempotent producers (both roles): a batch retried after a leader change "
        "or a lost answer is written once. Brokers without idempotent writes (Tansu answers "
        "InitProducerId with an error) need false; the roles then fail at start naming this "
        "field.",
    )
    startup_wait_s: float = Field(
        30.0,
        ge=0,
        description="How long start-up keeps trying a cluster that refuses connections or has "
        "no metadata yet (a broker restarting) before failing; TLS and login errors fail at once.",
    )
    producer_batch_max_bytes: int = Field(
        262_144,
        ge=1024,
        le=8_388_608,
        description="Largest record batch the producer sends; keep under the brokers' "
        "message.max.bytes.",
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=16_384,
        le=8_388_608,
        description="Largest record (key, value and headers) ingest writes; keep it under the "
        "brokers' message.max.bytes (Kafka's default 1,048,588) less 100 bytes of batch "
        "framing. An envelope or review request that would be larger is dead-lettered "
        "(reason_class too_large); a dead letter that would be larger leaves out the original "
        "value.",
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Compression of the record batches both roles produce (consuming "
        "decodes every codec whatever this says).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs {', '.join(missing)}"
                )
        if self.session_timeout_s > self.request_timeout_s:
            raise ValueError(
                f"session_timeout_s ({self.session_timeout_s}) must not exceed "
                f"request_timeout_s ({self.request_timeout_s}); the review role refuses to start"
            )
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be at most a third "
                f"of session_timeout_s ({self.session_timeout_s})"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    def compression(self) -> str | None:
        """``compression_type`` as aiokafka and faust take it (None: uncompressed)."""
        return None if self.compression_type == "none" else self.compression_type


class EventMapping(Section):
    """Where a prediction's fields live in the input event (dotted paths into the JSON)."""

    event_id: str | None = Field(
        "event_id",
        description="Path of the event id; events without one get topic-partition-offset.",
    )
    label: str = Field("label", description="Path of the predicted label (string or integer).")
    confidence: str = Field("confidence", description="Path of the confidence, 0 to 1.")
    scores: str | None = Field(
        "scores",
        description="Path of the class scores: an object {class: score} or a list aligned "
        "with `classes`; optional in events.",
    )
    classes: list[str] = Field(
        default_factory=list, description="Class names for list-form scores, in order."
    )
    model_name: str | None = Field("model", description="Path of the model name; optional.")
    model_version: str | None = Field(
        "model_version", description="Path of the model version; optional."
    )
    timestamp: str | None = Field("timestamp", description="Path of the prediction time; optional.")
    timestamp_unit: Literal["s", "ms", "iso8601"] = Field(
        "s", description="Unit of the timestamp: epoch seconds, epoch milliseconds or ISO 8601."
    )


class IngestSettings(Section):
    """The hot path: consume predictions, apply policies, route."""

    input_topics: list[str] = Field(
        default_factory=lambda: ["predictions"], min_length=1, description="Topics to consume."
    )
    output_topic: str = Field(
        "predictions-routed", description="Results: accepted, reviewed and unreviewed envelopes."
    )
    review_requests_topic: str = Field(
        "stream-router-review-requests", description="Internal topic of review requests."
    )
    dead_letter_topic: str = Field(
        "predictions-dead-letter",
        description="Records ingest cannot route (malformed, too large, undecodable), with the "
        "reason.",
    )
    group_id: str = Field("stream-router-ingest", description="Consumer group of ingest.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts reading."
    )
    batch_max_records: int = Field(
        1000, ge=1, le=100_000, description="Most records handled in one batch."
    )
    max_in_flight_batches: int = Field(
        2,
        ge=0,
        le=16,
        description="Batches produced but not yet acknowledged while the next one is decided "
        "(0: wait for each batch's acknowledgements before the next).",
    )
    stall_after_s: float = Field(
        60.0,
        gt=0,
        description="Readiness reports ingest stalled when it completed no fetch for this long "
        "(a fetch completes even when empty; a batch waiting for the broker does not), or when "
        "no broker answered a fetch of an owned partition for this long (Kafka unreachable).",
    )
    drain_timeout_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, how long ingest waits for the batches in hand to be acknowledged "
        "and committed; past it (a broker that cannot take them) it stops anyway, and their "
        "records are consumed again after the restart (at-least-once). Keep it well under the "
        "orchestrator's grace period (terminationGracePeriodSeconds).",
    )
    fetch_wait_s: float = Field(
        0.2, ge=0, description="Longest wait for records before handling a smaller batch."
    )
    tombstones: Literal["skip", "dead_letter"] = Field(
        "skip",
        description="Records without a value (deletes on a compacted topic): skip (committed, "
        "counted in stream_router_ingest_tombstones_skipped_total) or dead_letter "
        "(reason_class tombstone).",
    )
    mapping: EventMapping = Field(EventMapping(), description="Where fields live in events.")


class RouteSettings(Section):
    """A review route: the first route whose policy says review takes the prediction."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        description="Route name (lowercase, digits, - and _; at most 40 chars).",
    )
    review_flow: str = Field(
        description="Where this route's reviews go: for A2I the flow definition ARN, for Label "
        "Studio a key of review.backend.projects."
    )
    policy: dict[str, Any] = Field(description="The policy spec: {type: ..., params...}.")
    shadow: bool = Field(
        False, description="Evaluate and count, but never send anything to review."
    )


class PoliciesSettings(Section):
    """The routes, evaluated in order; a prediction no route claims is accepted."""

    version: str = Field(
        "1",
        pattern=r"^[A-Za-z0-9._-]{1,32}$",
        description="Policy/config version; part of every decision and of human loop names.",
    )
    routes: list[RouteSettings] = Field(default_factory=list, description="Review routes.")

    @model_validator(mode="after")
    def _unique_routes(self) -> PoliciesSettings:
        names = [route.name for route in self.routes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"route names must be unique; repeated: {repeated}")
        return self


class RouteBudget(Section):
    """How many reviews a route may start: per UTC hour, per UTC day, or both.

    Every review is paid, so a budget fails closed: one that sets no limit is refused, and only
    ``unlimited: true`` lifts the limits (said in words, never by leaving them out).
    """

    per_hour: int | None = Field(None, ge=0, description="Reviews per UTC clock hour.")
    per_day: int | None = Field(None, ge=0, description="Reviews per UTC day.")
    unlimited: bool = Field(
        False,
        description="No limit at all (only without per_hour and per_day); an entry that sets "
        "no limit and not this is refused.",
    )

    @model_validator(mode="after")
    def _limited_or_said_unlimited(self) -> RouteBudget:
        limited = self.per_hour is not None or self.per_day is not None
        if self.unlimited and limited:
            raise ValueError("unlimited: true goes without per_hour and per_day")
        if not self.unlimited and not limited:
            raise ValueError(
                "the budget sets no limit: give per_hour, per_day or both, or unlimited: true "
                "to start paid reviews without a limit"
            )
        return self


#: Reviews a day of a route ``review.budgets`` does not list when it has no ``'*'`` entry either.
DEFAULT_REVIEWS_PER_DAY = 1000
DEFAULT_ROUTE_BUDGET = RouteBudget(per_day=DEFAULT_REVIEWS_PER_DAY)


class AuditRoute(Section):
    """One route's audit settings (overrides of ``review.audit``)."""

    target_error: float = Field(
        gt=0,
        lt=0.5,
        description="Error rate of this route's auto-accepted predictions that is acceptable.",
    )


class AuditSettings(Section):
    """The audit monitor: the error of auto-accepted predictions, measured on audited reviews
    (requests with a review probability below 1, e.g. from a ``sample`` route)."""

    target_error: float = Field(
        0.02,
        gt=0,
        lt=0.5,
        description="Error rate of auto-accepted predictions that is acceptable (0 to 0.5); "
        "the alert fires when the error's lower confidence bound is above it.",
    )
    delta: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Error probability of the confidence sequence: the chance, over the whole "
        "life of a policies.version, that a route and label's bounds ever exclude its true "
        "error rate, and so at most the chance that its alert ever fires while its error is at "
        "or below the target.",
    )
    max_labels: int = Field(
        20,
        ge=1,
        le=200,
        description="Model labels each review-requests partition counts apart per route (the "
        "first seen); later ones are counted as (other), so metric labels stay bounded.",
    )
    routes: dict[str, AuditRoute] = Field(
        default_factory=dict,
        description="Per-route overrides by route name (each a configured route).",
    )

    def target_for(self, route: str) -> float:
        """The target error of ``route``: its override, else ``target_error``."""
        override = self.routes.get(route)
        return self.target_error if override is None else override.target_error


class ReviewSettings(Section):
    """The review path: starting reviews, their limits, and what happens when they end."""

    backend: BackendSection = Field(
        default_factory=lambda: BACKENDS[DEFAULT_BACKEND].settings(name=DEFAULT_BACKEND),
        description="Who reviews, and that backend's own settings, chosen by name: "
        + "; ".join(f"{name}, {entry.about}" for name, entry in BACKENDS.items())
        + ". review.backend: <name> is short for {name: <name>} (every other setting of the "
        "backend at its default).",
    )

    price_per_review_usd: float = Field(
        0.08, ge=0, description="Price of one human review, for cost estimates."
    )
    app_id: str = Field(
        "stream-router-review",
        description="Consumer group and table prefix of the review application.",
    )
    loop_events_topic: str = Field(
        "stream-router-loop-events", description="Internal topic of watchers' loop events."
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of review-requests and loop-events (must match)."
    )
    rate_per_s: float = Field(
        1.0,
        gt=0,
        description="StartHumanLoop calls per second from this instance (split the account "
        "quota across instances).",
    )
    burst: int = Field(5, ge=1, description="Calls allowed at once above the steady rate.")
    max_in_flight: int = Field(
        1000, ge=1, description="Reviews open at once from this instance; starting waits above."
    )
    budgets: dict[str, RouteBudget] = Field(
        default_factory=lambda: {"*": {"per_day": DEFAULT_REVIEWS_PER_DAY}},
        validate_default=True,
        description="Budgets by route name (each a configured route); the key '*' applies to "
        "routes not listed and, when not given, is {per_day: 1000}: no route starts reviews "
        "without a limit unless its budget says unlimited: true.",
    )
    budget_fallback: Literal["hold", "accept-unreviewed", "dead-letter"] = Field(
        "hold",
        description="When a budget is spent: hold (the request waits in the ledger until the "
        "window resets), accept-unreviewed (publish the model's decision), or dead-letter.",
    )
    projection: list[str] = Field(
        default_factory=list,
        description="Event fields (dotted paths) reviewers may see; empty: the whole event.",
    )
    answer_path: str = Field(
        "label.label",
        description="Dotted path of the label in a worker's answer (crowd-classifier: "
        "<element name>.label).",
    )
    review_deadline_s: float = Field(
        86_400.0,
        gt=0,
        description="After this long an open review is checked with DescribeHumanLoop.",
    )
    on_failure: Literal["escalate", "accept-unreviewed", "dead-letter"] = Field(
        "accept-unreviewed",
        description="What a Failed, Expired or Stopped-without-output review becomes.",
    )
    escalation_flows: dict[str, str] = Field(
        default_factory=dict,
        description="Route name -> review flow of the next attempt: for failed reviews with "
        "on_failure escalate, and for reviews whose workers disagree (escalate_below_agreement).",
    )
    escalate_below_agreement: dict[str, float] = Field(
        default_factory=dict,
        description="Route name -> the least agreement (share of workers who gave the "
        "consolidated label, e.g. 0.66 for 2 of 3) its reviews must reach; a reviewed result "
        "below it escalates to the route's escalation_flows entry instead of publishing, while "
        "attempts remain (max_attempts); the last attempt publishes whatever it has.",
    )
    max_attempts: int = Field(
        2, ge=1, le=5, description="Reviews per event at most, escalations included."
    )
    delete_finished: bool = Field(
        False,
        description="Delete reviews from the backend once their result is published (A2I: "
        "DeleteHumanLoop; Label Studio: the task and its annotations), so the backend keeps no "
        "copy of the review input. output.json stays in S3 for its bucket's lifecycle.",
    )
    reviewer_data: Literal["full", "pseudonymous", "minimal"] = Field(
        "full",
        description="What reviewed envelopes say of the people who reviewed: full (worker ids "
        "and each answer's whole content, comments included), pseudonymous (worker ids replaced "
        "by HMAC-SHA256 pseudonyms under pseudonym_key, content kept), minimal (pseudonyms, and "
        "only each answer's label, no other content).",
    )
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Key of the worker pseudonyms (reviewer_data pseudonymous or minimal); "
        "without one they are keyed by app_id, which anyone can repeat: small worker ids (Label "
        "Studio user numbers) could then be found by trying them.",
    )
    concurrency: int = Field(
        8,
        ge=1,
        le=256,
        description="Starts each owned partition runs at once, and as many result fetches.",
    )
    ledger_retention_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="How long a finished review's ledger entry is kept; a copy of its request "
        "arriving later would start it again, so keep this at least the review-requests "
        "topic's retention.",
    )
    ledger_segment_s: float = Field(
        3_600.0,
        ge=60,
        description="How often the ledger topic starts a new segment (its segment.ms, set when "
        "the topic is created). Kafka compacts only closed segments: with its default of 7 days "
        "(or 1 GiB) the ledger grows by every record written for a week before any is cleaned.",
    )
    monitor_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often the review role measures its backlog (metrics, readiness) and "
        "looks for review requests waiting unrecorded.",
    )
    intake_max_waiting: int = Field(
        20_000,
        ge=1,
        description="Recorded review requests waiting to start (pending, escalated or held) "
        "above which this instance stops reading review-requests until some start or close; "
        "the rest waits in Kafka. Each waiting request holds its request's bytes in memory "
        "(about 1.6 KB of resident memory each while a flood is recorded).",
    )
    catch_up_after_s: float = Field(
        30.0,
        gt=0,
        description="A review request left unrecorded this long (the intake did not deliver "
        "it) is read and recorded directly.",
    )
    stall_after_s: float = Field(
        300.0,
        gt=0,
        description="Readiness reports the review role stalled when an agent holds one event "
        "this long (deliberate waits excluded) or a watcher makes no progress for this long.",
    )
    data_dir: Path = Field(
        Path(".stream-router/review-data"),
        description="Local state of the review application (its ledger lives in Kafka).",
    )
    audit: AuditSettings = Field(
        AuditSettings(), description="The audit monitor of auto-accepted predictions' error."
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_named(cls, backend: Any) -> Any:
        """``review.backend: <name>`` is ``{name: <name>}``; a section without a name is the
        default backend's."""
        if isinstance(backend, str):
            backend = {"name": backend}
        if isinstance(backend, dict):
            backend = {"name": DEFAULT_BACKEND, **backend}
            if backend["name"] not in BACKENDS:
                raise ValueError(
                    f"{backend['name']!r} is not a review backend; one of {', '.join(BACKENDS)}"
                )
        return backend

    @field_validator("budgets")
    @classmethod
    def _default_budget_said(cls, budgets: dict[str, RouteBudget]) -> dict[str, RouteBudget]:
        """The default budget becomes the ``'*'`` entry, so ``config check`` prints it."""
        if "*" in budgets:
            return budgets
        return {**budgets, "*": DEFAULT_ROUTE_BUDGET}


class AwsSettings(Section):
    """How to reach AWS; unset endpoints use the SDK's resolution (AWS_ENDPOINT_URL_*)."""

    region: str = Field("us-east-1", description="AWS Region.")
    a2i_endpoint_url: str | None = Field(None, description="A2I runtime endpoint override.")
    sagemaker_endpoint_url: str | None = Field(
        None,
        description="SageMaker control-plane endpoint override (the A2I backend checks its "
        "flow definitions there at start-up).",
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint override.")
    sqs_endpoint_url: str | None = Field(None, description="SQS endpoint override.")
    access_key_id: SecretStr | None = Field(
        None, description="Static access key id (else the SDK's credential chain)."
    )
    secret_access_key: SecretStr | None = Field(None, description="Static secret access key.")
    max_attempts: int = Field(
        3, ge=1, le=10, description="SDK attempts per call (botocore standard retry mode)."
    )

    def endpoint_urls(self) -> dict[str, str]:
        urls = {
            "sagemaker-a2i-runtime": self.a2i_endpoint_url,
            "sagemaker": self.sagemaker_endpoint_url,
            "s3": self.s3_endpoint_url,
            "sqs": self.sqs_endpoint_url,
        }
        return {service: url for service, url in urls.items() if url}


class WatchersSettings(Section):
    """Completion watchers of the review role; any one of them finishes every review."""

    enabled: list[str] | None = Field(
        None,
        description="Which watchers run; default: every signal of the review backend (A2I: "
        "eventbridge, s3-output, reconciler; Label Studio: webhook, reconciler). Their own "
        "settings are the backend's (review.backend).",
    )
    reconcile_interval_s: float = Field(
        60.0, gt=0, description="How often the reconciler checks open reviews."
    )
    reconcile_grace_s: float = Field(
        30.0,
        ge=0,
        description="The reconciler describes a review the backend no longer lists as open "
        "once it is this old (events and notifications usually come first).",
    )

    @field_validator("enabled")
    @classmethod
    def _known_signals(cls, enabled: list[str] | None) -> list[str] | None:
        unknown = sorted(set(enabled or ()) - all_signals())
        if unknown:
            raise ValueError(f"{unknown}: no review backend has such a signal; known: "
                             f"{sorted(all_signals())}")  # fmt: skip
        return enabled

    def active(self, backend: str) -> tuple[str, ...]:
        """The watchers that run with review backend ``backend``."""
        signals = signals_of(backend)
        if self.enabled is None:
            return signals
        foreign = sorted(set(self.enabled) - set(signals))
        if foreign:
            raise ConfigError(
                f"watchers.enabled: {foreign} are not completion signals of review backend "
                f"{backend} (its signals: {list(signals)})"
            )
        return tuple(self.enabled)


class MetricsSettings(Section):
    """The Prometheus endpoint."""

    enabled: bool = Field(True, description="Serve /metrics, /healthz and /readyz.")
    host: str = Field("127.0.0.1", description="Address to bind (0.0.0.0 in a container).")
    port: int = Field(
        9108, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz (0: any free port)."
    )


class LoggingSettings(Section):
    """Logs are for operators: never payloads or secrets."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level.")
    format: Literal["text", "json"] = Field("text", description="text, or one JSON per line.")


class TopicsSettings(Section):
    """How ``stream-router topics create`` makes the router's topics (see stream_router/topics.py).

    The review role's internal topics (loop events, its ledger) use the same replication factor.
    """

    replication_factor: int = Field(
        1,
        ge=1,
        le=32,
        description="Replicas of every topic the router creates, internal ones included; 3 on "
        "a production cluster (1 for a single broker such as the sandbox).",
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of created topics (none: the broker's default); with "
        "acks=all, a write fails when fewer replicas are in sync.",
    )
    partitions: int = Field(
        4,
        ge=1,
        description="Partitions of created input, output and dead-letter topics (the review "
        "role's topics have review.topic_partitions).",
    )
    review_requests_retention_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="retention.ms of the review-requests topic, in seconds; at most "
        "review.ledger_retention_s (start-up checks the topic too).",
    )

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> TopicsSettings:
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed "
                f"replication_factor ({self.replication_factor})"
            )
        return self


@dataclass(frozen=True)
class TopicNames:
    """Every topic name the roles share (:meth:`Settings.topic_names`), so no role reads another
    role's section for them."""

    inputs: tuple[str, ...]
    output: str
    dead_letter: str
    review_requests: str
    loop_events: str
    ledger: str  #: the review role's ledger (compacted; ``review/ledger.py``)


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = Field(KafkaSettings(), description="Kafka connection.")
    ingest: IngestSettings = Field(IngestSettings(), description="Ingest path.")
    policies: PoliciesSettings = Field(PoliciesSettings(), description="Routes and policies.")
    review: ReviewSettings = Field(ReviewSettings(), description="Review path.")
    aws: AwsSettings = Field(AwsSettings(), description="AWS access.")
    watchers: WatchersSettings = Field(WatchersSettings(), description="Completion watchers.")
    metrics: MetricsSettings = Field(MetricsSettings(), description="Prometheus endpoint.")
    logging: LoggingSettings = Field(LoggingSettings(), description="Logging.")
    topics: TopicsSettings = Field(TopicsSettings(), description="Creating the router's topics.")

    _moved: tuple[str, ...] = PrivateAttr(default=())

    def __init__(self, **values: Any) -> None:
        # ``review.backend: <name>`` becomes ``{name: <name>}`` before the environment is laid
        # over it, so STREAM_ROUTER_REVIEW__BACKEND__<KEY> adds to the named backend's section
        # instead of replacing the name.
        review = values.get("review")
        if isinstance(review, dict) and isinstance(review.get("backend"), str):
            values = {**values, "review": {**review, "backend": {"name": review["backend"]}}}
        super().__init__(**values)

    @model_validator(mode="wrap")
    @classmethod
    def _old_keys_moved(cls, data: Any, handler: Callable[[Any], Settings]) -> Settings:
        """Configurations written before ``review.backend`` held the backend's section keep
        loading: each key in :data:`MOVED_KEYS` is moved to its new place (or dropped, when it
        belonged to a backend not chosen), and :meth:`moved_keys` says so."""
        notes: list[str] = []
        if isinstance(data, dict):
            data, notes = move_old_keys(data)
        settings = handler(data)
        settings._moved = tuple(notes)
        return settings

    def moved_keys(self) -> list[str]:
        """One line per old key this configuration used; ``config check`` prints them and the
        roles log them at start-up."""
        return list(self._moved)

    @model_validator(mode="after")
    def _requests_outlived_by_their_ledger(self) -> Settings:
        kept, ledger = self.topics.review_requests_retention_s, self.review.ledger_retention_s
        if kept > ledger:
            raise ValueError(
                f"topics.review_requests_retention_s ({kept:.0f} s) exceeds "
                f"review.ledger_retention_s ({ledger:.0f} s): a copy of a request that outlives "
                "its ledger entry would start a second, paid review"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, so it overrides what the YAML file (passed as init data) says.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _review_settings_name_routes(self) -> Settings:
        """``review.budgets``, ``review.escalation_flows``, ``review.escalate_below_agreement``
        and ``review.audit.routes`` are keyed by configured routes: a misspelt key would leave
        its route on the ``'*'`` budget, never escalate it, or hold it to the default audit
        target. A route that escalates on disagreement needs a flow to escalate to."""
        routes = sorted(route.name for route in self.policies.routes)
        for setting, keys in (("budgets", self.review.budgets),
                              ("escalation_flows", self.review.escalation_flows),
                              ("escalate_below_agreement", self.review.escalate_below_agreement),
                              ("audit.routes", self.review.audit.routes)):  # fmt: skip
            for key in keys:
                if key not in routes and not (setting == "budgets" and key == "*"):
                    raise ValueError(
                        f"review.{setting}.{key}: no route is named {key!r} "
                        f"(policies.routes: {routes})"
                    )
        for route, least in self.review.escalate_below_agreement.items():
            if not 0.0 < least <= 1.0:
                raise ValueError(
                    f"review.escalate_below_agreement.{route}: {least!r} is not an agreement "
                    "in (0, 1]"
                )
            if route not in self.review.escalation_flows:
                raise ValueError(
                    f"review.escalate_below_agreement.{route}: the route has no "
                    f"review.escalation_flows.{route} to escalate to"
                )
        return self

    @model_validator(mode="after")
    def _flows_known_to_the_backend(self) -> Settings:
        self.review.backend.check_flows(self.named_flows())
        return self

    def named_flows(self) -> list[tuple[str, str]]:
        """Every setting that names a review flow, as (where, flow): each route's
        ``review_flow`` (``policies.routes.<i>.review_flow (route <name>)``), then each
        ``review.escalation_flows`` value; what start-up checks against the backend."""
        named = [(f"policies.routes.{i}.review_flow (route {route.name})", route.review_flow)
                 for i, route in enumerate(self.policies.routes)]  # fmt: skip
        named += [(f"review.escalation_flows.{route}", flow)
                  for route, flow in self.review.escalation_flows.items()]  # fmt: skip
        return named

    def topic_names(self) -> TopicNames:
        """The name of every topic the router uses, by role in the pipeline."""
        ingest, review = self.ingest, self.review
        return TopicNames(
            inputs=tuple(ingest.input_topics),
            output=ingest.output_topic,
            dead_letter=ingest.dead_letter_topic,
            review_requests=ingest.review_requests_topic,
            loop_events=review.loop_events_topic,
            ledger=f"{review.app_id}-ledger",
        )

    def privacy_warnings(self) -> list[str]:
        """What this configuration sends outside Kafka that a careful operator would narrow;
        ``config check`` prints these and the review role logs them at start-up."""
        if self.review.projection or not self.policies.routes:
            return []
        routes = ", ".join(route.name for route in self.policies.routes if not route.shadow)
        return [
            f"review.projection is empty: every field of an event goes to its reviewers (routes "
            f"{routes}) and into the backend's copies (A2I loops and output.json, Label Studio "
            "tasks); list the fields reviewers need, e.g. review.projection: [event_id, text]"
        ]

    def masked(self) -> dict[str, Any]:
        """The effective configuration as JSON-able data, secrets shown as ``**********``
        (passwords inside URLs too: ``http://user:**********@host``)."""
        data: dict[str, Any] = config_errors.mask_url_passwords(self.model_dump(mode="json"))
        return data


#: Keys of configurations older than the backend's own section: (old path, the backend whose
#: section took it, its key there; None: the old key was a section, whose keys all moved).
MOVED_KEYS: tuple[tuple[tuple[str, str], str, str | None], ...] = (
    (("review", "label_studio"), "label-studio", None),
    (("review", "content_classifiers"), "a2i", "content_classifiers"),
    (("watchers", "event_queue_url"), "a2i", "event_queue_url"),
    (("watchers", "output_queue_url"), "a2i", "output_queue_url"),
    (("watchers", "wait_time_s"), "a2i", "wait_time_s"),
)


def move_old_keys(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``data`` (configuration sections) with the old keys of :data:`MOVED_KEYS` in
    ``review.backend``, and a line for each; a key given in both places is refused (ValueError),
    naming the new one."""
    notes: list[str] = []
    found = [
        (section, key, backend, new)
        for (section, key), backend, new in MOVED_KEYS
        if isinstance(data.get(section), dict) and key in data[section]
    ]
    if not found:
        return data, notes
    data = {name: dict(part) if isinstance(part, dict) else part for name, part in data.items()}
    review = data.setdefault("review", {})
    if not isinstance(review, dict):
        return data, notes  # a ReviewSettings object: old keys fail as unknown where they are
    section_data = review.get("backend", DEFAULT_BACKEND)
    chosen = dict(section_data) if isinstance(section_data, dict) else {"name": section_data}
    chosen.setdefault("name", DEFAULT_BACKEND)
    for section, key, backend, new in found:
        value = data[section].pop(key)
        old = f"{section}.{key}"
        if chosen["name"] != backend:
            notes.append(f"{old} is ignored: it is a setting of review.backend {backend}, and "
                         f"review.backend is {chosen['name']}")  # fmt: skip
            continue
        if new is None and not isinstance(value, dict):
            raise ValueError(f"{old}: a section was expected (it is now review.backend)")
        moved = value if new is None else {new: value}
        for name, item in moved.items():
            if name in chosen:
                raise ValueError(
                    f"{old}{'.' + name if new is None else ''} and review.backend.{name} are "
                    f"both set; {old} is the old place of review.backend"
                    f"{'' if new is None else '.' + new}: keep review.backend.{name} only"
                )
            chosen[name] = item
        place = "review.backend" if new is None else f"review.backend.{new}"
        env = config_errors.env_name(place.split(".")) + ("__<KEY>" if new is None else "")
        notes.append(f"{old} is now {place} (environment: {env}); the old key still loads")
    review["backend"] = chosen
    return data, notes


def load_settings(path: Path | None) -> Settings:
    """Read YAML (if given) plus environment; a problem raises ConfigError naming the field."""
    data: dict[str, Any] = {}
    if path is not None:
        data = load_yaml_mapping(path, what="configuration", top_level="a mapping of sections")
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, path)) from exc
    except SettingsError as exc:  # an environment variable that is not the JSON it must be
        raise ConfigError(config_errors.describe_environment_error(Settings, os.environ)) from exc


def describe_validation_error(exc: ValidationError, path: Path | None) -> str:
    """One line per problem, naming the setting (see ``config_errors.py``)."""
    return config_errors.describe_validation_error(exc, path, Settings)
