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

from collections.abc import Callable, Iterable, Mapping
from math import inf, nan
from operator import attrgetter
from typing import Any, Final, final

from stream_router.models import Prediction

__all__ = [
    "MAPPED_FIELDS",
    "MISSING",
    "FieldRef",
    "NumberDisplay",
    "as_float",
    "resolve",
    "show_value",
]


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


def as_float(value: Any) -> float:
    """A number as a float; NaN for anything else (booleans, strings, None, MISSING, ...).

    For values read from events, where a number is expected: NaN then fails every range check.
    """
    if value.__class__ is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int beyond the float range
            return inf if value > 0 else -inf
    return nan


_MAX_SHOWN_CHARS: Final = 40
_MAX_SHOWN_DEPTH: Final = 3
_CONSTANTS: Final = ((None, "null"), (True, "true"), (False, "false"), (MISSING, "missing"))


def show_value(value: Any) -> str:
    """A value as reasons show it, cut to about 40 characters.

    YAML-like, as configurations are written: ``null``, ``true``, ``'text'``, ``[1, 'a']``;
    numbers in full (``repr``); :data:`MISSING` as ``missing``.
    """
    kind = value.__class__
    text = repr(value) if kind is int or kind is float else _shown(value)  # numbers: fast path
    if len(text) > _MAX_SHOWN_CHARS:
        return text[: _MAX_SHOWN_CHARS - 3] + "..."
    return text


def _shown(value: Any, depth: int = 0) -> str:
    for constant, name in _CONSTANTS:
        if value is constant:
            return name
    if isinstance(value, str):
        # Cut long strings before repr, which copies them whole.
        return repr(value[: _MAX_SHOWN_CHARS + 1])
    if isinstance(value, list | tuple | Mapping):
        if depth >= _MAX_SHOWN_DEPTH:
            return "{...}" if isinstance(value, Mapping) else "[...]"
        return _container(value, depth + 1)
    return repr(value)


def _container(value: list[Any] | tuple[Any, ...] | Mapping[Any, Any], depth: int) -> str:
    if isinstance(value, Mapping):
        pairs = (f"{_shown(k, depth)}: {_shown(v, depth)}" for k, v in value.items())
        return "{" + _joined(pairs) + "}"
    return "[" + _joined(_shown(item, depth) for item in value) + "]"


def _joined(parts: Iterable[str]) -> str:
    """Parts joined by commas, stopping (lazily) once past the length shown."""
    taken: list[str] = []
    length = 0
    for part in parts:
        taken.append(part)
        length += len(part) + 2
        if length > _MAX_SHOWN_CHARS:
            taken.append("...")
            break
    return ", ".join(taken)


class NumberDisplay:
    """Shows computed values next to configured bounds, without ever blurring the comparison.

    Bounds come from the configuration and reasons show them with ``repr`` (as written). A
    computed value such as a confidence is shown with 4 significant digits, unless rounding
    would make it look equal to a bound: then it is shown in full (``0.6999999999999999 < 0.7``,
    never ``0.7 < 0.7``; ``0.90625 >= 0.90625``, never ``0.9062 >= 0.90625``). Rounding is
    monotonic, so a value shown rounded keeps its side of every bound.

    Build one per set of bounds in a policy's ``__init__``; :meth:`show` formats once per call.
    """

    __slots__ = ("_rounded_bounds",)

    def __init__(self, *bounds: float) -> None:
        self._rounded_bounds = frozenset(f"{bound:.4g}" for bound in bounds)

    def show(self, value: float) -> str:
        text = f"{value:.4g}"
        return repr(value) if text in self._rounded_bounds else text
