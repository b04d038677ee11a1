"""Routes: first-match evaluation of the configured policies into one decision per prediction.

Each route has a policy and a review flow (for A2I, a flow definition). Routes are tried in
order; the first whose policy says review takes the prediction. A prediction no route claims is
accepted. A route in shadow mode is evaluated and counted but never claims anything, and so is
any policy marked ``shadow`` inside a route.

Every :class:`Decision` carries the route, the policy, the policy version, a readable reason and
the prediction's review probability (``policies/propensity.py``): 1 on a route that reviews it
whatever the draw, the audit share when a ``sample`` policy decided, 0 when nothing could have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from stream_router.models import Prediction, new_tuple
from stream_router.policies.base import Policy
from stream_router.policies.propensity import NEVER, Propensity, ReviewChances, certain
from stream_router.policies.registry import PolicyRegistry
from stream_router.policies.shadow import ShadowPolicy
from stream_router.settings import PoliciesSettings

ACCEPT_POLICY = "default"


class Decision(NamedTuple):
    """What happens to one prediction."""

    review: bool
    route: str | None
    review_flow: str | None
    policy: str
    reason: str
    #: How likely the routes were to review it (None only where built by hand, e.g. in tests).
    propensity: Propensity | None = None


@dataclass(frozen=True)
class Route:
    name: str
    review_flow: str
    policy: Policy[Any]
    shadow: bool


class Routes:
    """The configured routes, built and validated at start-up (before any event is read)."""

    def __init__(self, settings: PoliciesSettings, registry: PolicyRegistry | None = None) -> None:
        registry = registry or PolicyRegistry()
        self.version = settings.version
        self.routes = tuple(
            Route(
                name=route.name,
                review_flow=route.review_flow,
                policy=registry.build(route.policy, f"policies.routes.{index}.policy"),
                shadow=route.shadow,
            )
            for index, route in enumerate(settings.routes)
        )
        self._shadows = [
            (route.name, shadow) for route in self.routes for shadow in _shadows(route.policy)
        ]
        live = [route for route in self.routes if not route.shadow]
        self.chances = ReviewChances([(route.name, route.policy) for route in live])
        #: Position in :attr:`routes` of the first route whose verdict depends on the draw.
        self._first_random = (
            self.routes.index(live[self.chances.first_random])
            if self.chances.random
            else len(self.routes)
        )
        self._certain = {route.name: certain(route.name) for route in live}
        self.shadow_route_hits: Counter[tuple[str, ...]] = Counter()

    def start(self) -> None:
        for route in self.routes:
            route.policy.start()

    def close(self) -> None:
        for route in self.routes:
            route.policy.close()

    def decide(self, batch: Sequence[Prediction]) -> list[Decision]:
        """One decision per prediction, in order."""
        size = len(batch)
        decisions: list[Decision | None] = [None] * size
        reasons: list[str] = [""] * size  # accept reasons gathered along the routes
        pending: Sequence[int] = range(size)
        undecided: Sequence[int] = ()  # unclaimed when the first random route is reached
        # From the first random route on, one propensity for all when it reads no event field.
        late = self.chances.same_for(batch) if size else None
        accepted = late if self.chances.random else NEVER
        for position, route in enumerate(self.routes):
            if not pending:
                break
            if position == self._first_random and late is None:
                undecided = pending
            chance = self._certain.get(route.name) if position < self._first_random else late
            subset = batch if len(pending) == size else [batch[i] for i in pending]
            verdicts = route.policy.evaluate(subset)
            name, flow, policy, shadow = (
                route.name,
                route.review_flow,
                route.policy.name,
                route.shadow,
            )
            still: list[int] = []
            for index, (review, why) in zip(pending, verdicts, strict=True):
                if review:
                    if not shadow:
                        claim = (True, name, flow, policy, why, chance)
                        decisions[index] = new_tuple(Decision, claim)
                        continue
                    self.shadow_route_hits[(name, policy)] += 1
                    why = f"shadow route {name} would review: {why}"  # noqa: PLW2901
                previous = reasons[index]
                reasons[index] = f"{previous}; {why}" if previous else why
                still.append(index)
            pending = still
        for index in pending:
            reason = reasons[index] or "no review route configured"
            decisions[index] = new_tuple(
                Decision, (False, None, None, ACCEPT_POLICY, reason, accepted)
            )
        if undecided:
            chances = self.chances.undecided([batch[i] for i in undecided])
            for index, propensity in zip(undecided, chances, strict=True):
                decisions[index] = decisions[index]._replace(propensity=propensity)  # type: ignore[union-attr]
        return decisions  # type: ignore[return-value]  # every slot is filled above

    def shadow_keys(self) -> list[tuple[str, str]]:
        """Every shadow route and shadow policy, as the (route, policy) keys of its hits."""
        keys = [(route.name, route.policy.name) for route in self.routes if route.shadow]
        keys += [(route_name, shadow.name) for route_name, shadow in self._shadows]
        return keys

    def drain_shadow_hits(self) -> Counter[tuple[str, ...]]:
        """Shadow hits since the last call, as {(route, policy): count}; resets them."""
        hits = self.shadow_route_hits
        self.shadow_route_hits = Counter()
        for route_name, shadow in self._shadows:
            for policy_name, count in shadow.hits.items():
                hits[(route_name, policy_name)] += count
            shadow.hits.clear()
        return hits


def _shadows(policy: Policy[Any]) -> list[ShadowPolicy]:
    found = [policy] if isinstance(policy, ShadowPolicy) else []
    for child in policy.children():
        found.extend(_shadows(child))
    return found
