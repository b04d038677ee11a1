"""Helpers for policy tests: policies built as the registry does.

Predictions come from :func:`stream_router.testing.make_prediction`, the helper plugin authors
use too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from stream_router.policies.base import Policy

PolicyT = TypeVar("PolicyT", bound=Policy[Any])


def no_children(spec: Mapping[str, Any], path: str) -> Policy[Any]:
    """The ``build`` argument for leaf policies, which never build children."""
    raise AssertionError(f"a leaf policy tried to build a child at {path}: {spec!r}")


def build(cls: type[PolicyT], params: Mapping[str, Any], name: str = "test") -> PolicyT:
    """``cls`` built from ``params`` through ``create``, as the registry builds it."""
    return cls.create(name, params, no_children, "routes.0.policy")
