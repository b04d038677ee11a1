"""Helpers for policy tests: predictions built directly, policies built as the registry does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from stream_router.models import Prediction, SourceRef
from stream_router.policies.base import Policy

PolicyT = TypeVar("PolicyT", bound=Policy[Any])


def make_prediction(
    *,
    event_id: str = "evt-1",
    label: str = "cat",
    confidence: float = 0.9,
    scores: Mapping[str, float] | None = None,
    model_name: str | None = "animals",
    model_version: str | None = "3",
    timestamp_s: float | None = 1_700_000_000.0,
    event: Mapping[str, Any] | None = None,
    topic: str = "predictions",
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
) -> Prediction:
    """A prediction with plausible defaults; override what the test is about."""
    return Prediction(
        event_id=event_id,
        label=label,
        confidence=confidence,
        scores=scores,
        model_name=model_name,
        model_version=model_version,
        timestamp_s=timestamp_s,
        event={} if event is None else event,
        source=SourceRef(topic=topic, partition=partition, offset=offset, key=key),
    )


def no_children(spec: Mapping[str, Any], path: str) -> Policy[Any]:
    """The ``build`` argument for leaf policies, which never build children."""
    raise AssertionError(f"a leaf policy tried to build a child at {path}: {spec!r}")


def build(cls: type[PolicyT], params: Mapping[str, Any], name: str = "test") -> PolicyT:
    """``cls`` built from ``params`` through ``create``, as the registry builds it."""
    return cls.create(name, params, no_children, "routes.0.policy")
