"""Field names as policies see them, resolved against a prediction, and values shown in reasons.

A field name is either one of the prediction's mapped fields:

=================  ===========================================
name               value
=================  ===========================================
``event_id``       ``prediction.event_id``
``label``          ``prediction.label``
``confidence``     ``prediction.confidence``
``scores``         ``prediction.scores`` (class name → score, or None)
``model_name``     ``prediction.model_name``
``model_version``  ``prediction.model_version``
``timestamp``      ``prediction.timestamp_s`` (seconds since the epoch, or None)
``topic``          ``prediction.source.topic``
``partition``      ``prediction.source.partition``
``offset``         ``prediction.source.offset``
=================  ===========================================

or a dotted path into the parsed event, ``customer.address.country`` for
``event["customer"]["address"]["country"]``. Each step must go through a mapping; a step that
does not exist (or a value on the way that is not a mapping) gives :data:`MISSING`, which is
distinct from a JSON ``null`` (``None``).

Mapped names take precedence over event keys of the same name. The prefix ``event.`` always
means the event: ``event.label`` is ``event["label"]`` whatever the mapping made of it, and
``event.event.id`` is ``event["event"]["id"]``. The bare name ``event`` is the whole event.

Parse a name once with :class:`FieldRef` (in the policy's ``__init__``) and call
:meth:`FieldRef.get` per prediction; :func:`resolve` is the one-off form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any, Final, final

from stream_router.models import Prediction

__all__ = ["MAPPED_FIELDS", "MISSING", "FieldRef", "resolve", "show_number", "show_value"]


@final
class _Missing:
    """The type of :data:`MISSING`; one instance only."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


#: The value of a field that the prediction does not have (distinct from ``None``, JSON null).
MISSING: Final = _Missing()

#: Mapped field names and the attribute of :class:`Prediction` each one reads.
MAPPED_FIELDS: Final[Mapping[str, str]] = {
    "event_id": "event_id",
    "label": "label",
    "confidence": "confidence",
    "scores": "scores",
    "model_name": "model_name",
    "model_version": "model_version",
    "timestamp": "timestamp_s",
    "topic": "source.topic",
    "partition": "source.partition",
    "offset": "source.offset",
}

_EVENT_PREFIX: Final = "event"


class FieldRef:
    """A field name parsed once; :meth:`get` reads it from a prediction.

    Raises :class:`ValueError` for a malformed name (empty, or with an empty path step), so
    pydantic validators can call it and report the field.
    """

    __slots__ = ("_getter", "mapped", "name", "path")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"field name must be a non-empty string, got {name!r}")
        self.name = name
        attribute = MAPPED_FIELDS.get(name)
        #: True when the name is one of the mapped prediction fields.
        self.mapped = attribute is not None
        #: The steps into the event (empty for mapped fields and for ``event`` itself).
        self.path: tuple[str, ...] = ()
        if attribute is not None:
            self._getter: Callable[[Prediction], Any] = attrgetter(attribute)
            return
        steps = name.split(".")
        if any(not step for step in steps):
            raise ValueError(
                f"field name {name!r} has an empty step; write a dotted path such as 'a.b.c'"
            )
        if steps[0] == _EVENT_PREFIX:
            steps = steps[1:]
        self.path = tuple(steps)
        if not steps:
            self._getter = _whole_event
        elif len(steps) == 1:
            self._getter = _one_step(steps[0])
        else:
            self._getter = _many_steps(self.path)

    def get(self, prediction: Prediction) -> Any:
        """The field's value, or :data:`MISSING` when the event has no such path."""
        return self._getter(prediction)

    def __repr__(self) -> str:
        return f"FieldRef({self.name!r})"


def resolve(prediction: Prediction, name: str) -> Any:
    """The value of field ``name`` of ``prediction`` (parses the name each call)."""
    return FieldRef(name).get(prediction)


def _whole_event(prediction: Prediction) -> Any:
    return prediction.event


def _one_step(step: str) -> Callable[[Prediction], Any]:
    def get(prediction: Prediction) -> Any:
        event = prediction.event
        if event.__class__ is dict or isinstance(event, Mapping):
            return event.get(step, MISSING)
        return MISSING

    return get


def _many_steps(steps: tuple[str, ...]) -> Callable[[Prediction], Any]:
    def get(prediction: Prediction) -> Any:
        current: Any = prediction.event
        for step in steps:
            if current.__class__ is not dict and not isinstance(current, Mapping):
                return MISSING
            current = current.get(step, MISSING)
            if current is MISSING:
                return MISSING
        return current

    return get


_MAX_SHOWN_CHARS: Final = 40


def show_value(value: Any) -> str:
    """A value as a reason shows it: ``repr``-like, cut to about 40 characters."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN_CHARS:
            return repr(value[: _MAX_SHOWN_CHARS - 3]) + "..."
        return repr(value)
    text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS:
        return text[: _MAX_SHOWN_CHARS - 3] + "..."
    return text


def show_number(value: float, *bounds: float) -> str:
    """``value`` with 4 significant digits, or in full when that would look equal to a bound.

    Bounds come from the configuration and are shown with ``repr`` (as written); a computed
    value such as a confidence is rounded for reading unless rounding would make it look equal
    to a bound it differs from (``0.6999999999999999 < 0.7``, never ``0.7 < 0.7``).
    """
    text = f"{value:.4g}"
    for bound in bounds:
        if value != bound and text == f"{bound:.4g}":
            return repr(value)
    return text
