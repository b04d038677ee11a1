"""The domain's data: predictions as policies see them, and where each came from.

NamedTuples: created once per event on the hot path (they construct several times faster than
frozen dataclasses) and never mutated. Wire formats (envelopes, review requests) are built from
these in ``envelope.py``.

The hot path builds NamedTuples with :data:`new_tuple` (``new_tuple(SourceRef, (topic, ...))``):
the same object as ``SourceRef(topic, ...)`` for half the cost, since the ``__new__`` NamedTuple
generates is a Python function around it (about 110 ns instead of 240 a tuple, and ingest builds
half a dozen per event). Every field is given, in order: defaults do not apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

#: ``new_tuple(NamedTupleType, (every field, in order))``: see the module docstring.
new_tuple = tuple.__new__


class SourceRef(NamedTuple):
    """Kafka coordinates of an input record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int | None = None

    def derived_id(self) -> str:
        """An event id for events that carry none: unique per record."""
        return f"{self.topic}-{self.partition}-{self.offset}"


class Prediction(NamedTuple):
    """A model's prediction, with its fields taken from the event by the configured mapping.

    ``scores`` maps class name to score when the event has class scores. ``event`` is the whole
    parsed event, for field rules and for the output envelope.
    """

    event_id: str
    label: str
    confidence: float
    scores: Mapping[str, float] | None
    model_name: str | None
    model_version: str | None
    timestamp_s: float | None
    event: Mapping[str, Any]
    source: SourceRef
    id_derived: bool = False
