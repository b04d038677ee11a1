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
from itertools import pairwise
from typing import Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from stream_router.models import Prediction, new_tuple
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.fields import NumberDisplay, as_float, show_value


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
    def _no_overlap(
        cls, ranges: list[ConfidenceRange] | None, info: ValidationInfo
    ) -> list[ConfidenceRange] | None:
        """Runs only when ranges are given; ``below`` is validated first (declared before)."""
        if ranges is None:
            return None
        below = info.data.get("below")
        if below is not None:
            raise ValueError(
                f"set either 'below' ({below!r}) or 'ranges', not both; "
                f"'below: b' is the range {{min: 0, max: b}}"
            )
        ordered = sorted(ranges, key=lambda r: r.min)
        for first, second in pairwise(ordered):
            if second.min < first.max:
                raise ValueError(
                    f"ranges {first.text()} and {second.text()} overlap; merge them into one"
                )
        return ranges


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


class _Below:
    """Compiled ``below``: the verdict for a confidence known to be in [0, 1]."""

    __slots__ = ("below", "display", "text")

    def __init__(self, below: float) -> None:
        self.below = below
        self.text = repr(below)
        self.display = NumberDisplay(below)

    def verdict(self, confidence: float, label: str) -> Verdict:
        shown = self.display.show(confidence)
        if confidence < self.below:
            return new_tuple(Verdict, (True, f"confidence {shown} < {self.text} (label {label})"))
        return new_tuple(Verdict, (False, f"confidence {shown} >= {self.text} (label {label})"))


class _Bands:
    """Compiled ``ranges``: the verdict for a confidence known to be in [0, 1]."""

    __slots__ = ("bands", "display", "text")

    def __init__(self, ranges: list[ConfidenceRange]) -> None:
        ordered = sorted(ranges, key=lambda r: r.min)
        self.bands = tuple(_Band(r.min, r.max, r.max == 1.0, r.text()) for r in ordered)
        self.text = ", ".join(band.text for band in self.bands)
        self.display = NumberDisplay(*(bound for r in ordered for bound in (r.min, r.max)))

    def verdict(self, confidence: float, label: str) -> Verdict:
        for band in self.bands:
            if band.low <= confidence and (
                confidence < band.high or (band.closed and confidence == band.high)
            ):
                shown = self.display.show(confidence)
                reason = f"confidence {shown} in {band.text} (label {label})"
                return new_tuple(Verdict, (True, reason))
        shown = self.display.show(confidence)
        reason = f"confidence {shown} outside {self.text} (label {label})"
        return new_tuple(Verdict, (False, reason))


_Rule = _Below | _Bands


def _compile(rule: _Thresholds) -> _Rule | None:
    if rule.below is not None:
        return _Below(rule.below)
    if rule.ranges is not None:
        return _Bands(rule.ranges)
    return None


class ConfidencePolicy(EventPolicy[ConfidenceParams]):
    """Review when confidence falls in a configured range; see the module docstring."""

    params_model = ConfidenceParams
    summary = "review when confidence falls in configured ranges (e.g. below 0.7), per label"

    def __init__(self, name: str, params: ConfidenceParams) -> None:
        super().__init__(name, params)
        self._default = _compile(params)
        self._per_label: dict[str, _Rule] = {}
        for label, rule in params.per_label.items():
            compiled = _compile(rule)
            if compiled is not None:  # always: a per-label rule has below or ranges
                self._per_label[label] = compiled

    def check(self, prediction: Prediction) -> Verdict:
        label = prediction.label
        confidence = prediction.confidence
        if confidence.__class__ is not float:
            confidence = as_float(confidence)
        if not 0.0 <= confidence <= 1.0:
            shown = show_value(prediction.confidence)
            return Verdict(True, f"confidence {shown} is not in [0, 1] (label {label})")
        rule = self._per_label.get(label, self._default)
        if rule is None:
            return Verdict(False, f"no confidence rule for label {label}")
        return rule.verdict(confidence, label)
