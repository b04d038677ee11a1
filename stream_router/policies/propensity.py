"""Review probabilities: how likely the configured routes were to send each prediction to review.

The backtest (``stream-router policies backtest``) and the review role's audit monitor need,
for every decision, the probability the prediction had of being reviewed: labels come only from
reviewed predictions, and correcting that selection needs each one's chance of selection. The
only randomness in a decision is the ``sample`` policies' draw: a sample policy reviews when its
keyed hash of the event id, read as a number ``u`` uniform on [0, 1), is below its fraction.
Everything else about a prediction (its confidence, its fields) is fixed. So the probability is
exact: the share of draws ``u`` under which the routes (first match, composites and all) review.

Sample policies with the same salt read the same ``u`` (a 2 % and a 5 % sample with one salt
are nested, not independent); different salts draw independently. Each salt's fractions cut
[0, 1) into cells on which every policy of that salt answers alike, and a *world* is one cell
per salt, with the product of the cells' widths as its probability. :class:`ReviewChances`
evaluates the routes in every world and adds up the worlds that review, per route (the route
that claims the prediction in that world) and in total. A configuration whose salts make more
than :data:`MAX_WORLDS` worlds is refused at start-up.

Cost on the hot path: nothing unless a non-shadow route holds a sample policy. Then only the
predictions still unclaimed when the first such route is reached are evaluated again, and only
against the routes from there on (a sample policy's verdict in a world is a constant; the
deterministic policies after it are evaluated once over those predictions, not once per world).
With the usual audit route last (routes from there on made of sample policies only), one
evaluation per batch serves every prediction.

Policies are walked by type: ``sample``, ``all``, ``any``, ``not`` and shadow policies are
understood; any other policy must not contain a sample policy (refused at start-up, naming it),
and is evaluated as it is (its verdict does not depend on the draw).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stream_router.errors import PolicyLoadError
from stream_router.models import Prediction
from stream_router.policies.base import Policy
from stream_router.policies.composite import AllPolicy, AnyPolicy, NotPolicy
from stream_router.policies.sampling import BUCKETS, SamplePolicy
from stream_router.policies.shadow import ShadowPolicy

#: Most worlds a configuration may make (the product over salts of distinct fractions + 1).
MAX_WORLDS: Final = 1024


class Propensity:
    """A decision's review probability: ``total`` = P(some route reviews it), ``routes`` =
    P(each route is the one that does), only routes with a chance above 0. ``wire`` is the
    envelope's ``review_probability`` object (built once; instances are shared, never mutated).
    """

    __slots__ = ("routes", "total", "wire")

    def __init__(self, total: float, routes: Mapping[str, float]) -> None:
        self.total = total
        self.routes = routes
        self.wire: Mapping[str, Any] = {"total": total, "routes": routes}

    def __repr__(self) -> str:
        return f"Propensity({self.total!r}, {dict(self.routes)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Propensity):
            return NotImplemented
        return self.total == other.total and dict(self.routes) == dict(other.routes)

    def __hash__(self) -> int:
        return hash((self.total, tuple(sorted(self.routes.items()))))


#: An accepted prediction no route could have sent to review.
NEVER: Final = Propensity(0.0, {})


def certain(route: str) -> Propensity:
    """The propensity of a prediction a route reviews whatever the draw."""
    return Propensity(1.0, {route: 1.0})


@dataclass(frozen=True)
class _World:
    """One cell per salt: the integer bucket it starts at (every policy of the salt answers
    alike inside the cell), and the cell's probability."""

    buckets: Mapping[bytes, int]
    probability: float


@dataclass(frozen=True)
class _Route:
    name: str
    policy: Policy[Any]
    random: bool  #: holds a sample policy: its verdict depends on the draw


class ReviewChances:
    """The review probability of each prediction under a configuration's routes.

    ``routes``: (name, policy) of the non-shadow routes, in order. :attr:`random` is False when
    no route holds a sample policy; then every decision is certain and nothing here runs.
    """

    def __init__(self, routes: Sequence[tuple[str, Policy[Any]]]) -> None:
        samples: dict[bytes, set[int]] = {}
        walked = []
        for name, policy in routes:
            found = _samples(policy, f"route {name!r}")
            for sample in found:
                samples.setdefault(sample.salt_key, set()).add(sample.threshold)
            walked.append(_Route(name, policy, bool(found)))
        self._routes = tuple(walked)
        self.random = any(route.random for route in walked)
        self.first_random = next((i for i, r in enumerate(walked) if r.random), len(walked))
        self._worlds = _worlds(samples)
        self._cache: dict[tuple[tuple[str, float], ...], Propensity] = {}
        #: The routes from the first random one on read nothing of the event (samples only,
        #: e.g. the usual audit route last): every undecided prediction has one propensity.
        self._same_for_all = all(_event_free(r.policy) for r in walked[self.first_random :])

    @property
    def worlds(self) -> int:
        return len(self._worlds)

    def same_for(self, batch: Sequence[Prediction]) -> Propensity | None:
        """The one propensity of every prediction that reaches the first random route, when
        the routes from there on read nothing of the event; else None (ask :meth:`undecided`)."""
        if not self.random or not self._same_for_all:
            return None
        return self.undecided(batch[:1])[0]

    def undecided(self, batch: Sequence[Prediction]) -> list[Propensity]:
        """The propensities of predictions that reached the first random route unclaimed (the
        routes before it are deterministic and said no): evaluated from that route on."""
        if not batch:
            return []
        if self._same_for_all and len(batch) > 1:
            return self.undecided(batch[:1]) * len(batch)
        size = len(batch)
        totals = [0.0] * size
        per_route: list[dict[str, float]] = [{} for _ in range(size)]
        fixed = _Fixed()
        for world in self._worlds:
            pending: list[int] = list(range(size))
            for route in self._routes[self.first_random :]:
                if not pending:
                    break
                subset = [batch[i] for i in pending]
                if route.random:
                    verdicts = _verdicts(route.policy, subset, world, fixed, pending)
                else:
                    verdicts = fixed.verdicts(route.policy, subset, pending)
                still = []
                for index, review in zip(pending, verdicts, strict=True):
                    if review:
                        totals[index] += world.probability
                        chances = per_route[index]
                        chances[route.name] = chances.get(route.name, 0.0) + world.probability
                    else:
                        still.append(index)
                pending = still
        return [
            self._shared(total, chances) for total, chances in zip(totals, per_route, strict=True)
        ]

    def _shared(self, total: float, chances: dict[str, float]) -> Propensity:
        key = tuple(sorted((name, _clean(p)) for name, p in chances.items()))
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 4096:  # bounded: a pathological configuration cannot grow it
                self._cache.clear()
            found = self._cache[key] = Propensity(_clean(total), dict(key))
        return found


def _clean(p: float) -> float:
    """A probability rounded to 15 significant digits (sums of cell widths drift by an ulp),
    clamped to [0, 1]."""
    return min(1.0, max(0.0, float(f"{p:.15g}")))


def _samples(policy: Policy[Any], where: str) -> list[SamplePolicy]:
    """The sample policies whose verdicts reach ``policy``'s (not those under a shadow)."""
    if isinstance(policy, SamplePolicy):
        return [policy]
    if isinstance(policy, ShadowPolicy):
        return []
    found = [s for child in policy.children() for s in _samples(child, where)]
    if found and not isinstance(policy, AllPolicy | AnyPolicy | NotPolicy):
        raise PolicyLoadError(
            f"{where}: policy {policy.name!r} ({type(policy).__name__}) holds a sample policy, "
            "and the router cannot compute review probabilities through a composite it does "
            "not know; use all/any/not around sample policies"
        )
    return found


def _event_free(policy: Policy[Any]) -> bool:
    """Whether ``policy``'s verdict depends on the draw only, never on the event."""
    if isinstance(policy, SamplePolicy):
        return True
    if isinstance(policy, AllPolicy | AnyPolicy | NotPolicy):
        return all(_event_free(child) for child in policy.children())
    return False


def _worlds(samples: Mapping[bytes, set[int]]) -> list[_World]:
    cells_per_salt = []
    for salt, thresholds in samples.items():
        edges = sorted({0, *thresholds, BUCKETS})
        cells = [(salt, low, (high - low) / BUCKETS) for low, high in itertools.pairwise(edges)]
        cells_per_salt.append([c for c in cells if c[2] > 0])
    count = 1
    for cells in cells_per_salt:
        count *= len(cells)
    if count > MAX_WORLDS:
        raise PolicyLoadError(
            f"the routes' sample policies make {count} combinations of draws (salts times "
            f"distinct percents); at most {MAX_WORLDS}: use fewer salts or percents"
        )
    worlds = []
    for combo in itertools.product(*cells_per_salt):
        probability = 1.0
        for _, _, width in combo:
            probability *= width
        worlds.append(_World({salt: low for salt, low, _ in combo}, probability))
    return worlds


class _Fixed:
    """Verdicts of the batch's deterministic policies, each computed once per event (by id of
    the policy and index in the batch) however many worlds ask."""

    def __init__(self) -> None:
        self._known: dict[int, dict[int, bool]] = {}

    def verdicts(
        self, policy: Policy[Any], subset: Sequence[Prediction], indices: Sequence[int]
    ) -> list[bool]:
        known = self._known.setdefault(id(policy), {})
        missing = [(i, p) for i, p in zip(indices, subset, strict=True) if i not in known]
        if missing:
            computed = _plain(policy, [p for _, p in missing])
            known.update(zip((i for i, _ in missing), computed, strict=True))
        return [known[i] for i in indices]


def _plain(policy: Policy[Any], subset: Sequence[Prediction]) -> list[bool]:
    """Verdicts of a policy that does not depend on the draw; shadow policies never review
    (and are not evaluated again, so their hit counts stay those of the real decision)."""
    if isinstance(policy, ShadowPolicy):
        return [False] * len(subset)
    if isinstance(policy, AllPolicy | AnyPolicy | NotPolicy):
        return _combine(policy, [_plain(child, subset) for child in policy.children()])
    return [verdict.review for verdict in policy.evaluate(subset)]


def _verdicts(
    policy: Policy[Any],
    subset: Sequence[Prediction],
    world: _World,
    fixed: _Fixed,
    indices: Sequence[int],
) -> list[bool]:
    """``policy``'s verdicts for ``subset`` in ``world``."""
    if isinstance(policy, SamplePolicy):
        return [world.buckets[policy.salt_key] < policy.threshold] * len(subset)
    if isinstance(policy, AllPolicy | AnyPolicy | NotPolicy) and _samples(policy, ""):
        columns = [_verdicts(c, subset, world, fixed, indices) for c in policy.children()]
        return _combine(policy, columns)
    return fixed.verdicts(policy, subset, indices)


def _combine(policy: Policy[Any], columns: list[list[bool]]) -> list[bool]:
    if isinstance(policy, NotPolicy):
        return [not review for review in columns[0]]
    if isinstance(policy, AllPolicy):
        return [all(row) for row in zip(*columns, strict=True)]
    return [any(row) for row in zip(*columns, strict=True)]
