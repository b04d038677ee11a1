"""The Label Studio backend's own section (``review.backend: {name: label-studio, ...}``).

The server and the token, a project per review flow, the webhook endpoint (a completion signal),
and how a task shows a review's content.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from stream_router.config_section import BackendSettings, Section


class LabelStudioProject(Section):
    """One flow of the Label Studio backend: the project its reviews go to."""

    project: str | int = Field(
        description="The Label Studio project: its id, or its title (unique among the token "
        "user's projects)."
    )
    annotations_per_task: int = Field(
        1,
        ge=1,
        le=10,
        description="Annotations that finish a review (like A2I's task count); the project "
        "must hand each task to at least this many annotators (maximum_annotations).",
    )
    deadline_s: float = Field(
        86_400.0,
        gt=0,
        description="A task still short of annotations this long after it was created is "
        "closed and its review fails with Expired (like A2I's task availability lifetime).",
    )


class LabelStudioWebhook(Section):
    """The review role's endpoint for Label Studio's webhooks (ANNOTATION_CREATED/UPDATED)."""

    enabled: bool = Field(True, description="Serve the endpoint and register it in Label Studio.")
    host: str = Field(
        "127.0.0.1",
        description="Address to bind (0.0.0.0 in a container); an address other than loopback "
        "needs secret (or allow_without_secret).",
    )
    port: int = Field(9102, ge=0, le=65535, description="Port to bind (0: any free port).")
    public_url: str | None = Field(
        None,
        description="The URL Label Studio posts to (a load balancer's, in a cluster; one URL "
        "for all instances of a router); default http://<host>:<port>/label-studio/webhook. A "
        "host other than loopback here needs secret too (or allow_without_secret).",
    )
    secret: SecretStr | None = Field(
        None,
        min_length=1,
        description="Sent by Label Studio in the X-Stream-Router-Secret header of every post; "
        "posts without it are refused (401). Label Studio shows it to the members of the "
        "organization: it keeps strangers out, not them.",
    )
    allow_without_secret: bool = Field(
        False,
        description="Serve a host or public_url other than loopback without a secret: anyone "
        "who reaches the port can then post (each valid post costs one describe of a review). "
        "Without it, such a configuration is refused at start-up.",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=16_384,
        le=4_194_304,
        description="Largest post read. Label Studio's post is about 4 KiB plus the task's data "
        "(the review's content and its rows: 5 KiB in all in the demo); a larger one is "
        "refused (413) and its review ends at the reconciler's next sweep instead. A post is "
        "parsed whole: JSON of empty objects takes 36 times its size while parsed.",
    )
    read_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Time a client has to send a request's headers (from connecting, or from "
        "the previous answer) and again to send its body; then the connection is closed (a "
        "late body is answered 408).",
    )
    register_on_start: bool = Field(
        True,
        description="Register public_url as a webhook of every configured project at start "
        "and renew it every 5 minutes (left registered at stop), and delete this router's "
        "registrations of other URLs (same path, its marker or secret header, same secret) "
        "not renewed for 15 minutes: earlier runs on other ports or hosts.",
    )

    @model_validator(mode="after")
    def _secret_unless_loopback(self) -> LabelStudioWebhook:
        """An endpoint others can reach takes posts only with the secret, unless told."""
        if not self.enabled or self.secret is not None or self.allow_without_secret:
            return self
        exposed = [
            f"{name} {value}"
            for name, value, host in (
                ("host", self.host, self.host),
                ("public_url", self.public_url, urlsplit(self.public_url or "").hostname),
            )
            if value is not None and not _is_loopback(host or "")
        ]
        if exposed:
            verb = "are" if len(exposed) > 1 else "is"
            raise ValueError(
                f"{' and '.join(exposed)} {verb} not loopback and no secret is set: anyone who "
                "reaches the endpoint could post to it. Set review.backend.webhook.secret "
                "(STREAM_ROUTER_REVIEW__BACKEND__WEBHOOK__SECRET; the router registers it "
                "with the webhook in Label Studio), or "
                "review.backend.webhook.allow_without_secret: true to serve it open anyway"
            )
        return self


def _is_loopback(host: str) -> bool:
    """``host`` names this machine's loopback interface only (127.0.0.0/8, ::1, localhost)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve anywhere


class LabelStudioSettings(BackendSettings):
    """The Label Studio review backend (``review.backend: label-studio``)."""

    name: Literal["label-studio"] = "label-studio"

    url: str = Field("http://127.0.0.1:8080", description="Label Studio's base URL.")
    api_token: SecretStr | None = Field(
        None,
        description="API token of a user who may create tasks in the projects (Label Studio's "
        "Account & Settings; the legacy token type).",
    )
    task_tag_key: SecretStr | None = Field(
        None,
        description="Key of the tag (HMAC-SHA256 of flow and review name) the router puts in "
        "every task it creates; a task under a review's name is taken for the review only if "
        "its tag verifies. Default: derived from api_token, so a new token disowns the open "
        "tasks (set this to keep them). Not webhook.secret: Label Studio shows webhook headers "
        "to project members.",
    )
    projects: dict[str, LabelStudioProject] = Field(
        default_factory=dict,
        description="Flows by name (what routes' review_flow and escalation_flows name) -> "
        "their Label Studio project.",
        json_schema_extra={"keyed_by": "flow"},
    )
    webhook: LabelStudioWebhook = Field(
        LabelStudioWebhook(), description="The webhook endpoint (a completion signal)."
    )
    request_timeout_s: float = Field(10.0, gt=0, description="Timeout of one API call.")
    import_settle_s: float = Field(
        30.0,
        ge=0,
        description="How long an import that got no answer (a process killed mid-call, a "
        "timeout, a 5xx) may still land in Label Studio: Label Studio applies requests its "
        "client gave up on, after a stall, and its imports are not idempotent. A start that may "
        "repeat such an import (after a failure, or by a process that takes a partition over) "
        "waits this long first, so its look-up finds the task instead of importing a second "
        "one a person would be paid to label. Keep it above Label Studio's longest stall.",
    )
    clock_skew_s: float = Field(
        60.0,
        ge=0,
        le=3_600,
        description="The most the clocks of the router's review instances may differ: a start "
        "that may repeat an earlier one looks for its task among those created since its "
        "request was recorded (by whichever instance), less this much. Too small, and a "
        "review recorded on a clock ahead of this one's may get a second task; larger only "
        "makes that look-up read more tasks. Label Studio's own clock does not matter.",
    )
    page_size: int = Field(100, ge=1, le=1000, description="Tasks per page when listing.")
    image_field: str | None = Field(
        None,
        pattern=r"^[^.\s]+(\.[^.\s]+)*$",
        description="Dotted path of a review.projection field holding an image URL (http or "
        "https): the task shows the image above the event's fields instead of the URL among "
        "them. The reviewer's browser loads it.",
    )
    text_field: str | None = Field(
        None,
        pattern=r"^[^.\s]+(\.[^.\s]+)*$",
        description="Dotted path of a review.projection field holding text to read: the task "
        "shows it as a block above the event's fields instead of among them.",
    )

    def check_flows(self, named_flows: Sequence[tuple[str, str]]) -> None:
        """The token is set, and every flow a route or an escalation names has a project."""
        if self.api_token is None:
            raise ValueError("review.backend.api_token: the Label Studio backend needs it")
        for where, flow in named_flows:
            if flow not in self.projects:
                raise ValueError(
                    f"{where}: flow {flow!r} is not in review.backend.projects "
                    f"(known: {sorted(self.projects)})"
                )
