"""Policy types by name, loaded from the entry-point group ``stream_router.policies``.

Built-in policies are registered in stream_router's own ``pyproject.toml`` under that group, so
they load through the same door as third-party plugins. Entry points are read once, but a policy
class is imported only when a configuration names its type.

A spec is a mapping with ``type`` (the entry-point name), an optional ``name`` (defaults to the
path of the spec in the configuration), an optional ``shadow`` flag, and the type's parameters::

    {type: confidence, below: 0.7, per_label: {cat: {below: 0.9}}}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from stream_router.errors import PolicyLoadError
from stream_router.policies.base import Policy
from stream_router.policies.shadow import ShadowPolicy

logger = logging.getLogger(__name__)

GROUP = "stream_router.policies"
RESERVED_KEYS = ("type", "name", "shadow")


class PolicyRegistry:
    """Maps policy type names to classes and builds policy trees from specs."""

    def __init__(
        self, group: str = GROUP, extra: Mapping[str, type[Policy[Any]]] | None = None
    ) -> None:
        """``extra`` registers classes directly (for embedding and tests), beside entry points."""
        self.group = group
        self._entry_points: dict[str, EntryPoint] = {}
        for entry_point in entry_points(group=group):
            if entry_point.name in self._entry_points:
                logger.warning(
                    "policy type %r is registered twice (%s and %s); keeping the first",
                    entry_point.name,
                    self._entry_points[entry_point.name].value,
                    entry_point.value,
                )
                continue
            self._entry_points[entry_point.name] = entry_point
        self._loaded: dict[str, type[Policy[Any]]] = dict(extra or {})

    def types(self) -> list[str]:
        return sorted({*self._entry_points, *self._loaded})

    def load(self, type_name: str, path: str = "policy") -> type[Policy[Any]]:
        """The class registered as ``type_name``; imports it on first use."""
        if type_name in self._loaded:
            return self._loaded[type_name]
        entry_point = self._entry_points.get(type_name)
        if entry_point is None:
            raise PolicyLoadError(
                f"{path}.type: unknown policy type {type_name!r}; "
                f"known types: {', '.join(self.types()) or 'none'}"
            )
        try:
            loaded = entry_point.load()
        except Exception as exc:
            raise PolicyLoadError(
                f"{path}.type: policy type {type_name!r} ({entry_point.value}) failed to import: "
                f"{exc}"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Policy)):
            raise PolicyLoadError(
                f"{path}.type: {entry_point.value} is not a stream_router Policy subclass"
            )
        self._loaded[type_name] = loaded
        return loaded

    def build(self, spec: Mapping[str, Any], path: str) -> Policy[Any]:
        """Build the policy (and any children) a spec describes; errors name ``path``."""
        if not isinstance(spec, Mapping):
            raise PolicyLoadError(f"{path}: a policy must be a mapping with a 'type'")
        type_name = spec.get("type")
        if not isinstance(type_name, str):
            raise PolicyLoadError(f"{path}.type: missing or not a string")
        cls = self.load(type_name, path)
        name = spec.get("name") or path
        if not isinstance(name, str):
            raise PolicyLoadError(f"{path}.name: must be a string")
        params = {k: v for k, v in spec.items() if k not in RESERVED_KEYS}
        try:
            policy: Policy[Any] = cls.create(name, params, self.build, path)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join([path, *(str(p) for p in error['loc'])])}: {error['msg']}"
                for error in exc.errors()
            )
            raise PolicyLoadError(f"invalid parameters for {type_name!r}: {problems}") from exc
        if spec.get("shadow", False):
            return ShadowPolicy(policy)
        return policy
