"""The A2I backend's own section (``review.backend: {name: a2i, ...}``).

How to reach AWS (region, endpoints, credentials) is the ``aws`` section, shared with the
sandbox's tools; what only the A2I backend uses is here: the content classifiers of its human
loops and the queues of its two watchers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stream_router.config_section import BackendSettings


class A2ISettings(BackendSettings):
    """Amazon A2I (``review.backend: a2i``): human loops of a custom task type, answers in S3."""

    name: Literal["a2i"] = "a2i"
    content_classifiers: list[
        Literal["FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent"]
    ] = Field(default_factory=list, description="A2I content classifiers of every review.")
    event_queue_url: str | None = Field(
        None,
        description="SQS queue receiving A2I status events from EventBridge (the eventbridge "
        "watcher; needed while it is enabled).",
    )
    output_queue_url: str | None = Field(
        None,
        description="SQS queue receiving S3 notifications for output.json (the s3-output "
        "watcher; needed while it is enabled).",
    )
    wait_time_s: int = Field(20, ge=0, le=20, description="SQS long-poll wait of the watchers.")
