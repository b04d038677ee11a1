"""The Label Studio task reads as a review form (issue 18, item 9): fields as a table of
dotted names and readable values, an image or a text block where configured, the model's
label and confidence once, the choices with the model's label pre-selected."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from stream_router.backends import BackendContext, build_backend
from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.labelstudio.tasks import (
    IMAGE_FIELD,
    MAX_ROWS,
    MAX_VALUE_CHARS,
    NAME_FIELD,
    ROWS_FIELD,
    SCORES_FIELD,
    SUMMARY_FIELD,
    TEXT_FIELD,
    choice_result,
    event_rows,
    labeling_config,
    readable,
    task,
)
from stream_router.metrics import ReviewMetrics
from stream_router.review.content import project
from stream_router.settings import Settings
from tests.unit.test_labelstudio_starts import FakeLabelStudio

EVENT = {
    "event_id": "e-17",
    "photo": "https://images.example/cat.png",
    "caption": "A cat on a mat.\nOr a small dog?",
    "amount": 1234.5,
    "ratio": 0.1 + 0.2,
    "count": 3,
    "flagged": False,
    "missing": None,
    "model": {"name": "pets", "version": 3, "tags": ["a", "b"]},
    "boxes": [{"x": 1, "y": 2.25}],
}
CONTENT = {
    "event": EVENT,
    "prediction": {"label": "dog", "confidence": 0.62, "scores": {"cat": 0.38, "dog": 0.62}},
    "reason": "confidence below 0.7",
    "_identity": {"loop_name": "n", "event_id": "e-17", "route": "r", "policy_version": "7"},
}

#: Label Studio's own types per object tag (label_studio/tasks/validation.py): an import whose
#: data lacks a key the configuration names, or has another type, is refused.
ACCEPTED = {"Text": (str, int, float, list), "HyperText": (str,), "Table": (dict, list, str)}


def rows_of(made: dict[str, Any]) -> dict[str, str]:
    return {row["Field"]: row["Value"] for row in made["data"][ROWS_FIELD]}


def test_the_config_names_only_data_every_task_has_in_the_types_label_studio_accepts() -> None:
    root = ET.fromstring(labeling_config(["cat", "dog"]))  # noqa: S314 - XML this test made
    named = {e.get("value", "")[1:]: e.tag for e in root.iter() if e.get("name") and e.get("value")}
    assert named == {
        IMAGE_FIELD: "HyperText", TEXT_FIELD: "Text", ROWS_FIELD: "Table"
    }  # fmt: skip
    plain = task("r-1", {"event": {}, "prediction": {"label": None}, "reason": ""})
    for made in (task("r-2", CONTENT, image_field="photo", text_field="caption"), plain):
        for key, tag in named.items():
            assert isinstance(made["data"][key], ACCEPTED[tag]), (key, tag)
    headers = [e.get("value") for e in root.iter("Header")]
    assert headers == [f"${SUMMARY_FIELD}", f"${SCORES_FIELD}"]
    choices = root.find("Choices")
    assert choices is not None
    assert choices.get("toName") == "review"  # the Table: what predictions and answers name
    assert root.find(f"Table[@name='{choices.get('toName')}']") is not None
    assert choice_result("dog")[0]["to_name"] == "review"


def test_the_fields_are_rows_of_dotted_names_and_readable_values_in_the_events_order() -> None:
    made = task("r", CONTENT)
    assert rows_of(made) == {
        "event_id": "e-17",
        "photo": "https://images.example/cat.png",
        "caption": "A cat on a mat.\nOr a small dog?",
        "amount": "1234.5",
        "ratio": "0.3",
        "count": "3",
        "flagged": "false",
        "missing": "—",
        "model.name": "pets",
        "model.version": "3",
        "model.tags": "a, b",
        "boxes.0.x": "1",
        "boxes.0.y": "2.25",
    }
    assert [row["Field"] for row in made["data"][ROWS_FIELD]][:3] == [
        "event_id",
        "photo",
        "caption",
    ]
    assert set(made["data"][ROWS_FIELD][0]) == {"Field", "Value"}  # the table's two columns


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.6234567, "0.6235"), (0.62, "0.62"), (1e-7, "1e-07"), (12.0, "12"), (12.5, "12.5"),
        (3.14159, "3.14"), (-0.5, "-0.5"), (2.5e20, "2.5e+20"), (float("nan"), "nan"),
        (12345678901234567890, "12345678901234567890"), (True, "true"), (None, "—"),
        ([], "—"), ({}, "—"), ([1, 0.25, "x"], "1, 0.25, x"), ("text", "text"),
    ],
)  # fmt: skip
def test_values_read_as_people_read_them(value: Any, shown: str) -> None:
    assert readable(value) == shown


def test_the_model_says_its_label_and_confidence_once_and_its_scores_once() -> None:
    data = task("r", CONTENT)["data"]
    assert data[SUMMARY_FIELD] == "Model: dog (confidence 0.62)"
    assert data[SCORES_FIELD] == "Scores: dog 0.62 · cat 0.38"
    shown = " ".join(
        str(value) for key, value in data.items() if key in (SUMMARY_FIELD, ROWS_FIELD)
    )
    assert shown.count("confidence") == 1
    bare = task("r", {**CONTENT, "prediction": {"label": "dog", "confidence": None}})["data"]
    assert (bare[SUMMARY_FIELD], bare[SCORES_FIELD]) == ("Model: dog", "")
    none = task("r", {**CONTENT, "prediction": {"label": None}})
    assert none["data"][SUMMARY_FIELD] == "Model: no label"
    assert "predictions" not in none


def test_the_model_label_is_the_pre_annotation_with_the_confidence_as_its_score() -> None:
    [prediction] = task("r", CONTENT)["predictions"]
    assert prediction["result"] == choice_result("dog")
    assert prediction["score"] == 0.62
    assert prediction["model_version"] == "7"


def test_the_configured_image_and_text_show_above_the_table_and_not_in_it() -> None:
    made = task("r", CONTENT, image_field="photo", text_field="caption")
    data = made["data"]
    assert data[TEXT_FIELD] == "A cat on a mat.\nOr a small dog?"
    assert data[IMAGE_FIELD].startswith('<img src="https://images.example/cat.png" alt="photo"')
    assert {"photo", "caption"}.isdisjoint(rows_of(made))
    nested = task("r", CONTENT, text_field="model.name")
    assert nested["data"][TEXT_FIELD] == "pets"
    assert "model.name" not in rows_of(nested)
    unset = task("r", CONTENT)["data"]
    assert (unset[IMAGE_FIELD], unset[TEXT_FIELD]) == ("", "")


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:image/png;base64,AAAA", "cat.png", 17, None]
)
def test_an_image_field_that_is_not_an_http_url_stays_a_row(url: Any) -> None:
    made = task("r", {**CONTENT, "event": {**EVENT, "photo": url}}, image_field="photo")
    assert made["data"][IMAGE_FIELD] == ""
    assert rows_of(made)["photo"] == readable(url)


def test_the_image_url_cannot_break_out_of_its_attribute() -> None:
    url = 'https://x.example/a.png" onerror="alert(1)'
    shown = task("r", {**CONTENT, "event": {"photo": url}}, image_field="photo")["data"]
    tag = shown[IMAGE_FIELD]
    assert 'src="https://x.example/a.png&quot; onerror=&quot;alert(1)"' in tag
    assert re.findall(r'\s(\w+)="', tag) == ["src", "alt", "referrerpolicy", "style"]


def test_the_table_shows_no_json_of_the_content_nor_its_identity() -> None:
    data = task("r", CONTENT)["data"]
    form = [data[SUMMARY_FIELD], data[SCORES_FIELD], data[TEXT_FIELD], data[IMAGE_FIELD]]
    form += [v for row in data[ROWS_FIELD] for v in row.values()]
    assert not any(mark in text for text in form for mark in ("{", "}", '":', "_identity"))
    assert data[NAME_FIELD] == "r"


def test_long_events_are_cut_to_what_a_person_reads_with_a_count_of_the_rest() -> None:
    event = {f"f{i}": "x" * (MAX_VALUE_CHARS + 50) for i in range(MAX_ROWS + 7)}
    rows = event_rows(event)
    assert len(rows) == MAX_ROWS + 1
    assert rows[-1] == {"Field": "…", "Value": "7 more field(s) not shown"}
    assert len(rows[0]["Value"]) == MAX_VALUE_CHARS
    assert rows[0]["Value"].endswith("…")


def test_the_task_shows_the_projection_the_router_sends() -> None:
    """``review.projection`` (review/content.py's ``project``) decides the fields: what it
    leaves out is not in the table."""
    projected = project(EVENT, ["event_id", "model.version", "photo"])
    made = task("r", {**CONTENT, "event": projected}, image_field="photo")
    assert rows_of(made) == {"event_id": "e-17", "model.version": "3"}
    assert made["data"][IMAGE_FIELD]


def test_image_and_text_fields_are_dotted_paths() -> None:
    settings = LabelStudioSettings(image_field="media.photo", text_field="caption")
    assert (settings.image_field, settings.text_field) == ("media.photo", "caption")
    for bad in ("", "a..b", ".a", "a b"):
        with pytest.raises(ValidationError, match="image_field"):
            LabelStudioSettings(image_field=bad)


def test_the_events_own_label_confidence_and_scores_show_only_in_the_model_lines() -> None:
    """With the whole event projected (the default), its prediction fields are not repeated."""
    event = {"event_id": "e", "label": "dog", "confidence": 0.62, "scores": {"dog": 0.62}}
    made = task("r", {**CONTENT, "event": event}, hidden={"label", "confidence", "scores"})
    assert rows_of(made) == {"event_id": "e"}
    nested = {"id": "e", "out": {"label": "dog", "p": 0.62, "x": 1}}
    rows = rows_of(task("r", {**CONTENT, "event": nested}, hidden={"out.label", "out.p"}))
    assert rows == {"id": "e", "out.x": "1"}


async def test_the_review_role_builds_tasks_from_its_settings_and_the_ingest_mapping() -> None:
    """review/app.py gives the backend ingest.mapping's prediction paths; the backend gives
    them, image_field and text_field to every task it imports."""
    settings = Settings(
        ingest={"mapping": {"label": "out.label", "confidence": "out.p", "scores": None}},
        review={
            "projection": [],
            "backend": {
                "name": "label-studio",
                "api_token": "t",
                "projects": {"general": {"project": "General"}},
                "image_field": "photo",
                "text_field": "caption",
            },
        },
        policies={"routes": [{"name": "general", "review_flow": "general",
                              "policy": {"type": "confidence", "below": 0.7}}]},
    )  # fmt: skip
    backend = build_backend(BackendContext(settings, ReviewMetrics(CollectorRegistry())))
    assert isinstance(backend, LabelStudioReviewBackend)
    fake = FakeLabelStudio()
    backend.client = fake  # type: ignore[assignment]
    await backend.open()
    event = {
        "id": "e",
        "out": {"label": "dog", "p": 0.62},
        "photo": "http://h/p.png",
        "caption": "c",
    }
    await backend.start("r-1", "general", {**CONTENT, "event": event})
    await backend.aclose()
    [stored] = fake.stored.values()
    assert {row["Field"] for row in stored["data"][ROWS_FIELD]} == {"id"}
    assert stored["data"][TEXT_FIELD] == "c"
    assert 'src="http://h/p.png"' in stored["data"][IMAGE_FIELD]
