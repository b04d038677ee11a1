"""What a review looks like in Label Studio: the labeling configuration, the task, the answers.

- **Labeling configuration** (:func:`labeling_config`): the review input as text, the model's
  label in a header, and one single-choice ``<Choices name="label">`` over the route's labels.
  Projects made from it (the sandbox makes one per flow) fit every function below.
- **Task** (:func:`task`): ``data`` holds the review's name (``review_name``, how a redelivered
  start finds the task it made), the text shown, the model's label and the whole InputContent
  under ``content`` (``review/content.py``, the same object A2I receives); the model's
  prediction goes with it as a Label Studio prediction carrying the model's confidence as its
  score, so reviewers see it pre-selected.
- **Answers** (:func:`answer_content`): an annotation's ``choices`` result becomes the content
  an A2I crowd-classifier answer has, ``{"label": {"label": "cat"}}`` (``{"labels": [...]}`` for
  several choices), so the answer path ``label.label`` and consolidation work unchanged;
  a text area's result becomes ``{name: text}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

NAME_FIELD = "review_name"  #: task data key holding the review's name
CONTENT_FIELD = "content"  #: task data key holding the InputContent
TEXT_FIELD = "review_text"  #: task data key of the text reviewers read
MODEL_FIELD = "model_label"  #: task data key of the model's label
CHOICES = "label"  #: name of the Choices element: the first key of the answer path
SHOWN = "review"  #: name of the Text element the choices refer to


def labeling_config(labels: Sequence[str], *, instructions: str = "") -> str:
    """The XML labeling configuration of a review project choosing one of ``labels``."""
    if not labels:
        raise ValueError("a review project needs at least one label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {list(labels)}")
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    note = f'  <Header value={quoteattr(instructions)} size="5"/>\n' if instructions else ""
    return (
        "<View>\n"
        f"{note}"
        f'  <Header value="The model says: ${MODEL_FIELD}"/>\n'
        f'  <Text name="{SHOWN}" value="${TEXT_FIELD}"/>\n'
        f'  <Choices name="{CHOICES}" toName="{SHOWN}" choice="single-radio" showInline="true"'
        ' required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def task(name: str, content: Mapping[str, Any]) -> dict[str, Any]:
    """The task importing review ``name`` of InputContent ``content`` (see the module doc)."""
    prediction = content.get("prediction") or {}
    label = prediction.get("label")
    shown = {key: value for key, value in content.items() if not key.startswith("_")}
    item: dict[str, Any] = {
        "data": {
            NAME_FIELD: name,
            TEXT_FIELD: orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode(),
            MODEL_FIELD: "" if label is None else str(label),
            CONTENT_FIELD: dict(content),
        }
    }
    if label is not None:
        score = prediction.get("confidence")
        item["predictions"] = [
            {
                "model_version": str((content.get("_identity") or {}).get("policy_version", "")),
                "score": float(score) if isinstance(score, int | float) else None,
                "result": [
                    {
                        "from_name": CHOICES,
                        "to_name": SHOWN,
                        "type": "choices",
                        "value": {"choices": [str(label)]},
                    }
                ],
            }
        ]
    return item


def choice_result(label: str) -> list[dict[str, Any]]:
    """An annotation result choosing ``label`` in a project of :func:`labeling_config`."""
    return [{"from_name": CHOICES, "to_name": SHOWN, "type": "choices",
             "value": {"choices": [label]}}]  # fmt: skip


def answer_content(result: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An annotation's result as answer content (see the module doc); unknown types are kept
    under their element name as Label Studio wrote them."""
    content: dict[str, Any] = {}
    for region in result:
        name = str(region.get("from_name", ""))
        value = region.get("value") or {}
        kind = region.get("type")
        if kind == "choices":
            chosen = list(value.get("choices") or [])
            content[name] = {"label": chosen[0]} if len(chosen) == 1 else {"labels": chosen}
        elif kind == "textarea":
            texts = list(value.get("text") or [])
            content[name] = texts[0] if len(texts) == 1 else texts
        else:
            content[name] = dict(value)
    return content
