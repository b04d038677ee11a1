"""Synthetic router histories with a known truth, for checking certified thresholds.

The model is over-confident: confidences ~ Beta(shape, 1) (mostly near 1) and
P(wrong | s) = min(1, slope * (1 - s)), the slope differing by label. The router reviews every
prediction below the current threshold t0 (propensity 1; a share of those reviews expires
without an answer) and audits a random share of the rest; when several audit rates are given,
the history is cut into equal periods, one rate each (a rate changed in the middle).

The true selective error R(t) = P(wrong | s >= t) is computed exactly, so a recommended
threshold can be judged against the truth of the traffic it will face, not of the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from stream_router.thresholds import LabelHistory, certify_labels, plug_in_threshold, scan
from stream_router.thresholds.certify import DEFAULT_START_FRACTION


@dataclass(frozen=True)
class Scenario:
    name: str
    slopes: tuple[float, ...]
    events_per_label: int
    current_threshold: float
    audit_rates: tuple[float, ...]
    expired_share: float = 0.0
    shape: float = 30.0


def true_error(thresholds: NDArray[np.float64], slope: float, shape: float) -> NDArray[np.float64]:
    """Exact R(t) = E[min(1, slope (1 - s)) | s >= t] for s ~ Beta(shape, 1)."""
    t = np.asarray(thresholds, dtype=np.float64)
    kink = max(0.0, 1.0 - 1.0 / slope)  # below it every prediction is wrong
    u = np.maximum(t, kink)
    certain = np.maximum(u**shape - t**shape, 0.0)
    linear = slope * ((1.0 - u**shape) - shape / (shape + 1.0) * (1.0 - u ** (shape + 1.0)))
    return np.asarray((certain + linear) / (1.0 - t**shape), dtype=np.float64)


def true_accept_rate(thresholds: NDArray[np.float64], shape: float) -> NDArray[np.float64]:
    return np.asarray(1.0 - np.asarray(thresholds) ** shape, dtype=np.float64)


def draw_history(
    rng: np.random.Generator, scenario: Scenario, slope: float
) -> tuple[LabelHistory, NDArray[np.bool_]]:
    """One label's history, and the truth of every event (wrong or not) for checks."""
    n = scenario.events_per_label
    scores = rng.random(n) ** (1.0 / scenario.shape)
    wrong = rng.random(n) < np.minimum(1.0, slope * (1.0 - scores))
    period = np.arange(n) * len(scenario.audit_rates) // n
    audit = np.asarray(scenario.audit_rates)[period]
    below = scores < scenario.current_threshold
    propensity = np.where(below, 1.0, audit)
    requested = below | (rng.random(n) < audit)
    labelled = requested & (rng.random(n) >= scenario.expired_share)
    history = LabelHistory(scores, labelled, wrong & labelled, propensity, requested)
    return history, wrong


@dataclass
class Outcomes:
    """Per label (rows) and draw (columns): the chosen grid index, -1 for none."""

    certified: NDArray[np.int64]
    naive: NDArray[np.int64]
    shrunk: NDArray[np.int64]
    grid: NDArray[np.float64]
    scenario: Scenario
    alpha: float
    delta: float
    simultaneous: bool
    truth: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        self.truth = np.array([true_error(self.grid, c, self.scenario.shape) for c in self.slopes])

    @property
    def slopes(self) -> tuple[float, ...]:
        return self.scenario.slopes

    @property
    def draws(self) -> int:
        return int(self.certified.shape[1])

    def _errors(self, chosen: NDArray[np.int64]) -> NDArray[np.float64]:
        rows = np.arange(len(self.slopes))[:, None]
        return np.where(chosen >= 0, self.truth[rows, np.maximum(chosen, 0)], 0.0)

    def _accepts(self, chosen: NDArray[np.int64]) -> NDArray[np.float64]:
        rates = true_accept_rate(self.grid, self.scenario.shape)
        return np.where(chosen >= 0, rates[np.maximum(chosen, 0)], 0.0)

    def violation_rate(self) -> NDArray[np.float64]:
        """Per label: share of draws whose certified threshold's true error exceeds alpha."""
        return np.asarray((self._errors(self.certified) > self.alpha).mean(axis=1))

    def any_violation_rate(self) -> float:
        """Share of draws in which some label's certified threshold exceeds alpha."""
        return float((self._errors(self.certified) > self.alpha).any(axis=0).mean())

    def naive_violation_rate(self) -> NDArray[np.float64]:
        return np.asarray((self._errors(self.naive) > self.alpha).mean(axis=1))

    def shrunk_violation_rate(self) -> NDArray[np.float64]:
        """The same scan over bounds made anti-conservative (``shrink`` x the real ones)."""
        return np.asarray((self._errors(self.shrunk) > self.alpha).mean(axis=1))

    def accept_rate(self) -> NDArray[np.float64]:
        return np.asarray(self._accepts(self.certified).mean(axis=1))

    def naive_accept_rate(self) -> NDArray[np.float64]:
        return np.asarray(self._accepts(self.naive).mean(axis=1))

    def oracle_accept_rate(self) -> NDArray[np.float64]:
        rates = true_accept_rate(self.grid, self.scenario.shape)
        out = []
        for row in self.truth:
            ok = np.flatnonzero(row <= self.alpha)
            out.append(rates[ok[0]] if ok.size else 0.0)
        return np.array(out)

    def report(self) -> str:
        lines = [
            f"{self.scenario.name}: {self.draws} draws, {self.scenario.events_per_label} events "
            f"per label, t0 {self.scenario.current_threshold}, audit {self.scenario.audit_rates}, "
            f"alpha {self.alpha}, delta {self.delta}"
            + (" (simultaneous)" if self.simultaneous else " (per label)"),
            f"  {'slope':>5} {'viol':>6} {'accept':>7} {'naive viol':>10} {'naive acc':>9} "
            f"{'oracle':>7} {'shrunk viol':>11}",
        ]
        columns = zip(
            self.slopes,
            self.violation_rate(),
            self.accept_rate(),
            self.naive_violation_rate(),
            self.naive_accept_rate(),
            self.oracle_accept_rate(),
            self.shrunk_violation_rate(),
            strict=True,
        )
        for slope, viol, acc, nviol, nacc, oracle, sviol in columns:
            lines.append(
                f"  {slope:>5.2f} {viol:>6.1%} {acc:>7.1%} {nviol:>10.1%} {nacc:>9.1%} "
                f"{oracle:>7.1%} {sviol:>11.1%}"
            )
        if self.simultaneous:
            lines.append(f"  any label violated: {self.any_violation_rate():.1%}")
        return "\n".join(lines)


def simulate(
    scenario: Scenario,
    grid: NDArray[np.float64],
    *,
    draws: int,
    alpha: float,
    delta: float,
    seed: int,
    simultaneous: bool = False,
    start_fraction: float = DEFAULT_START_FRACTION,
    shrink: float = 0.6,
) -> Outcomes:
    """Certify every label of ``draws`` independent histories; record the choices."""
    rng = np.random.default_rng(seed)
    labels = len(scenario.slopes)
    certified = np.full((labels, draws), -1, dtype=np.int64)
    naive = np.full((labels, draws), -1, dtype=np.int64)
    shrunk = np.full((labels, draws), -1, dtype=np.int64)
    names = [f"label{i}" for i in range(labels)]
    for draw in range(draws):
        histories = {
            name: draw_history(rng, scenario, slope)[0]
            for name, slope in zip(names, scenario.slopes, strict=True)
        }
        results = certify_labels(
            histories,
            grid,
            alpha=alpha,
            delta=delta,
            simultaneous=simultaneous,
            start_fraction=start_fraction,
        )
        for row, name in enumerate(names):
            result = results[name]
            certified[row, draw] = -1 if result.index is None else result.index
            choice = plug_in_threshold(result.table, alpha)
            naive[row, draw] = -1 if choice is None else choice
            table = result.table
            weakened = replace(table, error_bound=table.error_bound * shrink)
            broken = scan(weakened, alpha, start_fraction=start_fraction).index
            shrunk[row, draw] = -1 if broken is None else broken
    return Outcomes(certified, naive, shrunk, grid, scenario, alpha, delta, simultaneous)


__all__ = ["Outcomes", "Scenario", "draw_history", "simulate", "true_error"]
