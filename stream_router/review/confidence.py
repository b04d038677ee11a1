"""An anytime-valid confidence sequence for an error rate: Robbins' beta-binomial mixture.

The audit monitor (``review/audit.py``) watches the error rate ``p`` of audited predictions
while their labels arrive, one review at a time, and alarms when the rate is above a target.
A fixed-n interval (Clopper-Pearson, Wilson) is wrong for that: its ``1 - delta`` holds at one
sample size chosen in advance, and checked again after every label it is crossed by chance
sooner or later (the law of the iterated logarithm); ``tests/unit/review/test_confidence.py``
shows it alarming far more often than ``delta`` on a stream exactly at the target. A
*confidence sequence* holds at every sample size at once: its bounds may be read after every
label, forever, and an alarm raised at any moment is false with probability at most ``delta``.

**The mixture.** With a prior Beta(a, b) on ``p`` and ``k`` errors among ``n`` labels::

    M_n(q) = B(a + k, b + n - k) / B(a, b)  /  (q^k (1 - q)^(n - k))

is the probability of the labels seen under the prior (averaged over ``p``) against their
probability under the rate ``q``. If each label is an error with probability ``q`` given those
before it, ``M_n(q)`` is a nonnegative martingale starting at 1, so by Ville's inequality
``P(M_n(q) >= 1/delta for some n) <= delta``. The set ``C_n = {q : M_n(q) < 1/delta}`` thus holds
the true rate at every ``n`` simultaneously with probability at least ``1 - delta`` (Robbins,
1970; Howard, Ramdas, McAuliffe and Sekhon, *Time-uniform, nonparametric, nonasymptotic
confidence sequences*, Ann. Statist. 2021). Any fixed prior gives that guarantee; the prior only
decides where the sequence is tightest (:meth:`BetaPrior.for_target`).

**Several streams.** The review role counts per review-requests partition (each partition's
ledger owns its counts, so they survive restarts and rebalances exactly once). Labels of all
partitions interleave in one order; each arrives in one partition, and only that partition's
factor moves, by a ratio whose expectation is 1 under ``q``. So the product of the partitions'
``M^i(q)`` is again a nonnegative martingale starting at 1, and Ville's inequality holds for
it: the sequence of the whole stream is ``{q : sum_i ln M^i(q) < ln(1/delta)}``. Its logarithm
adds up over partitions, and so over review instances: Prometheus sums each instance's
``ln M(target)`` (:attr:`Estimate.log_evidence`) to alarm on every partition's labels at once.
The streams must share one rate: a review's partition is a hash of its name, so each partition
holds a random share of the audits of a route and label. (A mixture of labels that differs by
partition, such as ``(other)``, does not; the alert leaves it out.)

**Computing it.** ``ln M(q) = S - K ln q - (N - K) ln(1 - q)`` with ``S`` the sum over streams
of ``ln B(a + k_i, b + n_i - k_i) - ln B(a, b)`` (``math.lgamma``) and ``K``, ``N`` the pooled
counts. It is convex in ``q`` with its minimum at ``K / N``, so ``C_n`` is an interval: each
bound is found by bisection on its side of ``K / N`` (:data:`BISECTIONS` halvings), and the
bracket end *outside* the set is returned, so rounding never narrows the interval. Hence:
``lower > target`` exactly when ``ln M(target) >= ln(1/delta)`` and ``K / N > target``
(up to the bisection's precision), which is how the alert reads it. Each update costs a few
``lgamma`` calls; pure Python (the runtime image has no numpy or scipy).

The guarantee assumes what a random audit gives: each audited prediction is an error with the
same probability given the reviews before it (a stationary rate, labels not ordered by their
outcome). A rate that changes is tracked as the average of the rates so far: a long good period
delays the detection of a later rise (``tests/bench/bench_audit_monitor.py`` measures it), which
is why the monitor starts afresh with each ``policies.version``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: Halvings of each bisection: the bracket ends closer than 2**-60 of the side's width.
BISECTIONS = 60


@dataclass(frozen=True)
class BetaPrior:
    """The mixture's prior Beta(a, b) on the error rate."""

    a: float
    b: float

    def __post_init__(self) -> None:
        if not (self.a > 0 and self.b > 0 and math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"Beta prior parameters must be positive, got ({self.a}, {self.b})")

    @classmethod
    def for_target(cls, target: float) -> BetaPrior:
        """Beta(2, 1/target - 2): mean twice the target, where a detection matters.

        Measured against the uniform prior, Jeffreys' and priors of mean ``target`` or
        ``3 target`` (``tests/bench/bench_audit_monitor.py``), it detects a doubling of the
        error soonest, on one partition or several. ``target`` must be in (0, 0.5).
        """
        if not 0.0 < target < 0.5:
            raise ValueError(f"target error must be in (0, 0.5), got {target}")
        return cls(2.0, 1.0 / target - 2.0)

    def log_mixture(self, n: int, k: int) -> float:
        """ln of the prior-averaged probability of one sequence with ``k`` errors in ``n``."""
        if not 0 <= k <= n:
            raise ValueError(f"errors must be in [0, n], got k={k}, n={n}")
        a, b = self.a, self.b
        return _log_beta(a + k, b + n - k) - _log_beta(a, b)


@dataclass(frozen=True)
class Estimate:
    """The confidence sequence of one stream of labels (pooled over partitions) at one time."""

    n: int  #: labels (audited reviews)
    k: int  #: errors among them
    lower: float  #: lower bound on the error rate (0 without errors)
    upper: float  #: upper bound on the error rate (1 without labels)
    log_evidence: float  #: ln M(target): ln of the e-value against the target rate


def estimate(
    counts: Iterable[tuple[int, int]], prior: BetaPrior, delta: float, target: float
) -> Estimate:
    """The confidence sequence at level ``delta`` of streams with these (n, k) counts.

    ``P(some n has the true rate outside [lower, upper]) <= delta``; ``log_evidence`` is
    ``ln M(target)`` over all the streams given (additive over disjoint sets of streams).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    mixture, n, k = 0.0, 0, 0
    for stream_n, stream_k in counts:
        mixture += prior.log_mixture(stream_n, stream_k)
        n += stream_n
        k += stream_k
    threshold = math.log(1.0 / delta)
    evidence = _log_m(mixture, n, k, target)
    if n == 0:
        return Estimate(0, 0, 0.0, 1.0, evidence)
    rate = k / n
    if _log_m(mixture, n, k, rate) >= threshold:
        # The streams disagree so much that no single rate fits them (chance, at most delta,
        # or a rate that moved): the interval shrinks to the pooled rate.
        return Estimate(n, k, rate, rate, evidence)
    lower = 0.0 if k == 0 else _edge(mixture, n, k, threshold, outside=0.0, inside=rate)
    upper = 1.0 if k == n else _edge(mixture, n, k, threshold, outside=1.0, inside=rate)
    return Estimate(n, k, lower, upper, evidence)


def log_threshold(delta: float) -> float:
    """``ln(1/delta)``: the evidence at which a rate leaves the sequence."""
    return math.log(1.0 / delta)


def _log_m(mixture: float, n: int, k: int, q: float) -> float:
    """ln M(q) = mixture - k ln q - (n - k) ln(1 - q), with 0 ln 0 = 0."""
    value = mixture
    if k:
        value -= k * math.log(q) if q > 0.0 else -math.inf
    if n - k:
        value -= (n - k) * math.log1p(-q) if q < 1.0 else -math.inf
    return value


def _edge(
    mixture: float, n: int, k: int, threshold: float, *, outside: float, inside: float
) -> float:
    """The bound between ``outside`` (not in the set) and ``inside`` (in it), by bisection;
    returns the last point known to be outside."""
    for _ in range(BISECTIONS):
        middle = (outside + inside) / 2.0
        if middle in (outside, inside):
            break
        if _log_m(mixture, n, k, middle) >= threshold:
            outside = middle
        else:
            inside = middle
    return outside


def _log_beta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
