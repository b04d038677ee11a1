"""Event parsing by the configured mapping; every malformation is a PoisonEvent with a class."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_router.errors import PoisonEvent
from stream_router.ingest.parser import EventParser
from stream_router.models import SourceRef
from stream_router.settings import EventMapping

SOURCE = SourceRef("predictions", 2, 41, b"k")


def parse(event: object, **mapping: object) -> object:
    parser = EventParser(EventMapping.model_validate(mapping))
    return parser.parse(json.dumps(event).encode(), SOURCE)


def test_default_mapping() -> None:
    prediction = parse(
        {
            "event_id": "e-1",
            "label": "cat",
            "confidence": 0.75,
            "scores": {"cat": 0.75, "dog": 0.25},
            "model": "clf",
            "model_version": 3,
            "timestamp": 1_700_000_000.5,
        }
    )
    assert prediction.event_id == "e-1"  # type: ignore[attr-defined]
    assert prediction.label == "cat"  # type: ignore[attr-defined]
    assert prediction.confidence == 0.75  # type: ignore[attr-defined]
    assert prediction.scores == {"cat": 0.75, "dog": 0.25}  # type: ignore[attr-defined]
    assert prediction.model_version == "3"  # type: ignore[attr-defined]
    assert prediction.timestamp_s == 1_700_000_000.5  # type: ignore[attr-defined]
    assert not prediction.id_derived  # type: ignore[attr-defined]


def test_nested_paths_list_scores_and_ms_timestamps() -> None:
    prediction = parse(
        {"meta": {"id": 7}, "out": {"cls": 2, "p": 0.4, "probs": [0.1, 0.5, 0.4]}, "ts": 1500},
        event_id="meta.id",
        label="out.cls",
        confidence="out.p",
        scores="out.probs",
        classes=["a", "b", "c"],
        timestamp="ts",
        timestamp_unit="ms",
    )
    assert prediction.event_id == "7"  # type: ignore[attr-defined]
    assert prediction.label == "2"  # type: ignore[attr-defined]
    assert prediction.scores == {"a": 0.1, "b": 0.5, "c": 0.4}  # type: ignore[attr-defined]
    assert prediction.timestamp_s == 1.5  # type: ignore[attr-defined]


def test_missing_id_is_derived_from_coordinates() -> None:
    prediction = parse({"label": "cat", "confidence": 0.5})
    assert prediction.event_id == "predictions-2-41"  # type: ignore[attr-defined]
    assert prediction.id_derived  # type: ignore[attr-defined]


def test_iso_timestamps_naive_means_utc() -> None:
    prediction = parse(
        {"label": "x", "confidence": 1, "timestamp": "2020-01-01T00:00:00"},
        timestamp_unit="iso8601",
    )
    assert prediction.timestamp_s == 1_577_836_800.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("timestamp", "unit", "says"),
    [
        (
            "2020-01-01T00:00:00Z",
            "s",
            "timestamp must be a finite number of seconds since the epoch "
            "(ingest.mapping.timestamp_unit: s), got '2020-01-01T00:00:00Z' (an ISO 8601 time: "
            "set ingest.mapping.timestamp_unit to iso8601)",
        ),
        (
            "soon",
            "ms",
            "number of milliseconds since the epoch (ingest.mapping.timestamp_unit: ms)",
        ),
        (
            1_577_836_800,
            "iso8601",
            "timestamp must be an ISO 8601 string, got 1577836800 (epoch numbers: set "
            "ingest.mapping.timestamp_unit to s or ms)",
        ),
    ],
)
def test_a_timestamp_of_another_unit_points_at_the_setting(
    timestamp: object, unit: str, says: str
) -> None:
    with pytest.raises(PoisonEvent) as caught:
        parse({"label": "x", "confidence": 1, "timestamp": timestamp}, timestamp_unit=unit)
    assert caught.value.reason_class == "bad_type"
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "reason_class"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"confidence": 0.5}', "missing_field"),
        (b'{"label": "cat"}', "missing_field"),
        (b'{"label": null, "confidence": 0.5}', "missing_field"),
        (b'{"label": true, "confidence": 0.5}', "bad_type"),
        (b'{"label": ["cat"], "confidence": 0.5}', "bad_type"),
        (b'{"label": "cat", "confidence": "high"}', "bad_type"),
        (b'{"label": "cat", "confidence": true}', "bad_type"),
        (b'{"label": "cat", "confidence": NaN}', "not_json"),
        (b'{"label": "cat", "confidence": Infinity}', "not_json"),
        (b'{"label": "cat", "confidence": 1e999}', "not_json"),
        (b'{"label": "cat", "confidence": 1.01}', "bad_value"),
        (b'{"label": "cat", "confidence": -0.1}', "bad_value"),
        (b'{"label": "cat", "confidence": 0.5, "scores": "x"}', "bad_type"),
        (b'{"label": "cat", "confidence": 0.5, "scores": {"a": "x"}}', "bad_type"),
        (b'{"label": "cat", "confidence": 0.5, "timestamp": "noon"}', "bad_type"),
        (b'{"label": "cat", "confidence": 0.5, "event_id": {"a": 1}}', "bad_type"),
        (b'{"label": "cat", "confidence": 0.5, "model": {"n": 1}}', "bad_type"),
    ],
)
def test_malformed_events(raw: bytes, reason_class: str) -> None:
    parser = EventParser(EventMapping())
    with pytest.raises(PoisonEvent) as caught:
        parser.parse(raw, SOURCE)
    assert caught.value.reason_class == reason_class
    assert str(caught.value)


def test_list_scores_must_match_classes() -> None:
    parser = EventParser(EventMapping(classes=["a", "b"]))
    with pytest.raises(PoisonEvent, match="3 scores but 2 classes"):
        parser.parse(b'{"label": "a", "confidence": 0.5, "scores": [0.1, 0.2, 0.7]}', SOURCE)


def test_a_tombstone_has_its_own_reason_class() -> None:
    with pytest.raises(PoisonEvent, match="tombstone") as caught:
        EventParser(EventMapping()).parse(None, SOURCE)
    assert caught.value.reason_class == "tombstone"  # the loop skips it unless told otherwise


@pytest.mark.parametrize("fast", [True, False])
def test_object_scores_must_name_configured_classes(fast: bool) -> None:
    parser = EventParser(EventMapping(classes=["cat", "dog"]))
    if not fast:
        parser._flat = None
    event = {"event_id": "e", "label": "cat", "confidence": 0.5}
    with pytest.raises(PoisonEvent, match=r"outside mapping\.classes: \['cow', 'emu'\]") as caught:
        parser.from_event(event | {"scores": {"cat": 0.5, "cow": 0.3, "emu": 0.2}}, SOURCE)
    assert caught.value.reason_class == "bad_value"
    with pytest.raises(PoisonEvent, match=r"outside mapping\.classes"):  # the checked branch
        parser.from_event(event | {"scores": {"cat": 1, "cow": 0}}, SOURCE)
    partial = parser.from_event(event | {"scores": {"dog": 0.5}}, SOURCE)
    assert partial.scores == {"dog": 0.5}  # leaving classes out is fine
    anything = EventParser(EventMapping()).from_event(event | {"scores": {"cow": 1.0}}, SOURCE)
    assert anything.scores == {"cow": 1.0}  # without classes, any names


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_confidence_accepted_exactly_in_unit_interval(value: float) -> None:
    raw = json.dumps({"label": "x", "confidence": value}).encode()
    parser = EventParser(EventMapping())
    if math.isfinite(value) and 0.0 <= value <= 1.0:
        assert parser.parse(raw, SOURCE).confidence == value
    else:
        with pytest.raises(PoisonEvent):
            parser.parse(raw, SOURCE)


def test_non_finite_scores_from_other_sources_are_refused() -> None:
    parser = EventParser(EventMapping())
    with pytest.raises(PoisonEvent, match="finite") as caught:
        parser.from_event({"label": "a", "confidence": 0.5, "scores": {"a": math.inf}}, SOURCE)
    assert caught.value.reason_class == "bad_value"


_FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.floats(min_value=0, max_value=1), max_size=3),
    st.dictionaries(
        st.text(max_size=3), st.one_of(st.floats(), st.integers(), st.text()), max_size=3
    ),
)


@given(
    st.dictionaries(
        st.sampled_from(
            ["event_id", "label", "confidence", "scores", "model", "model_version", "timestamp"]
        ),
        _FIELD_VALUES,
    ),
    st.sampled_from([[], ["", "a", "bc"]]),  # without classes, and with
)
def test_fast_path_gives_what_the_general_path_gives(
    event: dict[str, object], classes: list[str]
) -> None:
    fast = EventParser(EventMapping(classes=classes))
    general = EventParser(EventMapping(classes=classes))
    general._flat = None  # the general path only
    assert fast._flat is not None

    def outcome(parser: EventParser) -> object:
        try:
            return parser.from_event(dict(event), SOURCE)
        except PoisonEvent as poison:
            return (poison.reason_class, str(poison))

    assert repr(outcome(fast)) == repr(outcome(general))


def test_fast_path_is_off_for_nested_paths_and_other_units() -> None:
    assert EventParser(EventMapping(label="out.label"))._flat is None
    assert EventParser(EventMapping(timestamp_unit="ms"))._flat is None
    assert EventParser(EventMapping(event_id=None))._flat is None


@given(
    st.fixed_dictionaries(
        {
            "event_id": st.text(min_size=1, max_size=4),
            "label": st.text(max_size=4),
            "confidence": st.floats(min_value=0, max_value=1),
        },
        optional={
            "scores": st.one_of(
                st.none(), st.dictionaries(st.text(max_size=3), st.floats(), max_size=3)
            ),
            "model": st.one_of(st.none(), st.text(max_size=3)),
            "model_version": st.one_of(st.none(), st.text(max_size=3)),
            "timestamp": st.one_of(st.none(), st.floats(allow_nan=False)),
        },
    )
)
def test_fast_path_on_well_formed_events(event: dict[str, object]) -> None:
    fast = EventParser(EventMapping())
    general = EventParser(EventMapping())
    general._flat = None
    try:
        expected: object = general.from_event(dict(event), SOURCE)
    except PoisonEvent as poison:
        expected = poison.reason_class
    try:
        got: object = fast.from_event(dict(event), SOURCE)
    except PoisonEvent as poison:
        got = poison.reason_class
    assert repr(got) == repr(expected)
