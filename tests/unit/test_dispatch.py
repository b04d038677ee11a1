"""Every consumed record ends as exactly one disposition, whatever its bytes (dispatch.py).

The property tests run raw keys and values (arbitrary bytes, and valid but pathological JSON:
deep, wide, long, numbers at and beyond float range, NaN and Infinity) through the real parser,
the routes of a configuration like the example's, envelope building and encoding, and check
what lands on the sink: one record per input record (or a counted tombstone skip), each one
strict JSON of its schema, each one within ``kafka.max_record_bytes``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import Field

from stream_router.envelope import review_dead_letter
from stream_router.ingest.dispatch import BatchOutcome, Dispatcher, Skipped
from stream_router.models import Prediction
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.registry import PolicyRegistry
from stream_router.policies.routes import Routes
from stream_router.review.ledger import End, State, decode, encode, pending
from stream_router.review.request import ReviewRequest
from stream_router.settings import Settings
from tests.envelope_schema import dead_letter_validator, envelope_validator

LIMIT = 16_384  # the smallest kafka.max_record_bytes: oversize inputs stay cheap to generate
TOPIC = "predictions"
OUTPUT, REQUESTS, DEAD = "out", "requests", "dead"

ROUTES: list[dict[str, Any]] = [
    {
        "name": "experts",
        "review_flow": "fd-experts",
        "policy": {
            "type": "all",
            "policies": [
                {"type": "field", "field": "model_name", "op": "eq", "value": "fraud-v2"},
                {"type": "confidence", "below": 0.9},
            ],
        },
    },
    {
        "name": "general",
        "review_flow": "fd-general",
        "policy": {
            "type": "any",
            "policies": [
                {"type": "confidence", "below": 0.3, "per_label": {"bird": {"below": 0.5}}},
                {"type": "margin", "min_margin": 0.01, "when_missing": "accept"},
                {"type": "required_fields", "fields": ["model_version"]},
                {"type": "field", "field": "meta.n", "op": "gt", "value": 7},
                {"type": "field", "field": "event_id", "op": "matches", "value": "x.*y"},
                {"type": "field", "field": "meta", "op": "in", "value": ["a", 1, True]},
            ],
        },
    },
    {"name": "audit", "review_flow": "fd-general", "policy": {"type": "sample", "percent": 10}},
    {
        "name": "entropy-trial",
        "review_flow": "fd-general",
        "shadow": True,
        "policy": {"type": "entropy", "max_entropy": 0.8},
    },
]


def config(
    *, tombstones: str = "skip", classes: Sequence[str] = (), routes: Any = None
) -> Settings:
    return Settings(
        kafka={"max_record_bytes": LIMIT},
        ingest={
            "output_topic": OUTPUT,
            "review_requests_topic": REQUESTS,
            "dead_letter_topic": DEAD,
            "tombstones": tombstones,
            "mapping": {"classes": list(classes)},
        },
        policies={"version": "v1", "routes": ROUTES if routes is None else routes},
    )


class Sink:
    """What the writer would produce, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.records.append((topic, key, value, list(headers or [])))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(value) for t, _, value, _ in self.records if t == topic]


def dispatcher(
    settings: Settings, registry: PolicyRegistry | None = None
) -> tuple[Dispatcher, Sink]:
    sink = Sink()
    routes = Routes(settings.policies, registry)
    routes.start()
    return (
        Dispatcher(
            settings.ingest, settings.kafka.max_record_bytes, routes, sink, clock=lambda: 1e9
        ),
        sink,
    )


def batch_of(
    pairs: Sequence[tuple[bytes | None, bytes | None]], partitions: int = 2
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """Records spread over ``partitions``, offsets counting from 5 in each."""
    batch: dict[TopicPartition, list[ConsumerRecord]] = {}
    for index, (key, value) in enumerate(pairs):
        tp = TopicPartition(TOPIC, index % partitions)
        records = batch.setdefault(tp, [])
        offset = 5 + len(records)
        size = -1 if value is None else len(value)
        records.append(
            ConsumerRecord(
                TOPIC, tp.partition, offset, 1_700_000_000_000, 0, key, value, None, 0, size, ()
            )
        )
    return batch


def strict_json(value: bytes) -> Any:
    """RFC 8259 JSON or an exception: the standard library refusing NaN and Infinity too."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(value, parse_constant=refuse)


def check_written(
    sink: Sink,
    batch: dict[TopicPartition, list[ConsumerRecord]],
    outcome: BatchOutcome,
    *,
    skips_tombstones: bool = True,
) -> None:
    """The rule of dispatch.py, on what one batch wrote."""
    coordinates: Counter[tuple[int, int]] = Counter()
    kinds: Counter[str] = Counter()
    for topic, key, value, headers in sink.records:
        size = len(value) + (0 if key is None else len(key))
        size += sum(len(name) + len(data) for name, data in headers)
        assert size <= LIMIT, (topic, size)
        data = strict_json(value)
        if topic == OUTPUT:
            envelope_validator().validate(data)
            assert data["decision"] == "accepted"
        elif topic == REQUESTS:
            assert key == data["loop_name"].encode()
            assert data["route"]
            assert data["review_flow"]
        else:
            assert topic == DEAD
            dead_letter_validator().validate(data)
            assert headers == [("x-stream-router-reason-class", data["reason_class"].encode())]
        source = data["source"]
        assert source["topic"] == TOPIC
        coordinates[(source["partition"], source["offset"])] += 1
        kinds[topic] += 1
    skipped = {
        (record.partition, record.offset)
        for records in batch.values()
        for record in records
        if record.value is None and skips_tombstones
    }
    assert outcome.tombstones_skipped == len(skipped)
    every = {(r.partition, r.offset) for records in batch.values() for r in records}
    assert set(coordinates) | skipped == every
    assert not set(coordinates) & skipped
    assert all(count == 1 for count in coordinates.values()), coordinates
    assert outcome.consumed == len(every)
    assert (outcome.accepted, outcome.review_requested, outcome.dead_lettered) == (
        kinds[OUTPUT],
        kinds[REQUESTS],
        kinds[DEAD],
    )
    assert outcome.consumed == (
        outcome.accepted
        + outcome.review_requested
        + outcome.dead_lettered
        + outcome.tombstones_skipped
    )
    assert outcome.committed == {tp: records[-1].offset + 1 for tp, records in batch.items()}


# -- strategies ------------------------------------------------------------------------------


class _Raw(str):
    """JSON text written as is."""


#: Number literals at and beyond the edges of what JSON parsers and IEEE doubles hold.
NUMBER_LITERALS = [
    "0", "-0", "-0.0", "1", "0.5", "1.0", "1e308", "-1e308", "1.7976931348623157e308",
    "1e309", "-1e309", "1e-400", "4.9e-324", "9223372036854775807", "-9223372036854775808",
    "18446744073709551615", "18446744073709551616", "100000000000000000000000000000",
    "-100000000000000000000000000000", "1" + "0" * 400, "NaN", "Infinity", "-Infinity",
    "1.5e99999", "0." + "1" * 500,
]  # fmt: skip

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(NUMBER_LITERALS).map(_Raw),
)


def to_json(value: Any) -> str:
    """JSON text of ``value``, NaN and Infinity included; ``_Raw`` parts verbatim."""
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

#: Nesting depths around orjson's limits: 254 to encode, 1,024 to parse.
DEPTHS = [1, 100, 250, 251, 252, 253, 254, 255, 300, 1000, 1022, 1023, 1024, 1025, 2000]


@st.composite
def deep(draw: st.DrawFn) -> _Raw:
    depth = draw(st.sampled_from(DEPTHS))
    inner = draw(st.sampled_from(["1", "{}", "[]", '"x"']))
    if draw(st.booleans()):
        return _Raw("[" * depth + inner + "]" * depth)
    return _Raw('{"a":' * depth + inner + "}" * depth)


def wide(count: int) -> _Raw:
    return _Raw("{" + ",".join(f'"k{i}":{i}' for i in range(count)) + "}")


pathological = st.one_of(
    deep(),
    st.integers(min_value=100, max_value=3000).map(wide),
    st.integers(min_value=1000, max_value=3 * LIMIT).map(lambda n: "x" * n),
    st.integers(min_value=100, max_value=LIMIT).map(lambda n: "\x01" * n),  # escaped: 6 bytes
    st.text(min_size=1, max_size=50),  # any code points; lone surrogates are JSON-escaped
    st.sampled_from(NUMBER_LITERALS).map(_Raw),
)

labels = st.one_of(
    st.sampled_from(["cat", "dog", "bird", ""]),
    st.text(max_size=30),
    st.integers(),
    st.none(),
    json_values,
    pathological,
)
confidences = st.one_of(
    st.floats(min_value=0, max_value=1),
    st.sampled_from([0, 1, 0.0, -0.0, 1.0, 0.95, 0.3]),
    st.sampled_from(NUMBER_LITERALS).map(_Raw),
    st.floats(),
    json_values,
)
score_maps = st.one_of(
    st.dictionaries(st.sampled_from(["cat", "dog", "bird", "cow"]), st.floats(0, 1), max_size=4),
    st.lists(st.floats(0, 1), max_size=4),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=4),
    json_values,
)


good_scores = st.one_of(
    st.fixed_dictionaries({"cat": st.floats(0.6, 1), "dog": st.floats(0, 0.4)}),
    st.dictionaries(st.sampled_from(["cat", "dog", "bird"]), st.floats(0, 1), max_size=3),
)

#: Per field: a well-formed value, and anything at all.
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "event_id": (
        st.text(min_size=1, max_size=40),
        st.one_of(st.integers(), json_values, pathological),
    ),
    "label": (st.sampled_from(["cat", "dog", "bird"]), labels),
    "confidence": (st.floats(min_value=0.3, max_value=1), confidences),
    "scores": (good_scores, score_maps),
    "model": (st.sampled_from(["clf", "fraud-v2"]), st.one_of(json_scalars, pathological)),
    "model_version": (st.text(min_size=1, max_size=10), json_scalars),
    "timestamp": (st.floats(1e9, 2e9), st.one_of(st.floats(), json_scalars)),
    "meta": (st.fixed_dictionaries({"n": st.integers(0, 9)}), json_values),
}


@st.composite
def events(draw: st.DrawFn) -> bytes:
    """Mostly predictions, with pathological parts: each field is well-formed, wild (one in
    eight) or missing (one in twenty), and an ``extra`` field holds anything pathological."""
    event: dict[str, Any] = {}
    for name, (good, wild) in FIELDS.items():
        roll = draw(st.integers(0, 39))
        if roll >= 2:
            event[name] = draw(wild if roll < 7 else good)
    if draw(st.integers(0, 9)) < 7:
        event["extra"] = draw(pathological)
    text = to_json(event)
    if draw(st.integers(0, 19)) == 0:  # a duplicated key
        text = text[:-1] + (',"label":"dup"}' if len(text) > 2 else '"label":"dup"}')
    return text.encode("utf-8", "surrogatepass")


def filler(low: int, high: int) -> st.SearchStrategy[bytes]:
    """Big binary values without drawing each byte (hypothesis caps the data it draws)."""
    return st.tuples(st.binary(min_size=1, max_size=8), st.integers(low, high)).map(
        lambda pair: (pair[0] * (pair[1] // len(pair[0]) + 1))[: pair[1]]
    )


values = st.one_of(
    st.none(),
    st.binary(max_size=64),
    filler(LIMIT - 100, LIMIT + 100),
    json_values.map(lambda v: to_json(v).encode("utf-8", "surrogatepass")),
    events(),
    events(),
    events(),
    events(),
    events().map(lambda raw: raw + b" trailing"),
    events().map(lambda raw: b"\xef\xbb\xbf" + raw),  # a byte-order mark: not RFC 8259 JSON
)
keys = st.one_of(
    st.none(),
    st.binary(max_size=16),
    st.text(max_size=16).map(str.encode),
    filler(LIMIT // 2, LIMIT + 10),
)
records = st.lists(st.tuples(keys, values), min_size=1, max_size=6)

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- properties ------------------------------------------------------------------------------


@PROPERTY
@given(records)
def test_every_record_ends_in_exactly_one_disposition(pairs: list[Any]) -> None:
    worker, sink = dispatcher(config())
    batch = batch_of(pairs)
    outcome = worker.dispatch(batch)
    check_written(sink, batch, outcome)
    for letter in sink.on(DEAD):
        event(f"dead letter {letter['reason_class']}, value omitted: {letter['value_omitted']}")
    for topic in (OUTPUT, REQUESTS):
        if sink.on(topic):
            event(f"written to {topic}")
    if outcome.tombstones_skipped:
        event("tombstone skipped")


@PROPERTY
@given(records)
def test_with_tombstones_dead_lettered_and_classes_configured(pairs: list[Any]) -> None:
    worker, sink = dispatcher(config(tombstones="dead_letter", classes=["cat", "dog", "bird"]))
    batch = batch_of(pairs, partitions=1)
    outcome = worker.dispatch(batch)
    check_written(sink, batch, outcome, skips_tombstones=False)
    tombstones = sum(value is None for _, value in pairs)
    assert sum(d["reason_class"] == "tombstone" for d in sink.on(DEAD)) == tombstones


@st.composite
def deep_predictions(draw: st.DrawFn) -> bytes:
    """Well-formed predictions nesting about as deep as orjson encodes."""
    depth = draw(st.integers(240, 260))
    inner = draw(st.sampled_from(["1", "{}", "[]", '"x"']))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    where = draw(st.sampled_from(["extra", "label"]))  # in the event, or the mapped label
    nest = opener * depth + inner + closer * depth
    fields = {"event_id": '"e"', "label": '"cat"', "confidence": "0.5", where: nest}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


@PROPERTY
@given(st.lists(deep_predictions(), min_size=1, max_size=4))
def test_review_requests_survive_the_review_roles_wrapping(raws: list[bytes]) -> None:
    """The review role nests a request once more (ledger entry, dead letter): still encodes."""
    everything = [
        {"name": "all", "review_flow": "fd", "policy": {"type": "sample", "percent": 100}}
    ]
    worker, sink = dispatcher(config(routes=everything))
    batch = batch_of([(b"k", raw) for raw in raws])
    check_written(sink, batch, worker.dispatch(batch))
    requests = [value for topic, _, value, _ in sink.records if topic == REQUESTS]
    for raw in requests:
        request = ReviewRequest.parse(raw)  # as the review role takes it
        review_dead_letter(request.fields, "rejected", "no", 1.0)
        started = pending(request, 1.0).moved(State.STARTED, 2.0)
        entry = started.moved(State.ENDED, 2.0, end=End("Failed", None, "Expired"))
        assert decode(encode(entry)) == entry


# -- examples: what each guard does ----------------------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def event_bytes(**fields: Any) -> bytes:
    event = {"event_id": "e-1", "label": "cat", "confidence": 0.95} | fields
    return json.dumps(event).encode()


SIMPLE = [{"name": "general", "review_flow": "fd", "policy": {"type": "confidence", "below": 0.5}}]


def one(value: bytes | None, key: bytes | None = b"k", **kw: Any) -> tuple[BatchOutcome, Sink]:
    """Dispatch one record under one route: review below 0.5."""
    worker, sink = dispatcher(config(routes=SIMPLE, **kw))
    batch = batch_of([(key, value)], partitions=1)
    outcome = worker.dispatch(batch)
    check_written(sink, batch, outcome, skips_tombstones=kw.get("tombstones", "skip") == "skip")
    return outcome, sink


def test_a_tombstone_is_skipped_counted_and_committed() -> None:
    outcome, sink = one(None)
    assert sink.records == []
    assert (outcome.consumed, outcome.tombstones_skipped) == (1, 1)
    assert outcome.counts.tombstones_skipped == {(TOPIC,): 1}
    assert outcome.committed == {TopicPartition(TOPIC, 0): 6}


def test_a_tombstone_is_dead_lettered_when_configured() -> None:
    outcome, sink = one(None, tombstones="dead_letter")
    (letter,) = sink.on(DEAD)
    assert letter["reason_class"] == "tombstone"
    assert (letter["value"], letter["value_bytes"], letter["value_omitted"]) == (None, None, False)
    assert outcome.tombstones_skipped == 0


def test_a_large_binary_value_becomes_a_small_dead_letter() -> None:
    """The issue's case: 900 KB of binary was a 1.23 MB dead letter (base64) before."""
    worker, sink = dispatcher(config().model_copy(update={"kafka": config().kafka.model_copy(
        update={"max_record_bytes": 1_000_000})}))  # fmt: skip
    raw = bytes(range(256)) * 3516  # 900,096 bytes, not UTF-8
    worker.dispatch(batch_of([(b"key-1", raw)], partitions=1))
    ((topic, key, value, _),) = sink.records
    letter = orjson.loads(value)
    assert (topic, key) == (DEAD, b"key-1")
    assert len(value) < 1000
    assert letter["reason_class"] == "not_json"
    assert (letter["value"], letter["value_omitted"], letter["value_bytes"]) == (
        None,
        True,
        900_096,
    )
    assert letter["key"] == "key-1"
    assert letter["source"] == {
        "topic": TOPIC,
        "partition": 0,
        "offset": 5,
        "timestamp_ms": 1_700_000_000_000,
    }
    assert "left out" in letter["reason"]


def test_a_dead_letter_that_fits_keeps_the_value() -> None:
    raw = b"\xff" * (LIMIT // 2)  # base64: two thirds of the limit
    _, sink = one(raw)
    (letter,) = sink.on(DEAD)
    assert letter["value_encoding"] == "base64"
    assert not letter["value_omitted"]


def test_a_huge_key_is_left_out_too() -> None:
    _, sink = one(b"not json", key=b"k" * LIMIT)
    ((_, key, value, _),) = sink.records
    letter = orjson.loads(value)
    assert key is None
    assert (letter["key"], letter["value"], letter["value_omitted"]) == (None, None, True)


@pytest.mark.parametrize("confidence", [0.95, 0.3])  # accepted, or review (general route)
def test_an_envelope_over_the_limit_becomes_a_too_large_dead_letter(confidence: float) -> None:
    # The label is in the event, the prediction and the reason: about three times its size.
    value = event_bytes(label="x" * (LIMIT // 3), confidence=confidence)
    outcome, sink = one(value)
    (letter,) = sink.on(DEAD)
    assert letter["reason_class"] == "too_large"
    assert "above kafka.max_record_bytes (16,384)" in letter["reason"]
    assert letter["value"] == value.decode()  # the original still fits in the dead letter
    assert outcome.counts.dead_lettered == {("too_large",): 1}
    assert not outcome.counts.accepted
    assert not outcome.counts.review_requested


@pytest.mark.parametrize(
    ("depth", "confidence", "fate"),
    [
        (252, 0.95, OUTPUT),  # the event nests 253 levels: its envelope 254, orjson's most
        (253, 0.95, DEAD),
        (251, 0.3, REQUESTS),  # a review request keeps a level for the review role
        (252, 0.3, DEAD),
        (1023, 0.95, DEAD),  # orjson parses up to 1,024 levels
        (1024, 0.95, DEAD),  # beyond: not JSON to orjson
    ],
)
def test_deep_events_are_written_or_dead_lettered(depth: int, confidence: float, fate: str) -> None:
    value = b'{"label":"cat","confidence":%s,"deep":%s}' % (str(confidence).encode(), nested(depth))
    _, sink = one(value)
    ((topic, _, _, _),) = sink.records
    assert topic == fate
    if fate == DEAD:
        (letter,) = sink.on(DEAD)
        reason_class = "not_json" if depth >= 1024 else "unencodable"
        assert letter["reason_class"] == reason_class
        assert letter["value"] == value.decode()


@pytest.mark.parametrize(
    ("literal", "reason_class"),
    [
        ("1e309", "not_json"),
        ("NaN", "not_json"),
        ("-Infinity", "not_json"),
        ("1e308", None),
        ("-0.0", None),
        ("100000000000000000000000000000", None),  # 10**30 (orjson reads it as a float)
        ("18446744073709551616", None),  # 2**64
    ],
)
def test_numbers_at_and_beyond_float_range(literal: str, reason_class: str | None) -> None:
    value = b'{"label":"cat","confidence":0.95,"n":%s}' % literal.encode()
    _, sink = one(value)
    if reason_class is None:
        (envelope,) = sink.on(OUTPUT)
        assert envelope["event"]["n"] == float(literal)
    else:
        (letter,) = sink.on(DEAD)
        assert letter["reason_class"] == reason_class


def test_scores_outside_the_configured_classes_are_bad_values() -> None:
    for value in (
        event_bytes(scores={"cat": 0.9, "cow": 0.1}),  # the flat fast path's shape
        event_bytes(event_id=7, scores={"cat": 0.9, "cow": 0.1}),  # the general path
    ):
        _, sink = one(value, classes=["cat", "dog"])
        (letter,) = sink.on(DEAD)
        assert letter["reason_class"] == "bad_value"
        assert "cow" in letter["reason"]
    _, sink = one(event_bytes(scores={"cat": 0.9}), classes=["cat", "dog"])
    assert len(sink.on(OUTPUT)) == 1  # leaving classes out is fine


class FragileParams(PolicyParams):
    label: str = Field(description="The label it cannot handle.")


class Fragile(EventPolicy[FragileParams]):
    """A plugin breaking the contract: it raises on one label."""

    params_model = FragileParams

    def check(self, prediction: Prediction) -> Verdict:
        if prediction.label == self.params.label:
            raise KeyError(prediction.label)
        return Verdict(prediction.confidence < 0.5, "fine")


def test_a_policy_that_raises_costs_only_the_events_it_raises_on() -> None:
    registry = PolicyRegistry(extra={"fragile": Fragile})
    routes = [
        {"name": "watch", "review_flow": "fd", "shadow": True,
         "policy": {"type": "sample", "percent": 100}},
        {"name": "r", "review_flow": "fd", "policy": {"type": "fragile", "label": "owl"}},
    ]  # fmt: skip
    worker, sink = dispatcher(config(routes=routes), registry)
    pairs = [
        (b"a", event_bytes(label="cat", confidence=0.9)),
        (b"b", event_bytes(label="owl")),
        (b"c", event_bytes(label="cat", confidence=0.2)),
    ]
    batch = batch_of(pairs, partitions=1)
    outcome = worker.dispatch(batch)
    check_written(sink, batch, outcome)
    (letter,) = sink.on(DEAD)
    assert (letter["reason_class"], letter["key"]) == ("policy_error", "b")
    assert "KeyError" in letter["reason"]
    assert (outcome.accepted, outcome.review_requested) == (1, 1)
    # The shadow route saw each prediction once, not once more for the failed batch call.
    assert outcome.counts.shadow_hits == {("watch", "policies.routes.0.policy"): 3}


def test_an_undecodable_range_gets_one_stand_in_and_is_committed_past() -> None:
    worker, sink = dispatcher(config(routes=SIMPLE))
    tp = TopicPartition(TOPIC, 0)
    batch = batch_of([(b"a", event_bytes())], partitions=1)  # offset 5
    skipped = [Skipped(tp, 6, 40, "CorruptRecordException: Invalid CRC")]
    outcome = worker.dispatch(batch, skipped)
    letter = sink.on(DEAD)[0]
    dead_letter_validator().validate(letter)
    assert letter["reason_class"] == "undecodable"
    assert (letter["source"]["offset"], letter["last_offset"]) == (6, 39)
    assert letter["reason"] == "CorruptRecordException: Invalid CRC"
    assert outcome.committed == {tp: 40}
    assert (outcome.consumed, outcome.accepted, outcome.dead_lettered) == (2, 1, 1)
    # A range alone (every record of the fetch was in the bad batch) is committed past too.
    outcome = worker.dispatch({}, [Skipped(TopicPartition(TOPIC, 1), 0, 3, "x")])
    assert outcome.committed == {TopicPartition(TOPIC, 1): 3}
