"""``margin`` and ``entropy``: review when the class scores show the model torn between classes.

Both read ``Prediction.scores`` (class name -> score)::

    {type: margin, min_margin: 0.1}      # review when top-1 - top-2 < 0.1
    {type: entropy, max_entropy: 0.8}    # review when normalized entropy > 0.8

- **margin** is the best score minus the second best, on the scores as given (no
  normalization), so scores must be in [0, 1]. A margin equal to ``min_margin`` is accepted. Ties
  for the top score give margin 0.
- **entropy** is the Shannon entropy of the scores normalized to sum 1, divided by ``ln(n)``
  where ``n`` is the number of classes (zero scores included): 0 when one class has all the
  mass, 1 when all classes are equal. Scores may be on any non-negative scale. An entropy equal
  to ``max_entropy`` is accepted.

Odd scores never raise:

- no scores, or fewer than 2 classes: the verdict follows ``when_missing`` (default review);
- a score that is not a finite number, a negative score (and for margin a score above 1), or
  scores that are all 0: always reviewed, with the reason naming the class and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import inf, log
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from stream_router.models import Prediction, new_tuple
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.fields import NumberDisplay, as_float, show_value


class _ScoresParams(PolicyParams):
    when_missing: Literal["review", "accept"] = Field(
        default="review",
        description="Verdict for a prediction without class scores or with fewer than 2 classes.",
    )


class MarginParams(_ScoresParams):
    min_margin: float = Field(
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Review when the top class score minus the second one is below this.",
    )


class EntropyParams(_ScoresParams):
    max_entropy: float = Field(
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Review when the normalized entropy of the class scores (0 = certain, "
        "1 = uniform) is above this.",
    )


def _bad_score(name: Any, value: Any, allowed: str) -> str:
    return f"class score of {name} is {show_value(value)}, not a number in {allowed}"


S = TypeVar("S", bound=_ScoresParams)


class _ScoresPolicy(EventPolicy[S]):
    #: What the policy computes, for reasons ("margin", "entropy").
    measure: ClassVar[str]

    def _usable(self, prediction: Prediction) -> Mapping[str, float] | Verdict:
        """The prediction's scores when they have 2 classes or more, else the verdict."""
        scores = prediction.scores
        if scores is None:
            return Verdict(
                self.params.when_missing == "review",
                f"class scores are missing (label {prediction.label})",
            )
        if scores.__class__ is not dict and not isinstance(scores, Mapping):
            return Verdict(True, f"class scores are {show_value(scores)}, not a mapping")
        if len(scores) < 2:
            classes = ", ".join(str(name) for name in scores) or "none"
            return Verdict(
                self.params.when_missing == "review",
                f"{self.measure} needs at least 2 class scores, got {len(scores)} ({classes})",
            )
        return scores


class MarginPolicy(_ScoresPolicy[MarginParams]):
    """Review when the top class score leads the second by less than ``min_margin``."""

    params_model = MarginParams
    measure = "margin"
    summary = "review when top-1 minus top-2 class score is below min_margin"

    def __init__(self, name: str, params: MarginParams) -> None:
        super().__init__(name, params)
        self._min_margin = params.min_margin
        self._min_margin_text = repr(params.min_margin)
        self._display = NumberDisplay(params.min_margin)

    def check(self, prediction: Prediction) -> Verdict:
        scores = self._usable(prediction)
        if isinstance(scores, Verdict):
            return scores
        first = second = -1.0
        first_name: Any = None
        second_name: Any = None
        for name, value in scores.items():
            score = value if value.__class__ is float else as_float(value)
            if not 0.0 <= score <= 1.0:
                return Verdict(True, _bad_score(name, value, "[0, 1]"))
            if score > first:
                second, second_name = first, first_name
                first, first_name = score, name
            elif score > second:
                second, second_name = score, name
        if first == 0.0:
            return Verdict(True, f"all {len(scores)} class scores are 0")
        margin = first - second
        shown = self._display.show(margin)
        bound = self._min_margin_text
        if margin < self._min_margin:
            reason = f"margin {shown} < {bound} between {first_name} and {second_name}"
            return new_tuple(Verdict, (True, reason))
        reason = f"margin {shown} >= {bound} between {first_name} and {second_name}"
        return new_tuple(Verdict, (False, reason))


class EntropyPolicy(_ScoresPolicy[EntropyParams]):
    """Review when the normalized entropy of the class scores exceeds ``max_entropy``."""

    params_model = EntropyParams
    measure = "entropy"
    summary = "review when the normalized entropy of the class scores is above max_entropy"

    def __init__(self, name: str, params: EntropyParams) -> None:
        super().__init__(name, params)
        self._max_entropy = params.max_entropy
        self._max_entropy_text = repr(params.max_entropy)
        self._display = NumberDisplay(params.max_entropy)

    def check(self, prediction: Prediction) -> Verdict:
        scores = self._usable(prediction)
        if isinstance(scores, Verdict):
            return scores
        total = 0.0
        for name, value in scores.items():
            score = value if value.__class__ is float else as_float(value)
            if not 0.0 <= score < inf:
                return Verdict(True, _bad_score(name, value, "[0, inf)"))
            total += score
        count = len(scores)
        if not 0.0 < total < inf:
            if total == 0.0:
                return Verdict(True, f"all {count} class scores are 0")
            return Verdict(True, f"class scores sum beyond the float range ({count} classes)")
        entropy = 0.0
        for value in scores.values():
            share = value / total  # validated above: a float or an int in float range
            if share > 0.0:  # 0 ln 0 = 0; a tiny score's share can also underflow to 0
                entropy -= share * log(share)
        # Rounding can put a uniform distribution a hair above 1 (or a certain one below 0).
        normalized = min(max(entropy / log(count), 0.0), 1.0)
        shown = self._display.show(normalized)
        bound = self._max_entropy_text
        if normalized > self._max_entropy:
            reason = f"normalized entropy {shown} > {bound} over {count} classes"
            return new_tuple(Verdict, (True, reason))
        reason = f"normalized entropy {shown} <= {bound} over {count} classes"
        return new_tuple(Verdict, (False, reason))
