"""Review requests: parsed once on arrival, every malformed record refused with the reason."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from stream_router.envelope import review_dead_letter
from stream_router.envelope import review_request as ingest_review_request
from stream_router.models import Prediction, SourceRef
from stream_router.policies.routes import Decision
from stream_router.review.ledger import State, decode, encode, pending
from stream_router.review.request import (
    CARRIED,
    MAX_DEPTH,
    UNCONFIGURED_ROUTE,
    MalformedRequest,
    ReviewRequest,
    ReviewRoutes,
    UnconfiguredRequest,
    UnknownFlow,
    UnknownRoute,
)
from stream_router.settings import Settings
from tests.unit.review.requests import REQUESTED_S, review_request


def fields(**changes: Any) -> dict[str, Any]:
    """The fields of a valid request, with ``changes``."""
    return {**review_request().fields, **changes}


def encoded(**changes: Any) -> bytes:
    return orjson.dumps(fields(**changes))


def ingested(key: bytes | None) -> bytes:
    """A request exactly as ingest writes it to review-requests."""
    prediction = Prediction(
        "evt-42", "dog", 0.41, {"dog": 0.41, "cat": 0.39}, "animals", "7", 1_700_000_000.0,
        {"id": "evt-42", "label": "dog"}, SourceRef("predictions", 3, 1234, key, 1),
    )  # fmt: skip
    decision = Decision(True, "low-confidence", "fd-animals", "confidence", "0.41 < 0.6")
    return ingest_review_request(prediction, decision, "v3", "evt-42-abc123", REQUESTED_S)


def test_a_request_from_ingest_parses() -> None:
    request = ReviewRequest.parse(ingested(b"order-42"))
    assert (request.loop_name, request.review_flow, request.route) == (
        "evt-42-abc123",
        "fd-animals",
        "low-confidence",
    )
    assert (request.event_id, request.policy_version, request.label) == ("evt-42", "v3", "dog")
    assert request.requested_s == REQUESTED_S
    assert request.fields["event"] == {"id": "evt-42", "label": "dog"}
    assert request.key_bytes() == b"order-42"


def test_fields_keep_the_request_as_written() -> None:
    request = ReviewRequest.parse(encoded(newer_field={"x": 1}, requested_s=1_700_000_000))
    assert request.fields["newer_field"] == {"x": 1}
    assert isinstance(request.requested_s, float)  # an integer is a number of seconds too
    assert ReviewRequest.from_fields(dict(request.fields)) == request


def test_the_ledger_embeds_the_request_as_written_and_reads_back_its_fields() -> None:
    raw = ingested(b"order-42").replace(b",", b", ")  # as another writer spaces it
    request = ReviewRequest.parse(raw)
    assert request.raw == raw
    written = encode(pending(request, 1.0))
    assert raw in written  # not encoded again
    assert decode(written).request == ReviewRequest.from_fields(orjson.loads(raw))
    assert decode(written).request.fields == orjson.loads(raw)  # type: ignore[union-attr]


def deep(depth: int, where: str = "event") -> bytes:
    """A valid request whose ``where`` field nests ``depth`` levels deep, the request counted."""
    inner = b'{"a":' * (depth - 2) + b"1" + b"}" * (depth - 2)
    return encoded(**{where: {}}).replace(f'"{where}":{{}}'.encode(), f'"{where}":{{"x":'.encode()
                                          + inner + b"}")  # fmt: skip


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, MAX_DEPTH + 2, 600, 1024])
def test_a_request_nested_deeper_than_its_ledger_entry_can_be_is_malformed(depth: int) -> None:
    """A request ingest never writes (only another writer can) is refused before it is recorded:
    its ledger entry or its outcome would not encode."""
    with pytest.raises(MalformedRequest, match=f"nests deeper than {MAX_DEPTH} levels"):
        ReviewRequest.parse(deep(depth))
    with pytest.raises(MalformedRequest):
        ReviewRequest.from_fields(orjson.loads(deep(depth)))


def test_a_request_as_deep_as_ingest_writes_is_recorded_and_published() -> None:
    request = ReviewRequest.parse(deep(MAX_DEPTH))
    started = pending(request, 1.0).moved(State.STARTED, 2.0)
    assert decode(encode(started)) == started
    review_dead_letter(request.fields, "rejected", "no", 1.0)
    with pytest.raises(orjson.JSONEncodeError):  # one level deeper would not encode
        orjson.dumps([[orjson.loads(deep(MAX_DEPTH + 1))]])


def test_a_request_with_many_containers_but_shallow_is_accepted() -> None:
    wide = encoded(event={f"k{i}": {"v": [i]} for i in range(400)})
    assert len(ReviewRequest.parse(wide).fields["event"]) == 400


@pytest.mark.parametrize("missing", [*CARRIED, "loop_name", "review_flow", "requested_s"])
def test_a_missing_field_is_named(missing: str) -> None:
    broken = fields()
    del broken[missing]
    with pytest.raises(MalformedRequest, match=rf"missing field\(s\): {missing}$"):
        ReviewRequest.from_fields(broken)


def test_every_missing_field_is_named() -> None:
    broken = fields()
    del broken["event_id"], broken["requested_s"]
    with pytest.raises(MalformedRequest, match=r"missing field.*event_id, requested_s"):
        ReviewRequest.from_fields(broken)


def test_bytes_that_are_not_json() -> None:
    with pytest.raises(MalformedRequest, match="not JSON"):
        ReviewRequest.parse(b"\xff{not json")


def test_a_tombstone() -> None:
    with pytest.raises(MalformedRequest, match="no value"):
        ReviewRequest.parse(None)


@pytest.mark.parametrize(
    ("value", "kind"), [(b"[1, 2]", "list"), (b'"text"', "str"), (b"null", "NoneType")]
)
def test_json_that_is_not_an_object(value: bytes, kind: str) -> None:
    with pytest.raises(MalformedRequest, match=f"JSON {kind}, not an object"):
        ReviewRequest.parse(value)


@pytest.mark.parametrize("name", ["E1_Loop", "", "-e1", "e1-", 42, None])
def test_a_bad_loop_name(name: Any) -> None:
    with pytest.raises(MalformedRequest, match=r"loop_name .* is not a valid loop name"):
        ReviewRequest.parse(encoded(loop_name=name))


def test_a_very_long_bad_loop_name_is_cut_in_the_message() -> None:
    with pytest.raises(MalformedRequest) as caught:
        ReviewRequest.parse(encoded(loop_name="X" * 1000))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("requested_s", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_requested_s(requested_s: float) -> None:
    with pytest.raises(MalformedRequest, match=r"requested_s .* is not a finite number"):
        ReviewRequest.from_fields(fields(requested_s=requested_s))


def test_a_non_finite_requested_s_in_a_record() -> None:
    value = encoded().replace(b'"requested_s":1700000000.0', b'"requested_s":1e400')
    assert b"1e400" in value
    with pytest.raises(MalformedRequest):  # JSON has no infinity: the decoder refuses it
        ReviewRequest.parse(value)


@pytest.mark.parametrize("requested_s", ["1700000000", True, None, [1]])
def test_a_requested_s_that_is_not_a_number(requested_s: Any) -> None:
    with pytest.raises(MalformedRequest, match=r"requested_s .* is not a finite number"):
        ReviewRequest.parse(encoded(requested_s=requested_s))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prediction": {"confidence": 0.4}}, "prediction is not an object with a string label"),
        ({"prediction": "cat"}, "prediction is not an object"),
        ({"route": ""}, "route is not a non-empty string"),
        ({"review_flow": 7}, "review_flow is not a non-empty string"),
        ({"event_id": None}, "event_id is not a non-empty string"),
        ({"policy_version": ""}, "policy_version is not a non-empty string"),
        ({"event": [1]}, "event is not an object"),
        ({"key": 42}, "key is not a string or null"),
    ],
)
def test_a_field_of_the_wrong_kind_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedRequest, match=message):
        ReviewRequest.parse(encoded(**changes))


def test_a_utf8_key() -> None:
    assert ReviewRequest.parse(encoded(key="order-42")).key_bytes() == b"order-42"
    assert ReviewRequest.parse(encoded(key="n\u00e9")).key_bytes() == "n\u00e9".encode()


def test_no_key() -> None:
    assert ReviewRequest.parse(encoded(key=None)).key_bytes() is None
    assert ReviewRequest.parse(ingested(None)).key_bytes() is None


def test_a_base64_key_is_decoded() -> None:
    raw = b"\xff\x00binary"
    request = ReviewRequest.parse(
        encoded(key=base64.b64encode(raw).decode(), key_encoding="base64")
    )
    assert request.key_bytes() == raw


def test_a_key_that_is_not_utf8_comes_back_as_it_was() -> None:
    request = ReviewRequest.parse(ingested(b"\xff\x00"))
    assert request.fields["key_encoding"] == "base64"
    assert request.key_bytes() == b"\xff\x00"


def test_a_base64_key_that_does_not_decode_is_used_as_text() -> None:
    request = ReviewRequest.parse(encoded(key="not base64!", key_encoding="base64"))
    assert request.key_bytes() == b"not base64!"


def test_without_event_drops_only_the_event() -> None:
    request = review_request(blob="x" * 100)
    small = request.without_event()
    assert small.fields["event"] == {}
    assert {**small.fields, "event": request.fields["event"]} == dict(request.fields)
    assert (small.loop_name, small.route, small.label, small.requested_s) == (
        request.loop_name,
        request.route,
        request.label,
        request.requested_s,
    )
    assert request.fields["event"]["blob"] == "x" * 100


ROUTES = ReviewRoutes(
    {"general": "fd-general", "experts": "fd-experts"},
    {"general": "fd-experts"},
    frozenset({"trial"}),
)


@pytest.mark.parametrize(
    ("route", "flow", "attempt"),
    [("general", "fd-general", 1), ("experts", "fd-experts", 1), ("general", "fd-experts", 2),
     ("general", "fd-experts", 3)],
)  # fmt: skip
def test_configured_routes_and_flows_pass(route: str, flow: str, attempt: int) -> None:
    ROUTES.check(route, flow, attempt)


@pytest.mark.parametrize(
    ("route", "flow", "attempt", "error", "message"),
    [
        ("intruder", "fd-general", 1, UnknownRoute,
         r"route 'intruder' is not a review route .*\['experts', 'general'\]"),
        ("trial", "fd-general", 1, UnknownRoute, "route 'trial' is a shadow route"),
        ("general", "fd-experts", 1, UnknownFlow,
         "route 'general' names flow 'fd-experts'; its review_flow is 'fd-general'"),
        ("general", "fd-general", 2, UnknownFlow,
         "attempt 2 of route 'general' names flow 'fd-general'; review.escalation_flows.general "
         "is 'fd-experts'"),
        ("experts", "fd-experts", 2, UnknownFlow,
         "review.escalation_flows.experts is no flow"),
    ],
)  # fmt: skip
def test_anything_else_is_refused_with_its_reason_class(
    route: str, flow: str, attempt: int, error: type[UnconfiguredRequest], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        ROUTES.check(route, flow, attempt)
    assert caught.value.reason_class == {UnknownRoute: "unknown_route",
                                         UnknownFlow: "unknown_flow"}[error]  # fmt: skip


def test_values_from_a_record_are_cut_short_and_quoted() -> None:
    with pytest.raises(UnknownRoute) as caught:
        ROUTES.check("a\nb" + "x" * 500, "fd-general")
    message = str(caught.value)
    assert "\n" not in message  # a forged value cannot forge a log line
    assert len(message) < 200
    with pytest.raises(UnknownFlow, match=r"'y{80}\.\.\.'"):
        ROUTES.check("general", "y" * 500)


def test_metric_labels_name_configured_routes_only() -> None:
    assert [ROUTES.label(r) for r in ("general", "trial", "intruder")] == [
        "general",
        "trial",
        UNCONFIGURED_ROUTE,
    ]


def test_the_routes_come_from_the_settings() -> None:
    settings = Settings.model_validate(
        {
            "policies": {"routes": [
                {"name": "general", "review_flow": "fd-g", "policy": {"type": "sample"}},
                {"name": "trial", "review_flow": "fd-g", "policy": {"type": "sample"},
                 "shadow": True},
            ]},
            "review": {"escalation_flows": {"general": "fd-x"}},
        }
    )  # fmt: skip
    routes = ReviewRoutes.from_settings(settings.policies, settings.review)
    assert routes == ReviewRoutes({"general": "fd-g"}, {"general": "fd-x"}, frozenset({"trial"}))
