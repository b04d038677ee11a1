"""A2I worker task templates: render one as A2I does, find its crowd elements, answer them.

- :func:`render`: the template with ``task.input`` = the loop's InputContent, HTML-autoescaped,
  with A2I's filters (``to_json``, ``skip_autoescape``, ``grant_read_access``) next to
  Liquid's standard ones (``escape``, ``escape_once``, ...), under :class:`RenderLimits`;
- :func:`elements`: the ``crowd-*`` elements of a rendered page, in document order;
- :func:`answer_paths`: the dotted paths into ``answerContent`` that those elements produce;
- :func:`check`: what A2I would refuse (errors) and likely mistakes (warnings);
- :func:`simulate_answer`: the ``answerContent`` a simulated worker submits for the page.

Any failure to render is a :class:`TemplateError` (with the template line when known).

``answerContent`` per element: the keys are ``name`` attributes and an element left empty is
absent. Each entry follows the "Output" section of the element's page in AWS's developer guide,
``doc_source/sms-ui-template-<page>.md`` (page in brackets); another engineer implements the
same table in the browser:

- crowd-classifier, ``classifier`` [crowd-classifier]; crowd-image-classifier,
  ``image_classifier`` [crowd-image-classifier]: ``{name: {"label": "x"}}`` (the image
  classifier adds ``workerComment`` when its worker-comment region is used: never simulated)
- crowd-classifier-multi-select, ``multi_select`` [crowd-classifier-multi-select];
  crowd-image-classifier-multi-select, ``image_multi_select`` [crowd-image-classifier-multi]:
  ``{name: {"labels": ["x", "y"]}}``
- crowd-input, ``input`` [crowd-input]: ``{name: "text"}``, a string whatever its ``type``
  (the page: "the text that was entered"; a number input gives ``"42"``)
- crowd-text-area, ``text_area`` [crowd-text-area]: ``{name: "text"}``, line breaks as ``\\n``
- crowd-checkbox, ``checkbox`` [crowd-checkbox]; crowd-toggle-button, ``toggle_button``
  [crowd-toggle-button]: ``{name: {value: true|false}}``, ``value`` defaulting to ``"on"``;
  boxes sharing a name share one object
- crowd-radio-group, ``radio_group`` [crowd-radio-group, crowd-radio-button]: each
  crowd-radio-button child adds ``{button name: {button value: bool}}`` at the top level, one of
  them true, ``value`` defaulting to ``"on"``; a button outside a group (``radio_button``)
  answers like a checkbox
- crowd-slider, ``slider`` [crowd-slider]: ``{name: number}`` (the page has no Output section:
  assumed)
- crowd-bounding-box, ``bounding_box`` [crowd-bounding-box]: ``{name: {"boundingBoxes":
  [{"height", "label", "left", "top", "width"}], "inputImageProperties": {"height",
  "width"}}}``, in pixels

Paths only (recognised, not simulated; :func:`check` says so): crowd-keypoint
(``keypoints``), crowd-polygon (``polygons``), crowd-line (``lines``), crowd-polyline
(``polylines``), each with ``inputImageProperties``; crowd-instance-segmentation
(``instances``, ``labeledImage``, ``inputImageProperties``); crowd-semantic-segmentation
(``labelMappings``, ``labeledImage``, ``inputImageProperties``); crowd-entity-annotation
(``entities``); and A2I's own crowd-textract-analyze-document and
crowd-rekognition-detect-moderation-labels, whose answers sit under fixed keys
(``AWS/Textract/AnalyzeDocument/Forms/V1``, ``AWS/Rekognition/DetectModerationLabels/Image/V3``)
rather than a name.

Rendering (``a2i-custom-templates.md``, ``sms-custom-templates-step2.md``): values are
HTML-escaped unless marked safe; ``escape`` escapes (even a ``to_json`` result, which is how
AWS's samples write ``categories="{{ task.input.labels | to_json | escape }}"``); ``escape_once``
does not double-escape; ``skip_autoescape`` outputs as is; ``grant_read_access`` turns an S3 URI
into a pre-signed HTTPS URL. Limits (``UiTemplate.Content``, botocore's model): 1 to 128,000
characters.

Assumptions where the docs are silent or disagree:

- ``to_json``'s result is autoescaped like any output (the docs' filter example prints its
  quotes raw, but their bounding-box and semantic-segmentation pages put ``{{ x | to_json }}``
  in double-quoted attributes, which only works escaped, and so does this project's own
  ``config/review-task.liquid.html``). ``<``, ``>``, ``&`` and ``'`` inside the JSON are also
  written as ``\\u003c``-style escapes, so ``{{ x | to_json | skip_autoescape }}`` is safe in a
  ``<script>`` block; ``| escape`` after it escapes once (AWS's classifier samples).
- ``grant_read_access`` takes ``s3://bucket/key`` and also ``https://s3[.region].amazonaws.com/
  bucket/key`` or ``https://bucket.s3[.region].amazonaws.com/key`` (AWS's Textract sample
  passes the path-style URL); anything else, or no ``presign`` callback, passes unchanged.
- String literals written in the template are escaped too (``{{ "Tom & Jerry" }}`` gives
  ``Tom &amp; Jerry``, as the docs' example shows); python-liquid would trust them, so
  :func:`_escaped_literal` evaluates string literals for this environment.
- An undefined variable renders empty; an unknown filter is an error (strict filters).
- The crowd-html-elements ``<script>`` tag is not required: the docs add it only to develop a
  template outside the console (A2I's worker portal loads the elements itself), so its absence
  is neither an error nor a warning.
- A page without ``<crowd-form>`` is an error (every documented template is wrapped in one, and
  the form is what submits the answers).
- ``categories``/``labels`` are a JSON array of strings or a list of quoted strings such as
  ``['a', 'b']`` (as in AWS's samples); anything else (objects, JS literals) is unparsable.
- Slider ``min``/``max``/``step`` default to 0, 100 and 1 (HTML's range input). The image a
  bounding box is drawn on is not loaded: its size is taken as 800 x 533 pixels (the size in
  the docs' sample outputs).

Untrusted templates and inputs: python-liquid's output, local namespace and context depth limits
apply, plus what its loop limit leaves open, counted across the whole render: loop iterations
(including filters given a range, and the items a ``reversed``/``offset:`` loop skips or copies
before it starts) and a wall-clock deadline checked at every node. The last two hook into
python-liquid 2.3's ``RenderContext`` (``filter``, ``loop``, ``stopindex``, ``disabled_tags``);
the tests of the limits break if an upgrade moves them.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any, cast

import orjson
from liquid import Environment, Markup
from liquid.builtin.expressions.primitive import StringLiteral
from liquid.builtin.tags.for_tag import ForLoop
from liquid.builtin.tags.tablerow_tag import TableRow
from liquid.context import RenderContext
from liquid.exceptions import (
    FilterError,
    LiquidError,
    LiquidSyntaxError,
    LoopIterationLimitError,
    ResourceLimitError,
)
from liquid.stringify import to_liquid_string
from liquid.template import BoundTemplate
from liquid.token import Token
from liquid.undefined import is_undefined

MAX_TEMPLATE_CHARS = 128_000
IMAGE_WIDTH_PX = 800
IMAGE_HEIGHT_PX = 533

_IMAGE = "inputImageProperties"
_PARTS: dict[str, tuple[str, ...]] = {  # kind -> keys under its name in answerContent
    "classifier": ("label",),
    "image_classifier": ("label",),
    "multi_select": ("labels",),
    "image_multi_select": ("labels",),
    "input": (),
    "text_area": (),
    "slider": (),
    "bounding_box": ("boundingBoxes", _IMAGE),
    "keypoint": ("keypoints", _IMAGE),
    "polygon": ("polygons", _IMAGE),
    "line": ("lines", _IMAGE),
    "polyline": ("polylines", _IMAGE),
    "instance_segmentation": ("instances", "labeledImage", _IMAGE),
    "semantic_segmentation": ("labelMappings", "labeledImage", _IMAGE),
    "entity_annotation": ("entities",),
}
_FIXED_KEYS = {
    "textract": "AWS/Textract/AnalyzeDocument/Forms/V1.blocks",
    "rekognition": "AWS/Rekognition/DetectModerationLabels/Image/V3.ModerationLabels",
}
_DISPLAY = (
    "alert", "badge", "button", "card", "fab", "icon-button", "instructions", "modal", "tab",
    "tabs", "toast",
)  # fmt: skip
_KINDS = {f"crowd-{kind.replace('_', '-')}": kind for kind in _PARTS if "multi" not in kind}
_KINDS |= {f"crowd-{tag}": "display" for tag in _DISPLAY} | {
    "crowd-classifier-multi-select": "multi_select",
    "crowd-image-classifier-multi-select": "image_multi_select",
    "crowd-checkbox": "checkbox",
    "crowd-toggle-button": "toggle_button",
    "crowd-radio-group": "radio_group",
    "crowd-radio-button": "radio_button",
    "crowd-textract-analyze-document": "textract",
    "crowd-rekognition-detect-moderation-labels": "rekognition",
    "crowd-form": "form",
}
SINGLE_CHOICE = frozenset({"classifier", "image_classifier"})
MULTI_CHOICE = frozenset({"multi_select", "image_multi_select"})
BOOLEAN = frozenset({"checkbox", "toggle_button", "radio_button"})
TRUTH_CAPABLE = SINGLE_CHOICE | MULTI_CHOICE | {"radio_group", "bounding_box"}
SIMULATED = TRUTH_CAPABLE | BOOLEAN | {"input", "text_area", "slider"}
_NO_ANSWER = frozenset({"form", "display", "unknown"})


class TemplateError(Exception):
    """The template cannot be rendered: its size, bad Liquid, a limit reached, a filter failed.

    ``reason`` says what; ``line`` is the template line (1-based) when known.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one render, so an untrusted template or input cannot hang or exhaust memory."""

    max_loop_iterations: int = 100_000
    max_output_bytes: int = 16 * 1024 * 1024
    max_locals_bytes: int = 16 * 1024 * 1024
    max_context_depth: int = 30
    timeout_s: float = 5.0


DEFAULT_LIMITS = RenderLimits()


class _Context(RenderContext):
    """python-liquid's render context, counting loop work across the render, with a deadline."""

    @property
    def _a2i(self) -> _A2IEnvironment:
        return cast(_A2IEnvironment, self.env)

    @property
    def disabled_tags(self) -> list[str]:
        self._a2i.check_deadline()  # read before each node renders: python-liquid's node hook
        return self._disabled

    @disabled_tags.setter
    def disabled_tags(self, value: list[str]) -> None:
        self._disabled = value

    @contextmanager
    def loop(
        self, namespace: Mapping[str, object], forloop: ForLoop | TableRow
    ) -> Iterator[RenderContext]:
        self._a2i.spend(forloop.length)
        with super().loop(namespace, forloop) as context:
            yield context

    def stopindex(self, key: str, index: int | None = None) -> int:
        if index is not None:  # a slice's end, set before reversed/offset copy or skip to it
            self._a2i.afford(index)
        return super().stopindex(key, index)

    def filter(self, name: str, token: Token | None) -> Callable[..., object]:
        func, env = super().filter(name, token), self._a2i

        def bounded(left: object, *args: object, **kwargs: object) -> object:
            for value in (left, *args, *kwargs.values()):
                if isinstance(value, range):
                    env.spend(len(value))
            env.check_deadline()
            return func(left, *args, **kwargs)

        return bounded


class _Template(BoundTemplate):
    context_class = _Context


class _A2IEnvironment(Environment):
    template_class = _Template

    def __init__(self, limits: RenderLimits, presign: Callable[[str], str] | None) -> None:
        super().__init__(autoescape=True, strict_filters=True)
        self.limits = limits
        self.iterations = 0
        self.deadline = time.monotonic() + limits.timeout_s
        self.add_filter("to_json", _to_json)
        self.add_filter("skip_autoescape", _skip_autoescape)
        self.add_filter("grant_read_access", lambda value: _grant_read_access(value, presign))

    def afford(self, iterations: int) -> None:
        if self.iterations + iterations > self.limits.max_loop_iterations:
            raise LoopIterationLimitError(
                f"loop iteration limit reached ({self.limits.max_loop_iterations} in all)",
                token=None,
            )

    def spend(self, iterations: int) -> None:
        self.afford(iterations)
        self.iterations += iterations
        self.check_deadline()

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise ResourceLimitError(f"rendering took over {self.limits.timeout_s} s", token=None)


@lru_cache(maxsize=8)
def _environment_class(limits: RenderLimits) -> type[_A2IEnvironment]:
    class Limited(_A2IEnvironment):
        loop_iteration_limit = limits.max_loop_iterations
        output_stream_limit = limits.max_output_bytes
        local_namespace_limit = limits.max_locals_bytes
        context_depth_limit = limits.max_context_depth

    return Limited


_trusted_literal = StringLiteral.evaluate


def _escaped_literal(self: StringLiteral, context: RenderContext) -> str | Markup:
    """A string literal of an A2I template is plain text, autoescaped on output as A2I does;
    other environments keep python-liquid's behaviour (literals are trusted markup). The
    parser builds ``StringLiteral`` directly, so its ``evaluate`` is where this can be said."""
    if isinstance(context.env, _A2IEnvironment):
        return self.value
    return _trusted_literal(self, context)


StringLiteral.evaluate = _escaped_literal  # type: ignore[method-assign]

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}
_S3_PATH_STYLE = re.compile(r"https?://s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com/([^/?#]+)/([^?#]+)")
_S3_VIRTUAL = re.compile(r"https?://([^/?#]+?)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com/([^?#]+)")


def _json_default(value: object) -> object:
    if is_undefined(value):
        return None
    return list(value) if isinstance(value, range) else str(value)


def _to_json(value: object) -> str:
    """JSON of ``value``; not marked safe, so autoescaping applies (see the module doc)."""
    text = json.dumps(value, ensure_ascii=False, default=_json_default)
    for char, code in _JSON_ESCAPES.items():
        text = text.replace(char, code)
    return text


def _skip_autoescape(value: object) -> Markup:
    return Markup(to_liquid_string(value, autoescape=False))


def s3_uri(url: str) -> str | None:
    """``s3://bucket/key`` for a URL ``grant_read_access`` pre-signs, else None."""
    url = url.strip()
    if url.startswith("s3://") and "/" in url[5:]:
        return url
    match = _S3_PATH_STYLE.fullmatch(url) or _S3_VIRTUAL.fullmatch(url)
    return f"s3://{match[1]}/{match[2]}" if match else None


def _grant_read_access(value: object, presign: Callable[[str], str] | None) -> str:
    text = to_liquid_string(value, autoescape=False)
    uri = s3_uri(text)
    if uri is None or presign is None:
        return text
    try:
        return presign(uri)
    except Exception as exc:
        raise FilterError(f"grant_read_access: cannot presign {uri}: {exc}", token=None) from exc


def render(
    template: str,
    task_input: Mapping[str, Any],
    *,
    presign: Callable[[str], str] | None = None,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> str:
    """The HTML A2I shows a worker for ``template`` and InputContent ``task_input``.

    ``presign("s3://bucket/key")`` returns the URL ``grant_read_access`` outputs.
    """
    if not 1 <= len(template) <= MAX_TEMPLATE_CHARS:
        raise TemplateError(
            f"the template has {len(template)} characters; A2I takes 1 to {MAX_TEMPLATE_CHARS}"
        )
    env = _environment_class(limits)(limits, presign)
    try:
        return env.from_string(template).render(task={"input": task_input})
    except LiquidError as exc:
        token, line, reason = exc.token, None, str(exc.message)
        if token is not None and token.start_index >= 0:
            line = token.source.count("\n", 0, token.start_index) + 1
        elif isinstance(exc, LiquidSyntaxError):  # e.g. a block left open
            line, reason = template.count("\n") + 1, f"{reason} at the end of the template"
        raise TemplateError(reason, line) from exc


# -- elements ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RadioButton:
    """A crowd-radio-button inside a radio group: answers ``{name: {value: checked}}``."""

    name: str | None
    value: str
    line: int


@dataclass(frozen=True)
class CrowdElement:
    """One ``crowd-*`` element of a rendered page and what its answer depends on.

    ``kind``: a kind of the module docstring, ``form``, ``display`` (answers nothing) or
    ``unknown``. ``categories``/``labels``: None when absent or unparsable. ``value``: the
    property name of a checkbox-like element. ``line``: its line in the rendered HTML.
    """

    tag: str
    kind: str
    name: str | None
    line: int
    in_form: bool
    required: bool = False
    self_closed: bool = False
    categories: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    value: str | None = None
    input_type: str | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    buttons: tuple[RadioButton, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()

    def attribute(self, name: str, default: str | None = None) -> str | None:
        return dict(self.attributes).get(name, default)


_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_QUOTED_LIST = re.compile(rf"\[\s*(?:(?:{_QUOTED})\s*(?:,\s*(?:{_QUOTED})\s*)*,?\s*)?\]", re.DOTALL)


def parse_categories(text: str | None) -> tuple[str, ...] | None:
    """A ``categories``/``labels`` value: a JSON array or a list of quoted strings; else None."""
    if text is None:
        return None
    try:
        items = orjson.loads(text)
    except ValueError:
        if not _QUOTED_LIST.fullmatch(text.strip()):
            return None
        quoted = re.findall(_QUOTED, text)
        return tuple(re.sub(r"\\(.)", r"\1", q[1:-1], flags=re.DOTALL) for q in quoted)
    if not isinstance(items, list) or not all(isinstance(i, str | int | float) for i in items):
        return None
    return tuple(str(item) for item in items)


def _slider_bounds(element: CrowdElement) -> tuple[float, float, float]:
    """min, max and step, defaulting to 0, 100 and 1 (HTML's range input: assumed)."""
    given = (element.min, element.max, element.step)
    low, high, step = (d if v is None else v for v, d in zip(given, (0.0, 100.0, 1.0), strict=True))
    return low, high, step


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _element(
    tag: str, attrs: list[tuple[str, str | None]], line: int, in_form: bool, closed: bool
) -> CrowdElement:
    kind = _KINDS.get(tag, "unknown")
    found: dict[str, str | None] = {}
    for key, value in attrs:
        found.setdefault(key, value)  # of a repeated attribute the first wins, as in browsers
    element = CrowdElement(
        tag, kind, found.get("name"), line, in_form, "required" in found, closed,
        attributes=tuple(found.items()),
    )  # fmt: skip
    if kind in SINGLE_CHOICE | MULTI_CHOICE:
        return replace(element, categories=parse_categories(found.get("categories")))
    if kind == "bounding_box":
        return replace(element, labels=parse_categories(found.get("labels")))
    if kind in BOOLEAN:
        return replace(element, value=found.get("value") or "on")
    if kind == "input":
        return replace(element, input_type=(found.get("type") or "text").lower())
    if kind == "slider":
        low, high, step = (_number(found.get(key)) for key in ("min", "max", "step"))
        return replace(element, min=low, max=high, step=step)
    return element


class _ElementParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[CrowdElement] = []
        self.form_depth = 0
        self.group: tuple[int, list[RadioButton]] | None = None  # open radio group

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)
        self.handle_endtag(tag)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        if not tag.startswith("crowd-"):
            return
        line = self.getpos()[0]
        element = _element(tag, attrs, line, self.form_depth > 0, closed)
        if tag == "crowd-radio-button" and self.group is not None:
            self.group[1].append(RadioButton(element.name, element.value or "on", line))
            return
        if tag == "crowd-radio-group":
            self._close_group()
            self.group = (len(self.found), [])
        self.found.append(element)
        self.form_depth += tag == "crowd-form"

    def handle_endtag(self, tag: str) -> None:
        if tag == "crowd-form":
            self.form_depth = max(0, self.form_depth - 1)
        elif tag == "crowd-radio-group":
            self._close_group()

    def _close_group(self) -> None:
        if self.group is not None:
            index, buttons = self.group
            self.found[index] = replace(self.found[index], buttons=tuple(buttons))
            self.group = None

    def close(self) -> None:
        super().close()
        self._close_group()


def elements(rendered_html: str) -> list[CrowdElement]:
    """The ``crowd-*`` elements of a rendered page in document order; the radio buttons of a
    group are its ``buttons``. ``crowd-form`` is one of them (kind ``form``)."""
    parser = _ElementParser()
    parser.feed(rendered_html)
    parser.close()
    return parser.found


def answer_paths(page: Sequence[CrowdElement]) -> list[str]:
    """Dotted paths into ``answerContent`` the elements produce (compare ``review.answer_path``).

    A name or value containing a dot makes its path ambiguous; it is listed as it is.
    """
    paths: list[str] = []
    for element in page:
        if element.kind in _FIXED_KEYS:
            paths.append(_FIXED_KEYS[element.kind])
        elif element.kind == "radio_group":
            paths += [f"{b.name}.{b.value}" for b in element.buttons if b.name]
        elif element.name is None:
            continue
        elif element.kind in BOOLEAN:
            paths.append(f"{element.name}.{element.value}")
        elif element.kind in _PARTS:
            parts = _PARTS[element.kind]
            paths += [f"{element.name}.{part}" for part in parts] if parts else [element.name]
    return list(dict.fromkeys(paths))


# -- check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateReport:
    """What A2I would refuse (``errors``), likely mistakes (``warnings``), and the page."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    elements: tuple[CrowdElement, ...]
    answer_paths: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def _options_warning(element: CrowdElement, sampled: bool) -> str | None:
    attribute = "labels" if element.kind == "bounding_box" else "categories"
    text, parsed = element.attribute(attribute, "\0"), getattr(element, attribute)
    if text == "\0":
        return f"has no {attribute}: workers have nothing to choose"
    if parsed is None:
        hint = "" if sampled else " (no sample input was given: pass one)"
        return f"{attribute} {text!r} is not a JSON array or a list of quoted strings{hint}"
    return None if parsed else f"has an empty {attribute} list"


def _element_warnings(element: CrowdElement, sampled: bool) -> list[str]:
    kind = element.kind
    found = ["is not a crowd element AWS documents"] if kind == "unknown" else []
    if kind not in _NO_ANSWER:
        if not element.in_form:
            found.append("is outside <crowd-form>: its answer is not submitted")
        if element.self_closed:
            found.append("is self-closed: a browser keeps it open around what follows")
        if kind not in {"radio_group", *_FIXED_KEYS} and not element.name:
            found.append("has no name: its answer gets no key in answerContent")
        if kind == "radio_group" and not element.buttons:
            found.append("has no crowd-radio-button")
        if any(not button.name for button in element.buttons):
            found.append("has a crowd-radio-button without a name: its answer gets no key")
        if kind in SINGLE_CHOICE | MULTI_CHOICE or kind == "bounding_box":
            found.append(_options_warning(element, sampled) or "")
        if kind == "slider":
            low, high, step = _slider_bounds(element)
            given = [key for key in ("min", "max", "step") if element.attribute(key) is not None]
            if any(getattr(element, key) is None for key in given) or not low < high or step <= 0:
                found.append("needs numbers with min < max and step > 0")
        if kind not in SIMULATED:
            found.append("is not simulated: the sandbox leaves its answer empty")
    named = f' name="{element.name}"' if element.name is not None else ""
    return [f"<{element.tag}{named}> (rendered line {element.line}) {w}" for w in found if w]


def _duplicate_warnings(page: Sequence[CrowdElement]) -> list[str]:
    """Names whose answers overwrite each other. Checkbox-like elements may share a name when
    their values differ: they share one answer object."""
    uses: dict[str, list[tuple[str, str | None]]] = {}
    for element in page:
        for button in element.buttons:
            if button.name:
                uses.setdefault(button.name, []).append(("radio_button", button.value))
        if element.name and element.kind not in _NO_ANSWER:
            uses.setdefault(element.name, []).append((element.kind, element.value))
    return [
        f'name "{name}" is used by {len(found)} elements: their answers overwrite each other'
        for name, found in uses.items()
        if len(found) > 1
        and not (all(k in BOOLEAN for k, _ in found) and len(set(found)) == len(found))
    ]


def check(
    template: str,
    sample_input: Mapping[str, Any] | None = None,
    *,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> TemplateReport:
    """What CreateHumanTaskUi would refuse, then likely mistakes on the page rendered with
    ``sample_input`` (or an empty input)."""
    try:
        html = render(template, sample_input or {}, limits=limits)
    except TemplateError as exc:
        return TemplateReport((f"the template does not render: {exc}",), (), (), ())
    page = elements(html)
    errors = []
    if not any(element.kind == "form" for element in page):
        errors.append("no <crowd-form>: A2I templates wrap their elements in one to submit them")
    warnings = [w for e in page for w in _element_warnings(e, bool(sample_input))]
    warnings += _duplicate_warnings(page)
    return TemplateReport(tuple(errors), tuple(warnings), tuple(page), tuple(answer_paths(page)))


# -- simulated answers -------------------------------------------------------------------------

_WORDS = ("the", "label", "looks", "right", "is", "clear", "unsure", "wrong", "fine", "text")


def _text(element: CrowdElement, rng: random.Random) -> str:
    if element.input_type == "number":
        return str(rng.randint(0, 100))
    lines = 2 if element.kind == "text_area" and rng.random() < 0.3 else 1
    sentences = (" ".join(rng.choices(_WORDS, k=rng.randint(3, 9))) for _ in range(lines))
    return "\n".join(s.capitalize() + "." for s in sentences)


def _choose(
    options: Sequence[str], truth: str | None, error_rate: float, rng: random.Random
) -> str:
    if truth is None or truth not in options:
        return rng.choice(options)
    others = [option for option in options if option != truth]
    return rng.choice(others) if others and rng.random() < error_rate else truth


def _subset(
    options: Sequence[str], truth: str | None, error_rate: float, rng: random.Random
) -> list[str]:
    others = [option for option in options if option != truth]
    picked = {option for option in others if rng.random() < 0.25}
    if truth is not None and truth in options and not (others and rng.random() < error_rate):
        picked.add(truth)
    picked = picked or {rng.choice(others or list(options))}
    return [option for option in options if option in picked]


def _slider(element: CrowdElement, rng: random.Random) -> float:
    low, high, step = _slider_bounds(element)
    step = step if step > 0 else 1.0
    value = low + step * rng.randint(0, max(0, int((high - low) / step + 1e-9)))
    return int(value) if low.is_integer() and step.is_integer() else round(value, 10)


def _box(label: str, rng: random.Random) -> dict[str, Any]:
    width, height = rng.randint(10, IMAGE_WIDTH_PX // 2), rng.randint(10, IMAGE_HEIGHT_PX // 2)
    left, top = rng.randint(0, IMAGE_WIDTH_PX - width), rng.randint(0, IMAGE_HEIGHT_PX - height)
    return {
        "boundingBoxes": [
            {"height": height, "label": label, "left": left, "top": top, "width": width}
        ],
        "inputImageProperties": {"height": IMAGE_HEIGHT_PX, "width": IMAGE_WIDTH_PX},
    }


def _truth_target(page: Sequence[CrowdElement], truth_element: str | None) -> CrowdElement | None:
    """The element named ``truth_element`` when the page has one that gives a label, else the
    first classifier-like one (a sandbox setting names one element for every template)."""
    for element in page:
        names = (element.name, *(b.name for b in element.buttons))
        if truth_element is not None and element.kind in TRUTH_CAPABLE and truth_element in names:
            return element
    return next((e for e in page if e.kind in TRUTH_CAPABLE - {"bounding_box"}), None)


def simulate_answer(
    page: Sequence[CrowdElement],
    *,
    truth: str | None,
    truth_element: str | None = None,
    error_rate: float,
    rng: random.Random,
) -> dict[str, Any]:
    """The ``answerContent`` one simulated worker submits for ``page``.

    The truth element (named ``truth_element``, else the first classifier, image classifier,
    multi-select or radio group) answers ``truth`` when it is one of its options, another
    option with probability ``error_rate``, and a random option when ``truth`` is None or not
    an option; a multi-select's labels include ``truth`` unless it errs. Bounding boxes label
    their one box ``truth`` when it is one of their labels (erring only as the truth element).
    Other elements get plausible values; those without a name, or of kinds the sandbox does not
    simulate, stay empty (absent). The same ``rng`` state gives the same answer.
    """
    target = _truth_target(page, truth_element)
    answer: dict[str, Any] = {}
    for element in page:
        given, rate = (truth, error_rate) if element is target else (None, 0.0)
        name, options = element.name, element.categories or ()
        if element.kind == "radio_group":
            buttons = [(b.name, b.value) for b in element.buttons if b.name]
            values = [value for _, value in buttons]
            by_name = next((v for n, v in buttons if n == given and given not in values), given)
            chosen = _choose(values, by_name, rate, rng) if buttons else None
            for button, value in buttons:
                answer.setdefault(button, {})[value] = value == chosen
        elif not name or element.kind not in SIMULATED:
            continue
        elif element.kind in SINGLE_CHOICE and options:
            answer[name] = {"label": _choose(options, given, rate, rng)}
        elif element.kind in MULTI_CHOICE and options:
            answer[name] = {"labels": _subset(options, given, rate, rng)}
        elif element.kind in BOOLEAN:
            answer.setdefault(name, {})[element.value or "on"] = rng.random() < 0.5
        elif element.kind in ("input", "text_area"):
            answer[name] = _text(element, rng)
        elif element.kind == "slider":
            answer[name] = _slider(element, rng)
        elif element.kind == "bounding_box" and (element.labels or truth is not None):
            labels = element.labels or (str(truth),)
            answer[name] = _box(_choose(labels, truth, rate, rng), rng)
    return answer
