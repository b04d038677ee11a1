"""From Kafka record to :class:`~stream_router.models.Prediction`, by the configured mapping.

Events are parsed as strict JSON (RFC 8259, with orjson): ``NaN`` and ``Infinity`` are not JSON
and make an event malformed, so everything ingest writes is strict JSON too.

Anything wrong with an event raises :class:`~stream_router.errors.PoisonEvent` with a
low-cardinality ``reason_class`` (``not_json``, ``not_object``, ``missing_field``, ``bad_type``,
``bad_value``) and a message naming the field and value; the ingest loop dead-letters it. A
record without a value (a tombstone) raises it with ``tombstone``: the loop skips it or
dead-letters it, as ``ingest.tombstones`` says.

``bad_value`` covers a confidence outside [0, 1], a score that is not finite, and class scores
that do not match ``mapping.classes`` when it is set: a list of another length, or an object
naming a class outside it (an object may leave classes out).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_router.errors import PoisonEvent
from stream_router.models import Prediction, SourceRef, new_tuple
from stream_router.settings import EventMapping

_MISSING = object()

#: Top-level keys of (id, label, confidence, scores, model, version, timestamp).
_FlatKeys = tuple[str, str, str, str | None, str | None, str | None, str | None]

#: reason_class of a record without a value.
TOMBSTONE = "tombstone"


class _Path:
    """A dotted path, split once; ``get`` walks nested objects."""

    __slots__ = ("first", "parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = tuple(text.split("."))
        self.first = self.parts[0] if len(self.parts) == 1 else None

    def get(self, event: Mapping[str, Any]) -> Any:
        if self.first is not None:
            return event.get(self.first, _MISSING)
        node: Any = event
        for part in self.parts:
            if not isinstance(node, Mapping):
                return _MISSING
            node = node.get(part, _MISSING)
            if node is _MISSING:
                return _MISSING
        return node


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class EventParser:
    """Parses raw record values into predictions; one per ingest process."""

    def __init__(self, mapping: EventMapping) -> None:
        self.mapping = mapping
        self._id = _Path(mapping.event_id) if mapping.event_id else None
        self._label = _Path(mapping.label)
        self._confidence = _Path(mapping.confidence)
        self._scores = _Path(mapping.scores) if mapping.scores else None
        self._classes = tuple(mapping.classes)
        #: Class names object-form scores may use (None: any).
        self._known: frozenset[str] | None = frozenset(mapping.classes) or None
        self._model = _Path(mapping.model_name) if mapping.model_name else None
        self._version = _Path(mapping.model_version) if mapping.model_version else None
        self._timestamp = _Path(mapping.timestamp) if mapping.timestamp else None
        self._seconds = mapping.timestamp_unit == "s"
        self._flat = self._flat_keys()

    def _flat_keys(self) -> _FlatKeys | None:
        """Top-level keys of (id, label, confidence, scores, model, version, timestamp) when
        every path is one key and timestamps are float seconds (or unmapped): then
        :meth:`from_event` tries a fast path first."""
        if self._id is None or self._id.first is None:
            return None
        if self._timestamp is not None and (self._timestamp.first is None or not self._seconds):
            return None
        optional = (self._scores, self._model, self._version)
        if any(path is not None and path.first is None for path in optional):
            return None
        if self._label.first is None or self._confidence.first is None:
            return None
        scores, model, version, timestamp = (
            None if path is None else path.first for path in (*optional, self._timestamp)
        )
        return (
            self._id.first,
            self._label.first,
            self._confidence.first,
            scores,
            model,
            version,
            timestamp,
        )

    def parse(self, value: bytes | None, source: SourceRef) -> Prediction:
        if value is None:
            raise PoisonEvent(TOMBSTONE, "the record has no value (a tombstone)")
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise PoisonEvent("not_json", f"the value is not JSON (RFC 8259): {exc}") from exc
        if event.__class__ is not dict:  # orjson makes objects plain dicts
            raise PoisonEvent(
                "not_object", f"the event must be a JSON object, not {type(event).__name__}"
            )
        flat = self._flat  # from_event, one call less
        if flat is not None:
            fast = self._from_flat_event(event, source, flat)
            if fast is not None:
                return fast
        return self._from_any_event(event, source)

    def from_event(self, event: dict[str, Any], source: SourceRef) -> Prediction:
        if self._flat is not None:
            fast = self._from_flat_event(event, source, self._flat)
            if fast is not None:
                return fast
        return self._from_any_event(event, source)

    def _from_any_event(self, event: dict[str, Any], source: SourceRef) -> Prediction:
        event_id, derived = self._event_id(event, source)
        label = self._label.get(event)
        if label.__class__ is not str:  # fast path: most labels are strings
            if label is _MISSING or label is None:
                raise PoisonEvent("missing_field", f"required field {self._label.text} is missing")
            if isinstance(label, bool) or not isinstance(label, int):
                raise PoisonEvent(
                    "bad_type",
                    f"{self._label.text} must be a string or integer, got {_short(label)}",
                )
            label = str(label)
        confidence = self._confidence.get(event)
        if confidence.__class__ is not float:
            if confidence is _MISSING or confidence is None:
                raise PoisonEvent(
                    "missing_field", f"required field {self._confidence.text} is missing"
                )
            if isinstance(confidence, bool) or not isinstance(confidence, int | float):
                raise PoisonEvent(
                    "bad_type",
                    f"{self._confidence.text} must be a number, got {_short(confidence)}",
                )
            confidence = float(confidence)
        if not (0.0 <= confidence <= 1.0):  # also refuses NaN
            raise PoisonEvent(
                "bad_value", f"{self._confidence.text} must be within [0, 1], got {confidence}"
            )
        return Prediction(
            event_id,
            label,
            confidence,
            self._read_scores(event) if self._scores is not None else None,
            self._optional_str(event, self._model),
            self._optional_str(event, self._version),
            self._read_timestamp(event) if self._timestamp is not None else None,
            event,
            source,
            derived,
        )

    def _from_flat_event(
        self,
        event: dict[str, Any],
        source: SourceRef,
        keys: _FlatKeys,
    ) -> Prediction | None:
        """The prediction of a well-formed event with one-key paths, or None to take the
        general path (which gives the same result, or the PoisonEvent with its reason)."""
        id_key, label_key, confidence_key, scores_key, model_key, version_key, time_key = keys
        get = event.get
        event_id = get(id_key)
        label = get(label_key)
        confidence = get(confidence_key)
        if (
            event_id.__class__ is not str
            or not event_id
            or label.__class__ is not str
            or confidence.__class__ is not float
            or not 0.0 <= confidence <= 1.0
        ):
            return None
        scores = None if scores_key is None else get(scores_key)
        if scores is not None:
            known = self._known
            if scores.__class__ is not dict or (known is not None and not known.issuperset(scores)):
                return None
            for score in scores.values():
                # Finite floats only: x - x is 0 for those, NaN for infinities and NaN.
                if score.__class__ is not float or score - score != 0.0:
                    return None
        model = None if model_key is None else get(model_key)
        version = None if version_key is None else get(version_key)
        if (model is not None and model.__class__ is not str) or (
            version is not None and version.__class__ is not str
        ):
            return None
        timestamp = None if time_key is None else get(time_key)
        if timestamp is not None and timestamp.__class__ is not float:
            return None
        return new_tuple(
            Prediction,
            (event_id, label, confidence, scores, model, version, timestamp, event, source, False),
        )

    def _event_id(self, event: Mapping[str, Any], source: SourceRef) -> tuple[str, bool]:
        if self._id is None:
            return source.derived_id(), True
        value = self._id.get(event)
        if value.__class__ is str and value:
            return value, False
        if value is _MISSING or value is None or value == "":
            return source.derived_id(), True
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PoisonEvent(
                "bad_type", f"{self._id.text} must be a string or integer, got {_short(value)}"
            )
        return str(value), False

    @staticmethod
    def _optional_str(event: Mapping[str, Any], path: _Path | None) -> str | None:
        if path is None:
            return None
        value = path.get(event)
        if value.__class__ is str:
            return value
        if value is _MISSING or value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PoisonEvent("bad_type", f"{path.text} must be a string, got {_short(value)}")
        return str(value)

    def _read_scores(self, event: Mapping[str, Any]) -> Mapping[str, float] | None:
        assert self._scores is not None
        raw = self._scores.get(event)
        if raw is _MISSING or raw is None:
            return None
        if raw.__class__ is dict and (self._known is None or self._known.issuperset(raw)):
            # Fast path: JSON object keys are strings; all-float values need no copy.
            for score in raw.values():
                if score.__class__ is not float or not math.isfinite(score):
                    break
            else:
                return raw
        return self._checked_scores(raw)

    def _checked_scores(self, raw: Any) -> dict[str, float]:
        assert self._scores is not None
        name = self._scores.text
        if isinstance(raw, dict):
            if self._known is not None:
                unknown = sorted(str(cls) for cls in raw if cls not in self._known)
                if unknown:
                    raise PoisonEvent(
                        "bad_value",
                        f"{name} names {len(unknown)} classes outside mapping.classes: "
                        f"{_short(unknown)}",
                    )
            items = list(raw.items())
        elif isinstance(raw, list):
            if self._classes and len(raw) != len(self._classes):
                raise PoisonEvent(
                    "bad_value",
                    f"{name} has {len(raw)} scores but {len(self._classes)} classes are configured",
                )
            names = self._classes or tuple(str(i) for i in range(len(raw)))
            items = list(zip(names, raw, strict=True))
        else:
            raise PoisonEvent(
                "bad_type", f"{name} must be an object or a list, got {type(raw).__name__}"
            )
        scores: dict[str, float] = {}
        for cls, score in items:
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise PoisonEvent("bad_type", f"{name}.{cls} must be a number, got {_short(score)}")
            if not math.isfinite(score):
                raise PoisonEvent("bad_value", f"{name}.{cls} must be finite, got {score}")
            scores[str(cls)] = float(score)
        return scores

    def _read_timestamp(self, event: Mapping[str, Any]) -> float | None:
        assert self._timestamp is not None
        raw = self._timestamp.get(event)
        if raw.__class__ is float and self._seconds:
            return raw
        if raw is _MISSING or raw is None:
            return None
        name = self._timestamp.text
        unit = self.mapping.timestamp_unit
        if unit == "iso8601":
            if not isinstance(raw, str):
                raise PoisonEvent(
                    "bad_type",
                    f"{name} must be an ISO 8601 string, got {_short(raw)} (epoch numbers: set "
                    "ingest.mapping.timestamp_unit to s or ms)",
                )
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError as exc:
                raise PoisonEvent("bad_value", f"{name} is not ISO 8601: {_short(raw)}") from exc
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # naive times are taken as UTC
            return moment.timestamp()
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            hint = ""
            if isinstance(raw, str):
                with contextlib.suppress(ValueError):
                    datetime.fromisoformat(raw)
                    hint = " (an ISO 8601 time: set ingest.mapping.timestamp_unit to iso8601)"
            units = "milliseconds" if unit == "ms" else "seconds"
            raise PoisonEvent(
                "bad_type",
                f"{name} must be a finite number of {units} since the epoch "
                f"(ingest.mapping.timestamp_unit: {unit}), got {_short(raw)}{hint}",
            )
        return float(raw) / 1000.0 if unit == "ms" else float(raw)
