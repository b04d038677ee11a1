"""A2I worker templates in the sandbox: rendering, crowd elements, checks, simulated answers."""

from __future__ import annotations

import json
import math
import random
import re
import time
from html import unescape
from typing import Any

import pytest

from stream_router.sandbox.a2i.reviewers import lookup
from stream_router.sandbox.a2i.template import (
    IMAGE_HEIGHT_PX,
    IMAGE_WIDTH_PX,
    MAX_TEMPLATE_CHARS,
    CrowdElement,
    RenderLimits,
    TemplateError,
    answer_paths,
    check,
    elements,
    parse_categories,
    render,
    simulate_answer,
)

SENTIMENT = """\
<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <crowd-classifier
    name="sentiment"
    categories="{{ task.input.labels | to_json | escape }}"
    header="What does the customer feel about the product?"
  >
    <classification-target>{{ task.input.text }}</classification-target>
    <full-instructions header="Reading a review">
      <p>Choose the feeling the whole review expresses, not a single sentence.</p>
    </full-instructions>
    <short-instructions>Pick one feeling.</short-instructions>
  </crowd-classifier>
</crowd-form>
"""
SENTIMENT_INPUT = {
    "text": "Arrived late, works great.",
    "labels": ["positive", "negative", "mixed"],
}

EVERY_ELEMENT = """\
<crowd-form>
  <crowd-classifier name="topic" categories="['billing', 'shipping', 'other']"
    header="Topic?"></crowd-classifier>
  <crowd-image-classifier name="photo" src="{{ task.input.image | grant_read_access }}"
    categories='{{ task.input.photo_labels | to_json }}' header="What is shown?">
  </crowd-image-classifier>
  <crowd-classifier-multi-select name="tags" categories='["rude", "spam", "off-topic"]'
    header="Which apply?"></crowd-classifier-multi-select>
  <crowd-image-classifier-multi-select name="objects" categories="['car', 'bike']"
    src="https://example.com/street.png" header="Which are there?">
  </crowd-image-classifier-multi-select>
  <crowd-input name="comment" label="Why?" required></crowd-input>
  <crowd-input name="stars" type="number" label="Stars"></crowd-input>
  <crowd-text-area name="notes" rows="3"></crowd-text-area>
  <crowd-checkbox name="flags" value="blurry">Blurry</crowd-checkbox>
  <crowd-checkbox name="flags" value="dark">Too dark</crowd-checkbox>
  <crowd-checkbox name="reviewed">I read it all</crowd-checkbox>
  <crowd-toggle-button name="urgent"></crowd-toggle-button>
  <crowd-radio-group>
    <crowd-radio-button name="keep" value="yes">Keep</crowd-radio-button>
    <crowd-radio-button name="drop" value="no">Drop</crowd-radio-button>
  </crowd-radio-group>
  <crowd-slider name="confidence" min="1" max="5" step="1" pin></crowd-slider>
  <crowd-bounding-box name="boxes" src="{{ task.input.image | grant_read_access }}"
    labels="{{ task.input.box_labels | to_json | escape }}" header="Box the animals">
  </crowd-bounding-box>
</crowd-form>
"""
EVERY_INPUT = {
    "image": "s3://reviews/photos/1.png",
    "photo_labels": ["cat", "dog"],
    "box_labels": ["cat", "dog"],
}
EVERY_PATHS = [
    "topic.label",
    "photo.label",
    "tags.labels",
    "objects.labels",
    "comment",
    "stars",
    "notes",
    "flags.blurry",
    "flags.dark",
    "reviewed.on",
    "urgent.on",
    "keep.yes",
    "drop.no",
    "confidence",
    "boxes.boundingBoxes",
    "boxes.inputImageProperties",
]

INSTRUCTIONS = """\
<crowd-form>
  <crowd-image-classifier name="label" src="{{ task.input.uri | grant_read_access }}"
    categories="['cat', 'dog']" header="Which animal?">
    <full-instructions header="Choosing">{{ task.input.help | skip_autoescape }}</full-instructions>
    <short-instructions>{{ task.input.help }}</short-instructions>
  </crowd-image-classifier>
  <script>var prediction = {{ task.input.prediction | to_json | skip_autoescape }};</script>
  <span data-meta='{{ task.input.prediction | to_json }}'></span>
</crowd-form>
"""
HOSTILE = "<script>alert('x')</script>"


def page(template: str, task_input: dict[str, Any] | None = None) -> list[CrowdElement]:
    return elements(render(template, task_input or {}))


def one(template: str, task_input: dict[str, Any] | None = None) -> CrowdElement:
    (element,) = [e for e in page(template, task_input) if e.kind != "form"]
    return element


def form(body: str) -> str:
    return f"<crowd-form>\n{body}\n</crowd-form>"


# -- rendering -----------------------------------------------------------------------------------


def test_task_input_is_autoescaped() -> None:
    html = render(SENTIMENT, {**SENTIMENT_INPUT, "text": HOSTILE})
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_skip_autoescape_outputs_the_value_as_is() -> None:
    html = render(INSTRUCTIONS, {"uri": "", "help": f"<b>Look</b>{HOSTILE}", "prediction": {}})
    full, short = re.findall(r"-instructions[^>]*>(.*?)</(?:full|short)-instructions>", html)
    assert full == f"<b>Look</b>{HOSTILE}"
    assert short.startswith("&lt;b&gt;Look")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # literals are escaped as A2I's docs show (python-liquid alone would trust them)
        ("""{{ "Is 'Bread & Butter' a song?" }}""", "Is &#39;Bread &amp; Butter&#39; a song?"),
        ("""{% assign x = '["a"]' %}{{ x }}""", "[&#34;a&#34;]"),
        (
            """{{ "Is 'Bread & Butter' a song?" | escape }}""",
            "Is &#39;Bread &amp; Butter&#39; a song?",
        ),
        ("""{{ "Bread &amp; Butter" | escape_once }}""", "Bread &amp; Butter"),
        ("""{{ "'Bread & Butter'" | skip_autoescape }}""", "'Bread & Butter'"),
        ("""{{ task.input.missing }}|{{ task.input.n | plus: 1 }}""", "|42"),
        ("""{{ task.input.tags | join: ", " | upcase }}""", "A, B"),
        ("""{% for t in task.input.tags reversed %}{{ t }}{% endfor %}""", "ba"),
    ],
)
def test_filters_as_the_docs_show_them(source: str, expected: str) -> None:
    assert render(source, {"n": 41, "tags": ["a", "b"]}) == expected


def test_to_json_parses_back_in_a_script_and_a_single_quoted_attribute() -> None:
    prediction = {
        "label": "</script><b>'x' & \"y\"</b>",
        "scores": [0.25, 1],
        "ok": True,
        "é": None,
    }
    html = render(INSTRUCTIONS, {"uri": "", "help": "", "prediction": prediction})
    script = re.search(r"var prediction = (.*?);</script>", html)
    assert script is not None
    assert "</" not in script[1]
    assert json.loads(script[1]) == prediction
    (span,) = re.findall(r"data-meta='([^']*)'", html)
    assert json.loads(unescape(span)) == prediction


def test_to_json_alone_fits_a_double_quoted_attribute() -> None:
    """As the bounding-box docs and config/review-task.liquid.html write it."""
    labels = ['say "hi"', "it's", "<none>"]
    source = form(
        '<crowd-bounding-box name="b" src="x" labels="{{ task.input.l | to_json }}">'
        "</crowd-bounding-box>"
    )
    (box,) = [e for e in page(source, {"l": labels}) if e.kind == "bounding_box"]
    assert box.labels == tuple(labels)


def test_to_json_then_escape_fits_a_double_quoted_attribute() -> None:
    labels = ['say "hi"', "it's", "<none>"]
    element = one(SENTIMENT, {**SENTIMENT_INPUT, "labels": labels})
    assert element.categories == tuple(labels)


def test_grant_read_access_presigns_s3_uris() -> None:
    asked: list[str] = []

    def presign(uri: str) -> str:
        asked.append(uri)
        return f"https://signed.example/{uri[5:]}?X-Amz-Signature=abc&X-Amz-Expires=60"

    source = (
        "{{ task.input.a | grant_read_access }} {{ task.input.b | grant_read_access }}"
        ' <img src="{{ task.input.a | grant_read_access }}">'
    )
    task_input = {"a": "s3://bkt/x/1.png", "b": "https://s3.us-west-2.amazonaws.com/bkt/x/2.png"}
    html = render(source, task_input, presign=presign)
    assert asked == ["s3://bkt/x/1.png", "s3://bkt/x/2.png", "s3://bkt/x/1.png"]
    assert "https://signed.example/bkt/x/1.png?X-Amz-Signature=abc&amp;X-Amz-Expires=60" in html
    hosted = {"c": "https://bkt.s3.amazonaws.com/x/3.png"}
    signed = render("{{ task.input.c | grant_read_access }}", hosted, presign=presign)
    assert signed.startswith("https://signed.example/bkt/x/3.png?")
    assert asked[-1] == "s3://bkt/x/3.png"


@pytest.mark.parametrize("presign", [None, lambda uri: "https://signed.example/"])
def test_grant_read_access_passes_other_values_unchanged(presign: Any) -> None:
    source = "{{ task.input.url | grant_read_access }}|{{ task.input.nothing | grant_read_access }}"
    html = render(source, {"url": "https://example.com/a.png?x=1"}, presign=presign)
    assert html == "https://example.com/a.png?x=1|"
    if presign is None:
        assert render(source, {"url": "s3://b/k"}) == "s3://b/k|"


def test_a_failing_presign_is_a_template_error() -> None:
    def presign(uri: str) -> str:
        raise RuntimeError("no credentials")

    with pytest.raises(TemplateError, match="cannot presign s3://b/k: no credentials"):
        render(
            '<img src="{{ task.input.u | grant_read_access }}">', {"u": "s3://b/k"}, presign=presign
        )


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(TemplateError) as caught:
        render("<crowd-form>\n{% if task.input.x %}\n  x\n{% endfor %}\n</crowd-form>", {})
    assert caught.value.line == 4
    assert str(caught.value) == "line 4: unexpected tag 'endfor'"


def test_an_unknown_filter_is_an_error() -> None:
    with pytest.raises(TemplateError, match="line 2: unknown filter 'to_jsn'"):
        render("<p>\n{{ task.input.labels | to_jsn }}</p>", {})


@pytest.mark.parametrize("size", [0, MAX_TEMPLATE_CHARS + 1])
def test_render_refuses_what_a2i_refuses(size: int) -> None:
    with pytest.raises(TemplateError, match=f"has {size} characters"):
        render("x" * size, {})


HOSTILE_TEMPLATES = {
    "huge loop": "{% for i in (1..1000000000) %}x{% endfor %}",
    "huge reversed loop": "{% for i in (1..30000000) reversed %}{% break %}{% endfor %}",
    "huge offset": "{% for i in (1..300000010) offset: 300000000 %}{{ i }}{% endfor %}",
    "huge range in a filter": '{{ (1..3000000) | join: "," | size }}',
    "nested loops": "{% for a in (1..1000) %}{% for b in (1..1000) %}{% endfor %}{% endfor %}",
    "loops one after another": "{% for i in (1..60000) %}{% endfor %}" * 2,
    "doubling a variable": (
        '{% assign s = "xx" %}{% for i in (1..80) %}{% assign s = s | append: s %}{% endfor %}'
    ),
    "doubling the output": (
        "{% capture s %}{{ task.input.big }}{% endcapture %}{% for i in (1..99999) %}"
        "{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}"
    ),
}


@pytest.mark.parametrize("source", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
def test_resource_limits_stop_a_hostile_template_quickly(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match="limit reached"):
        render(source, {"big": "y" * 4096})
    assert time.monotonic() - started < 0.5


def test_a_render_past_its_deadline_stops() -> None:
    busy = "{% for i in (1..99999) %}{% if i %}{% if i %}{% endif %}{% endif %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"rendering took over 0.02 s"):
        render(busy, {}, limits=RenderLimits(timeout_s=0.02))
    assert time.monotonic() - started < 0.5


def test_the_default_limits_leave_room_for_real_work() -> None:
    rows = [{"id": i, "text": "z" * 200} for i in range(5000)]
    source = "{% for r in task.input.rows %}<p>{{ r.id }} {{ r.text | upcase }}</p>{% endfor %}"
    assert render(source, {"rows": rows}).count("<p>") == 5000


# -- elements ------------------------------------------------------------------------------------


def test_the_sentiment_classifier_is_found_with_its_categories() -> None:
    crowd_form, classifier = page(SENTIMENT, SENTIMENT_INPUT)
    assert (crowd_form.kind, crowd_form.line) == ("form", 2)
    assert classifier.tag == "crowd-classifier"
    assert (classifier.kind, classifier.name) == ("classifier", "sentiment")
    assert classifier.categories == ("positive", "negative", "mixed")
    assert classifier.in_form
    assert classifier.line == 3
    assert classifier.attribute("header") == "What does the customer feel about the product?"


def test_every_element_kind_is_inspected() -> None:
    every = page(EVERY_ELEMENT, EVERY_INPUT)
    assert [e.kind for e in every] == [
        "form",
        "classifier",
        "image_classifier",
        "multi_select",
        "image_multi_select",
        "input",
        "input",
        "text_area",
        "checkbox",
        "checkbox",
        "checkbox",
        "toggle_button",
        "radio_group",
        "slider",
        "bounding_box",
    ]
    found = {e.name or e.kind: e for e in every}
    assert found["topic"].categories == ("billing", "shipping", "other")
    assert found["photo"].categories == ("cat", "dog")
    assert found["photo"].attribute("src") == "s3://reviews/photos/1.png"
    assert found["tags"].categories == ("rude", "spam", "off-topic")
    assert found["objects"].kind == "image_multi_select"
    assert (found["comment"].input_type, found["comment"].required) == ("text", True)
    assert (found["stars"].input_type, found["stars"].required) == ("number", False)
    assert found["notes"].kind == "text_area"
    assert (found["reviewed"].kind, found["reviewed"].value) == ("checkbox", "on")
    assert (found["urgent"].kind, found["urgent"].value) == ("toggle_button", "on")
    slider = found["confidence"]
    assert (slider.min, slider.max, slider.step) == (1.0, 5.0, 1.0)
    assert found["boxes"].labels == ("cat", "dog")
    group = found["radio_group"]
    assert group.name is None
    assert [(b.name, b.value) for b in group.buttons] == [("keep", "yes"), ("drop", "no")]
    flags = [e for e in every if e.name == "flags"]
    assert [e.value for e in flags] == ["blurry", "dark"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["a", "b c"]', ("a", "b c")),
        (
            "['positive', 'negative', 'cannot determine']",
            ("positive", "negative", "cannot determine"),
        ),
        ("[ 'it\\'s', \"x\" , ]", ("it's", "x")),
        ("[]", ()),
        ("[1, 2.5]", ("1", "2.5")),
        ("[{ text: 'x' }]", None),
        ('[{"name": "x"}]', None),
        ("'a', 'b'", None),
        ("null", None),
        (None, None),
    ],
)
def test_categories_are_a_json_array_or_a_list_of_quoted_strings(
    text: str | None, expected: tuple[str, ...] | None
) -> None:
    assert parse_categories(text) == expected


def test_categories_arrive_html_unescaped() -> None:
    source = form('<crowd-classifier name="c" categories="[&quot;a&amp;b&quot;, &#34;c&#34;]">')
    assert one(source).categories == ("a&b", "c")


def test_a_radio_button_outside_a_group_answers_like_a_checkbox() -> None:
    element = one(form('<crowd-radio-button name="agree">I agree</crowd-radio-button>'))
    assert (element.kind, element.value) == ("radio_button", "on")
    assert answer_paths([element]) == ["agree.on"]


def test_elements_know_whether_they_are_in_the_form() -> None:
    source = '<crowd-input name="before"></crowd-input>\n' + form("<crowd-alert>Hi</crowd-alert>")
    before, crowd_form, alert = page(source)
    assert (before.in_form, crowd_form.in_form, alert.in_form) == (False, False, True)
    assert alert.kind == "display"


def test_crowd_tags_inside_a_script_are_not_elements() -> None:
    source = form("<script>const t = '<crowd-input name=\"x\"></crowd-input>';</script>")
    assert [e.kind for e in page(source)] == ["form"]


# -- answer paths --------------------------------------------------------------------------------


def test_answer_paths_of_every_element_kind() -> None:
    assert answer_paths(page(EVERY_ELEMENT, EVERY_INPUT)) == EVERY_PATHS


def test_answer_paths_of_elements_the_sandbox_does_not_simulate() -> None:
    source = form(
        '<crowd-keypoint name="k" labels="[]"></crowd-keypoint>'
        '<crowd-semantic-segmentation name="s"></crowd-semantic-segmentation>'
        '<crowd-entity-annotation name="e"></crowd-entity-annotation>'
        "<crowd-textract-analyze-document></crowd-textract-analyze-document>"
    )
    assert answer_paths(page(source)) == [
        "k.keypoints",
        "k.inputImageProperties",
        "s.labelMappings",
        "s.labeledImage",
        "s.inputImageProperties",
        "e.entities",
        "AWS/Textract/AnalyzeDocument/Forms/V1.blocks",
    ]


# -- check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "sample"),
    [(SENTIMENT, SENTIMENT_INPUT), (EVERY_ELEMENT, EVERY_INPUT), (INSTRUCTIONS, None)],
    ids=["sentiment", "every-element", "instructions"],
)
def test_sound_templates_pass_without_findings(template: str, sample: dict[str, Any]) -> None:
    report = check(template, sample)
    assert (report.errors, report.warnings) == ((), ())
    assert report.ok
    assert report.answer_paths == tuple(answer_paths(report.elements))


def test_the_crowd_elements_script_is_not_required() -> None:
    report = check(SENTIMENT.split("\n", 1)[1], SENTIMENT_INPUT)
    assert (report.errors, report.warnings) == ((), ())
    assert report.answer_paths == ("sentiment.label",)


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("", "has 0 characters; A2I takes 1 to 128000"),
        (form("x" * MAX_TEMPLATE_CHARS), "characters; A2I takes 1 to 128000"),
        (form("{% for x in task.input.items %}"), "line 3: expected tag endfor, found end of"),
        ('<crowd-input name="a"></crowd-input>', "no <crowd-form>"),
    ],
    ids=["empty", "too-long", "syntax", "no-form"],
)
def test_check_errors(template: str, error: str) -> None:
    report = check(template)
    assert not report.ok
    (found,) = report.errors
    assert error in found


WARNINGS = {
    "no-name": ('<crowd-input label="x"></crowd-input>', "has no name"),
    "duplicate": (
        '<crowd-input name="a"></crowd-input><crowd-text-area name="a"></crowd-text-area>',
        'name "a" is used by 2 elements',
    ),
    "duplicate-checkbox": (
        '<crowd-checkbox name="a"></crowd-checkbox><crowd-checkbox name="a"></crowd-checkbox>',
        'name "a" is used by 2 elements',
    ),
    "no-categories": ('<crowd-classifier name="c"></crowd-classifier>', "has no categories"),
    "bad-categories": (
        """<crowd-classifier name="c" categories="{{ task.input.x }}"></crowd-classifier>""",
        "categories 'positive or negative' is not a JSON array or a list of quoted strings",
    ),
    "empty-categories": (
        '<crowd-classifier-multi-select name="c" categories="[]"></crowd-classifier-multi-select>',
        "has an empty categories list",
    ),
    "no-labels": ('<crowd-bounding-box name="b"></crowd-bounding-box>', "has no labels"),
    "unknown-tag": ("<crowd-clasifier name='c'></crowd-clasifier>", "not a crowd element"),
    "self-closed": ('<crowd-input name="a" />', "is self-closed"),
    "slider": ('<crowd-slider name="s" min="5" max="1"></crowd-slider>', "min < max"),
    "slider-nan": ('<crowd-slider name="s" step="fine"></crowd-slider>', "min < max and step"),
    "not-simulated": ('<crowd-polygon name="p"></crowd-polygon>', "is not simulated"),
    "empty-group": ("<crowd-radio-group></crowd-radio-group>", "has no crowd-radio-button"),
    "nameless-button": (
        "<crowd-radio-group><crowd-radio-button value='y'></crowd-radio-button>"
        "</crowd-radio-group>",
        "has a crowd-radio-button without a name",
    ),
}


@pytest.mark.parametrize(("body", "warning"), WARNINGS.values(), ids=WARNINGS.keys())
def test_check_warnings(body: str, warning: str) -> None:
    report = check(form(body), {"x": "positive or negative"})
    assert report.ok
    assert [w for w in report.warnings if warning in w], report.warnings


def test_an_element_outside_the_form_is_a_warning() -> None:
    report = check('<crowd-input name="a"></crowd-input>\n' + form(""))
    assert report.warnings == (
        '<crowd-input name="a"> (rendered line 1) is outside <crowd-form>: '
        "its answer is not submitted",
    )


def test_checkboxes_may_share_a_name_when_their_values_differ() -> None:
    body = (
        '<crowd-checkbox name="a" value="x"></crowd-checkbox>'
        '<crowd-checkbox name="a" value="y"></crowd-checkbox>'
    )
    assert check(form(body)).warnings == ()


def test_categories_from_input_without_a_sample_say_so() -> None:
    (warning,) = check(SENTIMENT).warnings
    assert "categories 'null'" in warning
    assert "no sample input was given" in warning


# -- simulated answers ---------------------------------------------------------------------------


def simulate(template: str = EVERY_ELEMENT, seed: int = 7, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"truth": "billing", "error_rate": 0.0, **kwargs}
    return simulate_answer(page(template, EVERY_INPUT), rng=random.Random(seed), **options)


def test_simulated_answers_have_a2i_shapes_for_every_kind() -> None:
    answer = simulate()
    assert answer["topic"] == {"label": "billing"}
    assert answer["photo"]["label"] in ("cat", "dog")
    assert set(answer["photo"]) == {"label"}
    for name, options in (("tags", ["rude", "spam", "off-topic"]), ("objects", ["car", "bike"])):
        labels = answer[name]["labels"]
        assert labels
        assert set(labels) <= set(options)
        assert labels == [o for o in options if o in labels]
    assert isinstance(answer["comment"], str)
    assert answer["comment"].endswith(".")
    assert answer["stars"].isdigit()
    assert isinstance(answer["notes"], str)
    assert set(answer["flags"]) == {"blurry", "dark"}
    assert all(isinstance(v, bool) for v in answer["flags"].values())
    assert set(answer["reviewed"]) == set(answer["urgent"]) == {"on"}
    assert sorted([answer["keep"]["yes"], answer["drop"]["no"]]) == [False, True]
    assert answer["confidence"] in range(1, 6)
    assert isinstance(answer["confidence"], int)
    boxes = answer["boxes"]
    assert set(boxes) == {"boundingBoxes", "inputImageProperties"}
    (box,) = boxes["boundingBoxes"]
    assert list(box) == ["height", "label", "left", "top", "width"]
    assert box["label"] in ("cat", "dog")


@pytest.mark.parametrize("seed", range(20))
def test_every_answer_path_is_in_the_simulated_answer(seed: int) -> None:
    answer = simulate(seed=seed)
    assert set(answer) == {path.split(".")[0] for path in EVERY_PATHS}
    for path in EVERY_PATHS:
        assert lookup(answer, path) is not None, path


def test_the_same_rng_state_gives_the_same_answer() -> None:
    assert simulate(seed=3, error_rate=0.5) == simulate(seed=3, error_rate=0.5)
    assert any(simulate(seed=3) != simulate(seed=s) for s in range(4, 10))


def test_without_a_usable_truth_the_truth_element_answers_any_category() -> None:
    for truth in (None, "not-a-topic"):
        answers = {simulate(seed=s, truth=truth)["topic"]["label"] for s in range(60)}
        assert answers == {"billing", "shipping", "other"}


@pytest.mark.parametrize(
    ("truth_element", "truth", "expected"),
    [
        ("photo", "dog", {"photo": {"label": "dog"}}),
        ("tags", "spam", None),
        ("keep", "no", {"keep": {"yes": False}, "drop": {"no": True}}),
        ("drop", "drop", {"keep": {"yes": False}, "drop": {"no": True}}),
        ("boxes", "dog", None),
    ],
)
def test_truth_element_by_name(truth_element: str, truth: str, expected: Any) -> None:
    for seed in range(15):
        answer = simulate(seed=seed, truth=truth, truth_element=truth_element)
        for name, value in (expected or {}).items():
            assert answer[name] == value
        if truth_element == "tags":
            assert "spam" in answer["tags"]["labels"]
        if truth_element == "boxes":
            assert answer["boxes"]["boundingBoxes"][0]["label"] == "dog"
        assert answer["topic"]["label"] in ("billing", "shipping", "other")


@pytest.mark.parametrize("truth_element", ["nothing", "comment"])
def test_a_truth_element_missing_or_giving_no_label_falls_back_to_the_first_classifier(
    truth_element: str,
) -> None:
    assert simulate(truth_element=truth_element) == simulate(truth_element=None)


def test_the_truth_elements_error_share_matches_the_error_rate() -> None:
    draws, error_rate = 4000, 0.2
    classifier = page(SENTIMENT, SENTIMENT_INPUT)
    rng = random.Random(20240601)
    labels = [
        simulate_answer(classifier, truth="mixed", error_rate=error_rate, rng=rng)["sentiment"]
        for _ in range(draws)
    ]
    wrong = [answer["label"] for answer in labels if answer["label"] != "mixed"]
    sigma = math.sqrt(draws * error_rate * (1 - error_rate))
    assert abs(len(wrong) - draws * error_rate) < 5 * sigma
    assert set(wrong) == {"positive", "negative"}
    assert abs(wrong.count("positive") - len(wrong) / 2) < 5 * math.sqrt(len(wrong) / 4)


def test_a_multi_select_truth_element_misses_the_truth_only_when_it_errs() -> None:
    elements_ = page(form('<crowd-classifier-multi-select name="m" categories="[1, 2, 3]">'))
    rng = random.Random(5)
    answers = [simulate_answer(elements_, truth="2", error_rate=0.3, rng=rng) for _ in range(2000)]
    missing = sum("2" not in a["m"]["labels"] for a in answers)
    assert abs(missing - 600) < 5 * math.sqrt(2000 * 0.3 * 0.7)
    assert all(a["m"]["labels"] for a in answers)


@pytest.mark.parametrize(
    ("attributes", "grid"),
    [
        ('min="0" max="1" step="0.25"', [0, 0.25, 0.5, 0.75, 1]),
        ('min="-10" max="10" step="5"', [-10, -5, 0, 5, 10]),
        ("", list(range(101))),
    ],
)
def test_a_slider_answers_on_its_grid(attributes: str, grid: list[float]) -> None:
    slider = page(form(f'<crowd-slider name="s" {attributes}></crowd-slider>'))
    rng = random.Random(1)
    values = {simulate_answer(slider, truth=None, error_rate=0, rng=rng)["s"] for _ in range(400)}
    assert values <= set(grid)
    assert len(values) > 1


def test_a_bounding_box_stays_inside_the_assumed_image() -> None:
    box_page = page(form('<crowd-bounding-box name="b" labels="[\'x\']"></crowd-bounding-box>'))
    rng = random.Random(2)
    for _ in range(300):
        answer = simulate_answer(box_page, truth=None, error_rate=0, rng=rng)["b"]
        (box,) = answer["boundingBoxes"]
        assert box["label"] == "x"
        assert box["left"] >= 0
        assert box["left"] + box["width"] <= IMAGE_WIDTH_PX
        assert box["top"] >= 0
        assert box["top"] + box["height"] <= IMAGE_HEIGHT_PX
        assert answer["inputImageProperties"] == {
            "height": IMAGE_HEIGHT_PX,
            "width": IMAGE_WIDTH_PX,
        }


def test_unanswerable_elements_stay_absent() -> None:
    source = form(
        "<crowd-classifier categories=\"['a']\"></crowd-classifier>"
        '<crowd-classifier name="empty"></crowd-classifier>'
        '<crowd-polygon name="p" labels="[\'a\']"></crowd-polygon><crowd-alert>Hi</crowd-alert>'
    )
    assert simulate_answer(page(source), truth="a", error_rate=0, rng=random.Random(0)) == {}
