"""The Label Studio backend's pure parts: labeling configuration, tasks, answers, settings."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from stream_router.errors import ConfigError
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.labelstudio.tasks import (
    CONTENT_FIELD,
    MODEL_FIELD,
    NAME_FIELD,
    answer_content,
    choice_result,
    labeling_config,
    task,
)
from stream_router.review.backend import ReviewResult, WorkerAnswer
from stream_router.review.consolidate import consolidate
from stream_router.settings import Settings, WatchersSettings, load_settings

CONTENT = {
    "event": {"text": "a photo"},
    "prediction": {"label": "cat", "confidence": 0.42, "scores": None},
    "reason": "low",
    "_identity": {"loop_name": "n", "event_id": "e", "route": "r", "policy_version": "7"},
}


def test_the_labeling_config_offers_each_label_once_and_escapes_them() -> None:
    config = labeling_config(["cat", 'say "hi" & <go>'], instructions="Pick one")
    root = ET.fromstring(config)  # noqa: S314 - XML this test made
    choices = root.find("Choices")
    assert choices is not None
    assert choices.get("name") == "label"
    assert choices.get("toName") == "review"
    assert [c.get("value") for c in choices.findall("Choice")] == ["cat", 'say "hi" & <go>']
    assert root.find("Text") is not None
    with pytest.raises(ValueError, match="repeat"):
        labeling_config(["cat", "cat"])
    with pytest.raises(ValueError, match="at least one"):
        labeling_config([])


def test_a_task_carries_the_name_the_content_and_the_prediction_with_its_score() -> None:
    made = task("review-1", CONTENT)
    data = made["data"]
    assert data[NAME_FIELD] == "review-1"
    assert data[CONTENT_FIELD] == CONTENT
    assert data[MODEL_FIELD] == "cat"
    assert "_identity" not in data["review_text"]  # what reviewers read leaves it out
    [prediction] = made["predictions"]
    assert prediction["score"] == 0.42
    assert prediction["model_version"] == "7"
    assert prediction["result"] == choice_result("cat")


def test_a_task_without_a_model_label_has_no_prediction() -> None:
    made = task("review-2", {**CONTENT, "prediction": {"label": None}})
    assert "predictions" not in made
    assert made["data"][MODEL_FIELD] == ""


@pytest.mark.parametrize(
    ("result", "content"),
    [
        (choice_result("dog"), {"label": {"label": "dog"}}),
        (
            [{"from_name": "tags", "type": "choices", "value": {"choices": ["a", "b"]}}],
            {"tags": {"labels": ["a", "b"]}},
        ),
        ([{"from_name": "note", "type": "textarea", "value": {"text": ["ok"]}}], {"note": "ok"}),
        ([{"from_name": "box", "type": "rectanglelabels", "value": {"x": 1}}], {"box": {"x": 1}}),
        ([], {}),
    ],
)
def test_annotation_results_become_a2i_shaped_answers(
    result: list[dict[str, Any]], content: dict[str, Any]
) -> None:
    assert answer_content(result) == content


def test_label_studio_answers_consolidate_like_a2i_answers() -> None:
    answers = tuple(
        WorkerAnswer(str(i), answer_content(choice_result(label)), None, float(i), None)
        for i, label in enumerate(["dog", "cat", "dog"])
    )
    consolidation = consolidate(ReviewResult("n", "general", answers))
    assert consolidation.label == "dog"
    assert consolidation.agreement == pytest.approx(2 / 3)


def label_studio_config(**review: Any) -> dict[str, Any]:
    return {
        "policies": {
            "routes": [
                {"name": "general", "review_flow": "general",
                 "policy": {"type": "confidence", "below": 0.7}},
            ]
        },
        "review": {
            "backend": {"name": "label-studio", "api_token": "t",
                        "projects": {"general": {"project": "General"}}},
            **review,
        },
    }  # fmt: skip


def test_label_studio_settings_are_checked_at_start_naming_the_field() -> None:
    assert Settings(**label_studio_config()).review.backend.name == "label-studio"
    unknown = label_studio_config(escalation_flows={"general": "experts"})
    with pytest.raises(ValueError, match=r"review\.escalation_flows\.general"):
        Settings(**unknown)
    no_token = label_studio_config()
    del no_token["review"]["backend"]["api_token"]
    with pytest.raises(ValueError, match=r"review\.backend\.api_token"):
        Settings(**no_token)
    routed = label_studio_config()
    routed["policies"]["routes"][0]["review_flow"] = "arn:aws:sagemaker:x"
    with pytest.raises(ValueError, match=r"policies\.routes\.0\.review_flow"):
        Settings(**routed)


def test_each_backend_has_its_own_completion_signals() -> None:
    assert WatchersSettings().active("a2i") == ("eventbridge", "s3-output", "reconciler")
    assert WatchersSettings().active("label-studio") == ("webhook", "reconciler")
    with pytest.raises(ConfigError, match="not completion signals of review backend label"):
        WatchersSettings(enabled=["eventbridge"]).active("label-studio")
    with pytest.raises(ConfigError, match="not completion signals of review backend a2i"):
        WatchersSettings(enabled=["webhook"]).active("a2i")


def test_the_example_label_studio_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_ROUTER_REVIEW__BACKEND__API_TOKEN", "from-the-environment")
    settings = load_settings(Path("config/router-label-studio.yaml"))
    section = settings.review.backend
    assert isinstance(section, LabelStudioSettings)
    assert section.api_token is not None
    assert section.api_token.get_secret_value() == "from-the-environment"
    flows = {route.review_flow for route in settings.policies.routes}
    assert flows <= set(section.projects)
    assert settings.moved_keys() == []
