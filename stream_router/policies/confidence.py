"""``confidence``: review when the prediction's confidence falls in a configured range.

Thresholds are ranges, the way A2I's built-in task types express their activation conditions::

    {type: confidence, below: 0.7}                       # review when confidence < 0.7
    {type: confidence, ranges: [{min: 0.3, max: 0.7}]}   # review when 0.3 <= confidence < 0.7
    {type: confidence, below: 0.7,
     per_label: {fraud: {ranges: [{min: 0, max: 0.5}, {min: 0.9, max: 1}]}}}

Edges, exactly:

- ``below: b`` reviews ``confidence < b``; a confidence equal to ``b`` is accepted. This holds
  for ``b = 1`` too: ``below: 1`` reviews everything except a confidence of exactly 1.
- a range ``{min: lo, max: hi}`` reviews ``lo <= confidence < hi``, except that ``hi = 1``
  includes 1: ``lo <= confidence <= 1`` (a confidence is never above 1, so that is the only way
  to write "from ``lo`` up").
- ranges of one rule may touch (``[0, 0.5)`` and ``[0.5, 0.7)``) but not overlap.
- ``per_label`` maps a label to its own rule (``below`` or ``ranges``), which replaces the
  global rule for predictions with that label. A label with neither a per-label nor a global
  rule is accepted.

A confidence that is not a number in [0, 1] (NaN, infinite, negative, a percentage such as 87)
is always reviewed, with a reason saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from stream_router.models import Prediction
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.fields import show_number, show_value


class ConfidenceRange(PolicyParams):
    """Review when ``min <= confidence < max`` (``<= max`` when ``max`` is 1)."""

    min: float = Field(
        ge=0.0, le=1.0, allow_inf_nan=False, description="Lower bound of the range, inclusive."
    )
    max: float = Field(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Upper bound of the range, exclusive; 1 includes a confidence of exactly 1.",
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> Self:
        if not self.min < self.max:
            raise ValueError(f"min {self.min!r} must be below max {self.max!r}")
        return self

    def text(self) -> str:
        """The range in interval notation: ``[0.3, 0.7)`` or ``[0.9, 1.0]``."""
        closing = "]" if self.max == 1.0 else ")"
        return f"[{self.min!r}, {self.max!r}{closing}"


class _Thresholds(PolicyParams):
    below: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Review when confidence < below (equal is accepted); shorthand for a range "
        "from 0.",
    )
    ranges: list[ConfidenceRange] | None = Field(
        default=None,
        min_length=1,
        description="Review when confidence falls in any of these ranges; they must not overlap.",
    )

    @field_validator("ranges")
    @classmethod
    def _no_overlap(cls, ranges: list[ConfidenceRange] | None) -> list[ConfidenceRange] | None:
        if ranges is None:
            return None
        ordered = sorted(ranges, key=lambda r: r.min)
        for first, second in zip(ordered, ordered[1:], strict=False):
            if second.min < first.max:
                raise ValueError(
                    f"ranges {first.text()} and {second.text()} overlap; merge them into one"
                )
        return ranges

    @model_validator(mode="after")
    def _not_both(self) -> Self:
        if self.below is not None and self.ranges is not None:
            raise ValueError(
                f"set either 'below' ({self.below!r}) or 'ranges', not both; "
                f"'below: b' is the range {{min: 0, max: b}}"
            )
        return self


class ConfidenceRule(_Thresholds):
    """The rule for one label: ``below`` or ``ranges``."""

    @model_validator(mode="after")
    def _one_set(self) -> Self:
        if self.below is None and self.ranges is None:
            raise ValueError("a per-label rule needs 'below' or 'ranges'")
        return self


class ConfidenceParams(_Thresholds):
    """Global rule (``below`` or ``ranges``) and per-label rules that replace it."""

    per_label: dict[str, ConfidenceRule] = Field(
        default_factory=dict,
        description="Label -> its own rule (below or ranges), replacing the global rule.",
    )

    @field_validator("per_label")
    @classmethod
    def _labels_not_empty(cls, per_label: dict[str, ConfidenceRule]) -> dict[str, ConfidenceRule]:
        if "" in per_label:
            raise ValueError("labels must be non-empty strings")
        return per_label

    @model_validator(mode="after")
    def _some_rule(self) -> Self:
        if self.below is None and self.ranges is None and not self.per_label:
            raise ValueError("set 'below', 'ranges' or 'per_label'; with none, nothing is reviewed")
        return self


@dataclass(frozen=True, slots=True)
class _Band:
    low: float
    high: float
    closed: bool
    text: str


@dataclass(frozen=True, slots=True)
class _Rule:
    below: float | None
    below_text: str
    bands: tuple[_Band, ...]
    bands_text: str
    bounds: tuple[float, ...]


def _compile(rule: _Thresholds) -> _Rule:
    if rule.below is not None:
        return _Rule(rule.below, repr(rule.below), (), "", (rule.below,))
    ranges = sorted(rule.ranges or (), key=lambda r: r.min)
    bands = tuple(_Band(r.min, r.max, r.max == 1.0, r.text()) for r in ranges)
    bounds = tuple(bound for r in ranges for bound in (r.min, r.max))
    return _Rule(None, "", bands, ", ".join(b.text for b in bands), bounds)


def _as_number(value: Any) -> float | None:
    """A non-float confidence as a float (ints), or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class ConfidencePolicy(EventPolicy[ConfidenceParams]):
    """Review when confidence falls in a configured range; see the module docstring."""

    params_model = ConfidenceParams
    summary = "review when confidence falls in configured ranges (e.g. below 0.7), per label"

    def __init__(self, name: str, params: ConfidenceParams) -> None:
        super().__init__(name, params)
        has_global = params.below is not None or params.ranges is not None
        self._default: _Rule | None = _compile(params) if has_global else None
        self._per_label: dict[str, _Rule] = {
            label: _compile(rule) for label, rule in params.per_label.items()
        }

    def check(self, prediction: Prediction) -> Verdict:
        label = prediction.label
        confidence = prediction.confidence
        if confidence.__class__ is not float:
            number = _as_number(confidence)
            if number is None:
                return Verdict(
                    True, f"confidence {show_value(confidence)} is not a number (label {label})"
                )
            confidence = number
        if not 0.0 <= confidence <= 1.0:
            return Verdict(True, f"confidence {confidence!r} is outside [0, 1] (label {label})")
        rule = self._per_label.get(label, self._default)
        if rule is None:
            return Verdict(False, f"no confidence rule for label {label}")
        below = rule.below
        if below is not None:
            shown = show_number(confidence, below)
            if confidence < below:
                return Verdict(True, f"confidence {shown} < {rule.below_text} (label {label})")
            return Verdict(False, f"confidence {shown} >= {rule.below_text} (label {label})")
        for band in rule.bands:
            if band.low <= confidence and (
                confidence < band.high or (band.closed and confidence == band.high)
            ):
                shown = show_number(confidence, band.low, band.high)
                return Verdict(True, f"confidence {shown} in {band.text} (label {label})")
        shown = show_number(confidence, *rule.bounds)
        return Verdict(False, f"confidence {shown} outside {rule.bands_text} (label {label})")
