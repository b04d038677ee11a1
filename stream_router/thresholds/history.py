"""The input of certification: one predicted label's decision history, and threshold grids.

A :class:`LabelHistory` holds one array per field, one entry per decision record of that
predicted label. The grids are built from label-free information only (scores or a range),
so they can be fixed before a single answer is looked at, as fixed-sequence testing requires.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DEFAULT_POINTS", "LabelHistory", "quantile_grid", "uniform_grid"]

#: Grid size used unless told otherwise.
DEFAULT_POINTS: int = 200


@dataclass(frozen=True, eq=False)
class LabelHistory:
    """Decision records of one predicted label, as parallel arrays.

    - ``scores``: the model's confidence of every event (auto-accepted or not).
    - ``labelled``: the event has a reviewer's answer.
    - ``wrong``: the answer differs from the model's label (read only where ``labelled``).
    - ``propensity``: the ``review_probability`` logged at decision time: 1 when a route
      reviews the event whatever the draw, the audit share for sampled events, 0 when nothing
      could have sent it to review.
    - ``requested`` (optional): the event was sent to review. With it, audit-sampled events that
      were sent but never answered are known and counted as possible errors; without it only
      the unanswered ``propensity == 1`` events are (an audit event's missing answer cannot be
      told from an event the draw did not pick, so audit answers are then assumed to go missing
      independently of whether the model was wrong).

    Arrays are converted (bool / float64) and checked on construction; ``ValueError`` names the
    offending field.
    """

    scores: NDArray[np.float64]
    labelled: NDArray[np.bool_]
    wrong: NDArray[np.bool_]
    propensity: NDArray[np.float64]
    requested: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64)
        n = scores.shape
        if scores.ndim != 1:
            raise ValueError(f"scores must be one-dimensional, got shape {n}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores must be finite numbers")
        propensity = np.asarray(self.propensity, dtype=np.float64)
        if propensity.shape != n:
            raise ValueError(f"propensity has shape {propensity.shape}, scores {n}")
        if not np.all((propensity >= 0.0) & (propensity <= 1.0)):
            bad = propensity[~((propensity >= 0.0) & (propensity <= 1.0))][0]
            raise ValueError(f"propensity must lie in [0, 1], got {bad}")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "propensity", propensity)
        for name in ("labelled", "wrong", "requested"):
            value = getattr(self, name)
            if value is None:
                continue
            array = np.asarray(value)
            if array.shape != n:
                raise ValueError(f"{name} has shape {array.shape}, scores {n}")
            if array.dtype != np.bool_:
                if not np.all((array == 0) | (array == 1)):
                    raise ValueError(f"{name} must be booleans (or 0/1)")
                array = array.astype(np.bool_)
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def unanswered(self) -> NDArray[np.bool_]:
        """Events sent to review that have no answer (expired, failed, still open).

        A ``propensity == 1`` event was sent whatever ``requested`` says.
        """
        requested = self.propensity >= 1.0
        if self.requested is not None:
            requested = requested | self.requested
        return np.asarray(requested & ~self.labelled & (self.propensity > 0.0), dtype=np.bool_)


def uniform_grid(low: float, high: float, points: int = DEFAULT_POINTS) -> NDArray[np.float64]:
    """``points`` evenly spaced thresholds from ``low`` to ``high`` (both included)."""
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got {low}, {high}")
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    return np.linspace(low, high, points, dtype=np.float64)


def quantile_grid(
    scores: ArrayLike, points: int = DEFAULT_POINTS, min_accept_rate: float = 0.01
) -> NDArray[np.float64]:
    """Thresholds at score quantiles, evenly spaced in auto-accept rate.

    The accept rates run from 1.0 (the lowest score) down to ``min_accept_rate``; ties in the
    scores are merged, so fewer than ``points`` thresholds may come back. Uses the scores only
    (never answers), so it is fixed before labels are looked at.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("scores must be a non-empty one-dimensional array of finite numbers")
    if not 0.0 < min_accept_rate < 1.0:
        raise ValueError(f"min_accept_rate must lie in (0, 1), got {min_accept_rate}")
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    accept_rates = np.linspace(1.0, min_accept_rate, points)
    grid = np.quantile(values, 1.0 - accept_rates, method="inverted_cdf")
    return np.asarray(np.unique(grid), dtype=np.float64)
