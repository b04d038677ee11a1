"""What a review looks like in Label Studio: the labeling configuration, the task, the answers.

- **Labeling configuration** (:func:`labeling_config`): a review form, top to bottom::

      [instructions]                          Header (when given)
      Model: dog (confidence 0.62)            Header  $model_summary
      Scores: dog 0.62 · cat 0.38             Header  $model_scores (empty without scores)
      <the image>                             HyperText "image", $review_image_html (or empty)
      <the text to read>                      Text "text", $review_text (or empty)
      Field          | Value                  Table "review", $review_fields
      event_id       | e-17
      model.version  | 3
      (•) dog  ( ) cat                        Choices "label" over the route's labels

  One configuration fits every task: what a task shows comes from its data, so a project is
  made once per label set (the sandbox makes one per flow; ``python -m
  stream_router.labelstudio.tasks LABEL...`` prints it for a project made by hand), whatever
  ``review.projection``, ``image_field`` or ``text_field`` say.
- **Task** (:func:`task`): ``data`` holds the review's name (``review_name``, how a redelivered
  start finds the task it made), its tag (``review_tag``, :func:`task_tag`: how the router knows
  the task is one it made), the whole InputContent under ``content`` (``review/content.py``,
  the same object A2I receives; what :meth:`LabelStudioReviewBackend.fetch_result` reads back),
  and what the form shows: the projected event as rows of dotted field names and readable
  values (:func:`event_rows`), the model's label and confidence in one line, its scores in
  another. The event's own copies of those (``ingest.mapping``'s label, confidence and scores
  paths, which the backend is given) are left out of the table. The model's prediction goes
  with it as a Label Studio prediction carrying the model's confidence as its score, so
  reviewers see it pre-selected.
- **Image and text**: ``review.backend.image_field`` names a projected field holding an
  image URL (http or https; shown as the image, which the reviewer's browser loads) and
  ``text_field`` one holding text to read (shown as a block); each shows there instead of in
  the table. A value that does not fit (an image field that is not an http(s) URL, a text
  field that is not a string) stays in the table.
- **Tag** (:func:`task_tag`): ``v1:`` and the hex HMAC-SHA256, under the router's key
  (:func:`tag_key`), of the flow's and the review's name. Review names are predictable (the
  event id's prefix and a hash, ``naming.py``) and any project member can import a task, so a
  task under a review's name is the review's only when its tag verifies; a member who can read
  a tag cannot make one for another name or flow.
- **Answers** (:func:`answer_content`): an annotation's ``choices`` result becomes the content
  an A2I crowd-classifier answer has, ``{"label": {"label": "cat"}}`` (``{"labels": [...]}`` for
  several choices), so the answer path ``label.label`` and consolidation work unchanged;
  a text area's result becomes ``{name: text}``. It trusts its input: what Label Studio answers
  is checked first (``labelstudio/stored.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeGuard
from xml.sax.saxutils import quoteattr

import orjson

NAME_FIELD = "review_name"  #: task data key holding the review's name
TAG_FIELD = "review_tag"  #: task data key holding the router's tag of the task (task_tag)
CONTENT_FIELD = "content"  #: task data key holding the InputContent
MODEL_FIELD = "model_label"  #: task data key of the model's label
SUMMARY_FIELD = "model_summary"  #: task data key of "Model: dog (confidence 0.62)"
SCORES_FIELD = "model_scores"  #: task data key of "Scores: dog 0.62 · cat 0.38" (or "")
ROWS_FIELD = "review_fields"  #: task data key of the event's rows (``Field``, ``Value``)
IMAGE_FIELD = "review_image_html"  #: task data key of the image (HTML, or "")
TEXT_FIELD = "review_text"  #: task data key of the text to read (or "")
CHOICES = "label"  #: name of the Choices element: the first key of the answer path
SHOWN = "review"  #: name of the Table element the choices refer to
MAX_ROWS = 200  #: event fields shown at most; a last row says how many more there are
MAX_VALUE_CHARS = 1_000  #: characters of one value shown at most (the rest is "…")
NOTHING = "—"  #: how a null (or empty list or object) value shows


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
        f'  <Header value="${SUMMARY_FIELD}" size="4"/>\n'
        f'  <Header value="${SCORES_FIELD}" size="5"/>\n'
        f'  <HyperText name="image" value="${IMAGE_FIELD}" inline="true"'
        ' selectionEnabled="false"/>\n'
        f'  <Text name="text" value="${TEXT_FIELD}" selectionEnabled="false"/>\n'
        f'  <Table name="{SHOWN}" value="${ROWS_FIELD}"/>\n'
        f'  <Choices name="{CHOICES}" toName="{SHOWN}" choice="single-radio" showInline="true"'
        ' required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def task(
    name: str,
    content: Mapping[str, Any],
    *,
    image_field: str | None = None,
    text_field: str | None = None,
    hidden: Collection[str] = (),
    tag: str | None = None,
) -> dict[str, Any]:
    """The task importing review ``name`` of InputContent ``content`` (see the module doc);
    ``image_field`` and ``text_field`` are dotted paths in the projected event, ``hidden`` the
    paths of the model's label, confidence and scores (shown once, in the model's lines),
    ``tag`` the review's :func:`task_tag` (the backend always gives it)."""
    prediction = content.get("prediction") or {}
    label = prediction.get("label")
    confidence = prediction.get("confidence")
    event = content.get("event")
    event = event if isinstance(event, Mapping) else {}
    image = _at(event, image_field)
    if not (isinstance(image, str) and image.lower().startswith(("http://", "https://"))):
        image = None
    text = _at(event, text_field)
    if not isinstance(text, str):
        text = None
    skipped = {path for path, shown in ((image_field, image), (text_field, text)) if path and shown}
    item: dict[str, Any] = {
        "data": {
            NAME_FIELD: name,
            CONTENT_FIELD: dict(content),
            MODEL_FIELD: "" if label is None else str(label),
            SUMMARY_FIELD: model_summary(label, confidence),
            SCORES_FIELD: model_scores(prediction.get("scores")),
            ROWS_FIELD: event_rows(event, skip=skipped | set(hidden)),
            IMAGE_FIELD: _image_html(image, image_field) if image else "",
            TEXT_FIELD: text or "",
        }
    }
    if tag is not None:
        item["data"][TAG_FIELD] = tag
    if label is not None:
        item["predictions"] = [
            {
                "model_version": str((content.get("_identity") or {}).get("policy_version", "")),
                "score": float(confidence) if _is_number(confidence) else None,
                "result": choice_result(str(label)),
            }
        ]
    return item


def tag_key(secret: str) -> bytes:
    """The key of :func:`task_tag`, derived from ``secret`` (kept apart from the secret's other
    uses: no tag is an HMAC under the secret itself)."""
    label = b"stream-router/label-studio task tag key"
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def task_tag(key: bytes, flow: str, name: str) -> str:
    """The tag of review ``name`` of ``flow`` under ``key``: ``v1:`` + hex HMAC-SHA256."""
    message = orjson.dumps(["stream-router/label-studio task", flow, name])
    return "v1:" + hmac.new(key, message, hashlib.sha256).hexdigest()


def tag_verifies(key: bytes, flow: str, name: str, tag: str | None) -> bool:
    """Whether ``tag`` is review ``name``'s of ``flow`` under ``key`` (in constant time)."""
    if tag is None:
        return False
    return hmac.compare_digest(tag.encode(), task_tag(key, flow, name).encode())


def model_summary(label: Any, confidence: Any) -> str:
    """``Model: dog (confidence 0.62)``; ``Model: dog`` without a confidence."""
    said = "no label" if label is None else str(label)
    if _is_number(confidence):
        return f"Model: {said} (confidence {readable(confidence)})"
    return f"Model: {said}"


def model_scores(scores: Any) -> str:
    """``Scores: dog 0.62 · cat 0.38`` (highest first), or "" when there are none."""
    if not isinstance(scores, Mapping) or not scores:
        return ""
    ranked = sorted(scores.items(), key=lambda item: -item[1] if _is_number(item[1]) else math.inf)
    return "Scores: " + " · ".join(f"{label} {readable(score)}" for label, score in ranked)


def event_rows(event: Mapping[str, Any], *, skip: Collection[str] = ()) -> list[dict[str, str]]:
    """The event as table rows ``{"Field": dotted name, "Value": readable value}``, in the
    event's order: nested objects (and lists holding objects or lists) flatten into dotted
    names (``boxes.0.x``), a list of plain values joins into one value; fields in ``skip``
    (and what they hold) are left out, and rows past :data:`MAX_ROWS` are counted in a last
    row."""
    rows: list[dict[str, str]] = []

    def add(path: str, value: Any) -> None:
        if path in skip:
            return
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                add(f"{path}.{key}", inner)
        elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
            for index, inner in enumerate(value):
                add(f"{path}.{index}", inner)
        else:
            rows.append({"Field": path, "Value": _clipped(readable(value))})

    for key, value in event.items():
        add(str(key), value)
    if len(rows) > MAX_ROWS:
        more = len(rows) - MAX_ROWS
        rows = [*rows[:MAX_ROWS], {"Field": "…", "Value": f"{more} more field(s) not shown"}]
    return rows


def readable(value: Any) -> str:
    """One value as a person reads it: numbers rounded (``0.6235``, ``12.5``, ``3``), true or
    false, ``—`` for nothing, plain values of a list joined by commas; text as it is."""
    if value is None or isinstance(value, Mapping) or value in ([], ()):
        return NOTHING  # an empty object, as event_rows flattens the others
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)  # ids stay exact
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list | tuple):
        return ", ".join(readable(v) for v in value)
    return str(value)


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


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1e15:
        return f"{value:.4g}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _at(event: Mapping[str, Any], path: str | None) -> Any:
    """The value at dotted ``path`` of the (projected, nested) event; None if it has none."""
    if not path:
        return None
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _image_html(url: str, field: str | None) -> str:
    """The image as HTML for the HyperText element (every value escaped)."""
    return (
        f'<img src="{html.escape(url, quote=True)}" alt="{html.escape(field or "", quote=True)}"'
        ' referrerpolicy="no-referrer" style="max-width:100%;max-height:480px"/>'
    )


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a small command
    """``python -m stream_router.labelstudio.tasks LABEL...``: print the labeling configuration
    of a review project choosing one of the labels (for a project made by hand)."""
    labels = list(sys.argv[1:] if argv is None else argv)
    if not labels:
        sys.exit("usage: python -m stream_router.labelstudio.tasks LABEL [LABEL...]")
    print(labeling_config(labels), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
