"""The review request: what ingest asks the review role to do, parsed once on arrival.

Ingest writes a request (``stream_router.envelope.review_request``) to review-requests, keyed by
its loop name: every envelope field of the event plus ``loop_name``, ``review_flow`` and
``requested_s``. The review role checks it here, once, into a :class:`ReviewRequest`: the
fields it decides by, and the request's JSON as written (``raw``). A record that does not parse
raises :class:`MalformedRequest` naming what is wrong; the review role dead-letters it
(``reason_class`` ``malformed_request``) and moves on.

``raw`` keeps the request as written, so the outcome envelopes carry every field over unchanged
(including ones a newer ingest adds), and the ledger embeds it without encoding it again. Only a
start and an outcome read its fields (:attr:`ReviewRequest.fields` parses ``raw`` each time): a
request waiting to start holds its bytes, a third of what its parsed form takes (623 bytes
against 2.5 KB for bench_review.py's requests, the entry included).

A request nests at most :data:`MAX_DEPTH` objects and arrays deep, as deep as ingest writes
one: the review role wraps it a level deeper (its ledger entry, its dead letter) and orjson
encodes at most 254 levels, so a deeper one, which only something other than ingest can
write, would be recorded and could then neither be written again nor published. It is
dead-lettered as malformed instead.

``review_probability`` (optional: requests from an ingest older than the field lack it) is the
probability that the configured routes would have sent the prediction to review, computed at
decision time (``policies/propensity.py``): 1 for a deterministic review route, the audit share
for a sampled one. It is checked like every other field (a number in [0, 1], per route too, at
most :data:`MAX_PROBABILITY_ROUTES` routes), because a forged one would bias the audit monitor
and the backtest; a request whose value is wrong is malformed.

A request that parses is still only a claim: anything that can write review-requests can name
any route and flow. :class:`ReviewRoutes` is what the configuration reviews: each route that is
not a shadow route, with its ``review_flow``, and its ``review.escalation_flows`` entry for later
attempts. :meth:`ReviewRoutes.check` raises :class:`UnconfiguredRequest` (``reason_class``
``unknown_route`` or ``unknown_flow``) for anything else; the scheduler dead-letters such a
request without starting or billing it, and :meth:`ReviewRoutes.label` keeps route names off
metric labels unless the configuration has them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from stream_router.errors import StreamRouterError
from stream_router.naming import is_valid_loop_name
from stream_router.review.untrusted import finite_number, json_object, object_of
from stream_router.settings import PoliciesSettings, ReviewSettings

#: Fields an outcome envelope carries over from the request (and so must be present).
CARRIED = (
    "schema_version",
    "event_id",
    "event_id_derived",
    "key",
    "key_encoding",
    "source",
    "prediction",
    "event",
    "route",
    "policy",
    "policy_version",
    "reason",
)


class MalformedRequest(StreamRouterError):
    """A review-requests record that is not a review request; the message says why."""


class UnconfiguredRequest(StreamRouterError):
    """A review request naming a route or flow the configuration does not review.

    ``reason_class`` (the dead letter's, and the label of
    ``stream_router_review_requests_refused_total``) says which; the message names the values.
    """

    reason_class: ClassVar[str]


class UnknownRoute(UnconfiguredRequest):
    """The route is not one of ``policies.routes``, or is a shadow route (never reviewed)."""

    reason_class = "unknown_route"


class UnknownFlow(UnconfiguredRequest):
    """The flow is not the route's: its ``review_flow`` (first attempt) or its
    ``review.escalation_flows`` entry (later attempts)."""

    reason_class = "unknown_flow"


#: Routes a request's ``review_probability.routes`` may name (more is not a configuration).
MAX_PROBABILITY_ROUTES = 256

#: Objects and arrays a request may nest (see the module docstring): one level fewer than orjson
#: encodes, as ingest writes them (``envelope.review_request``).
MAX_DEPTH = 253


#: The ``route`` label of a metric about a route the configuration does not have (route names
#: cannot contain parentheses, so it never collides with one).
UNCONFIGURED_ROUTE = "(unconfigured)"


@dataclass(frozen=True)
class ReviewRoutes:
    """The routes the configuration reviews, and their flows (see the module docstring)."""

    flows: Mapping[str, str]  #: route -> its review_flow (shadow routes left out)
    escalations: Mapping[str, str] = field(default_factory=dict)  #: route -> next attempt's
    shadow: frozenset[str] = frozenset()  #: configured, never reviewed

    @classmethod
    def from_settings(cls, policies: PoliciesSettings, review: ReviewSettings) -> ReviewRoutes:
        return cls(
            flows={route.name: route.review_flow for route in policies.routes if not route.shadow},
            escalations=dict(review.escalation_flows),
            shadow=frozenset(route.name for route in policies.routes if route.shadow),
        )

    def check(self, route: str, flow: str, attempt: int = 1) -> None:
        """Raise :class:`UnconfiguredRequest` unless attempt ``attempt`` of a review of
        ``route`` on ``flow`` is one the configuration would start."""
        configured = self.flows.get(route)
        if configured is None:
            if route in self.shadow:
                raise UnknownRoute(f"route {route!r} is a shadow route: it is never reviewed")
            raise UnknownRoute(
                f"route {_shown(route)} is not a review route of the configuration "
                f"(policies.routes: {sorted(self.flows)})"
            )
        if attempt > 1:
            configured = self.escalations.get(route, "")
            if flow != configured:
                where = f"review.escalation_flows.{route}"
                expected = f"{configured!r}" if configured else "no flow (no entry)"
                raise UnknownFlow(
                    f"attempt {attempt} of route {route!r} names flow {_shown(flow)}; "
                    f"{where} is {expected}"
                )
        elif flow != configured:
            raise UnknownFlow(
                f"route {route!r} names flow {_shown(flow)}; its review_flow is {configured!r}"
            )

    def label(self, route: str) -> str:
        """``route`` as a metric label value: a configured route's name, else
        :data:`UNCONFIGURED_ROUTE` (label values never come from a record)."""
        return route if route in self.flows or route in self.shadow else UNCONFIGURED_ROUTE


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """One checked review request; see the module docstring."""

    loop_name: str
    review_flow: str
    route: str
    event_id: str
    policy_version: str
    requested_s: float
    label: str  #: the model's label
    raw: bytes = field(repr=False)  #: the request as written: a JSON object
    #: P(the routes send this prediction to review) at decision time; None when not recorded.
    review_probability: float | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """The request's fields, parsed from ``raw`` (a new mapping each time)."""
        fields: dict[str, Any] = orjson.loads(self.raw)
        return fields

    @property
    def audited(self) -> bool:
        """Whether the review was a sample: the prediction could have been accepted unreviewed
        (a review probability below 1). Requests without the field are not audits."""
        return self.review_probability is not None and self.review_probability < 1.0

    @classmethod
    def parse(cls, value: bytes | None) -> ReviewRequest:
        """Check a record value; raises :class:`MalformedRequest`."""
        data = json_object(value, MalformedRequest)
        assert value is not None  # json_object refuses a tombstone
        return cls._checked(data, bytes(value))

    @classmethod
    def from_fields(cls, data: object) -> ReviewRequest:
        """Check a decoded request (a ledger entry keeps it); see :meth:`parse`."""
        data = object_of(data, MalformedRequest)
        try:
            raw = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:  # nested too deep, or not JSON's types
            raise MalformedRequest(f"the request does not encode as JSON: {exc}") from exc
        return cls._checked(data, raw)

    @classmethod
    def _checked(cls, data: dict[str, Any], raw: bytes) -> ReviewRequest:
        # Containers cannot nest deeper than there are of them: count first, walk if need be.
        _check_depth(data, raw.count(b"{") + raw.count(b"["))
        missing = [name for name in (*CARRIED, "loop_name", "review_flow", "requested_s")
                   if name not in data]  # fmt: skip
        if missing:
            raise MalformedRequest(f"missing field(s): {', '.join(missing)}")
        name = data["loop_name"]
        if not isinstance(name, str) or not is_valid_loop_name(name):
            raise MalformedRequest(f"loop_name {str(name)[:80]!r} is not a valid loop name")
        prediction = data["prediction"]
        if not isinstance(prediction, dict) or not isinstance(prediction.get("label"), str):
            raise MalformedRequest("prediction is not an object with a string label")
        requested_s = data["requested_s"]
        if not finite_number(requested_s):
            raise MalformedRequest(f"requested_s {requested_s!r} is not a finite number")
        for text in ("review_flow", "route", "event_id", "policy_version"):
            if not isinstance(data[text], str) or not data[text]:
                raise MalformedRequest(f"{text} is not a non-empty string")
        if not isinstance(data["event"], dict):
            raise MalformedRequest("event is not an object")
        if data["key"] is not None and not isinstance(data["key"], str):
            raise MalformedRequest("key is not a string or null")
        probability = _review_probability(data.get("review_probability"))
        return cls(
            loop_name=name,
            review_flow=data["review_flow"],
            route=data["route"],
            event_id=data["event_id"],
            policy_version=data["policy_version"],
            requested_s=float(requested_s),
            label=prediction["label"],
            raw=raw,
            review_probability=probability,
        )

    def key_bytes(self) -> bytes | None:
        """The key of the event the request came from (outcomes are keyed like the input)."""
        fields = self.fields
        key = fields["key"]
        if key is None:
            return None
        if fields.get("key_encoding") == "base64":
            try:
                return base64.b64decode(key, validate=True)
            except binascii.Error:
                return str(key).encode()
        return str(key).encode()

    def without_event(self) -> ReviewRequest:
        """The request with its event left out (for an envelope that must stay small)."""
        return ReviewRequest(
            self.loop_name, self.review_flow, self.route, self.event_id, self.policy_version,
            self.requested_s, self.label, orjson.dumps({**self.fields, "event": {}}),
            self.review_probability,
        )  # fmt: skip


def _shown(text: str) -> str:
    """A value from a record, quoted and cut short for a message."""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _check_depth(data: dict[str, Any], bound: int) -> None:
    """Raise :class:`MalformedRequest` if ``data`` nests deeper than :data:`MAX_DEPTH`;
    ``bound`` is at least its depth (nothing to walk when that is shallow enough)."""
    if bound <= MAX_DEPTH:
        return
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MalformedRequest(f"the request nests deeper than {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _review_probability(value: Any) -> float | None:
    """The request's ``review_probability.total``, checked; None when the field is absent."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"total", "routes"}:
        raise MalformedRequest("review_probability is not an object of total and routes")
    total, routes = value["total"], value["routes"]
    if not _probability(total):
        raise MalformedRequest(f"review_probability.total {str(total)[:40]} is not in [0, 1]")
    if not isinstance(routes, dict) or len(routes) > MAX_PROBABILITY_ROUTES:
        raise MalformedRequest(
            f"review_probability.routes is not an object of at most {MAX_PROBABILITY_ROUTES} routes"
        )
    if not all(_probability(share) for share in routes.values()):
        raise MalformedRequest("review_probability.routes has a value outside [0, 1]")
    return float(total)


def _probability(value: Any) -> bool:
    return finite_number(value) and 0.0 <= value <= 1.0
