"""A person fills A2I worker templates in a browser; the sandbox's crowd elements answer exactly.

The sandbox serves its own ``crowd-html-elements.js`` (``stream_router/sandbox/a2i/static/``) in
place of the script AWS hosts, so a template renders and can be filled in and submitted in the
local worker portal and in ``stream-router template preview``. Here headless Debian Chromium
(never a downloaded browser) fills every supported element as a person would (clicks, typing,
the keyboard, a box drawn with the mouse) and the test asserts the exact ``answerContent``: the
shape AWS documents for each element (see the script's header for the table).

Pages come from an aiohttp server on loopback that also serves the script, a PNG image and the
submit endpoint of ``<meta name="crowd-sandbox-submit">``. Every request for anything other
than 127.0.0.1 is aborted and fails the test, as does a script error on the page. The templates
load the script first, as A2I templates do, so the elements are upgraded before their children
are parsed; the categories test adds it after the content instead (the other path).
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Locator, Page, expect

import stream_router
from tests.integration.browser import loopback_page, png

pytestmark = [pytest.mark.integration]

SCRIPT = Path(stream_router.__file__).parent / "sandbox/a2i/static/crowd-html-elements.js"
#: The image's natural size; the pages show it at half size, so answers must be scaled back.
IMAGE_SIZE = (400, 200)
SHOWN_WIDTH = 200


@dataclass
class Site:
    """The loopback server: pages by name, what /submit received, and what it answers next."""

    url: str
    pages: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


@pytest_asyncio.fixture
async def site() -> AsyncIterator[Site]:
    image = png(*IMAGE_SIZE, (90, 140, 200))
    served = Site("")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=served.pages[request.match_info["name"]], content_type="text/html")

    async def script(_: web.Request) -> web.Response:
        return web.Response(body=SCRIPT.read_bytes(), content_type="text/javascript")

    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    async def submit(request: web.Request) -> web.Response:
        served.content_types.append(request.headers.get("Content-Type", ""))
        served.received.append(await request.json())
        status, body = served.replies.pop(0)
        return web.json_response(body, status=status)

    async def next_task(_: web.Request) -> web.Response:
        return web.Response(
            text="<title>Next task</title><h1>Next task</h1>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/task/{name}", page)
    app.router.add_get("/crowd-html-elements.js", script)
    app.router.add_get("/cat.png", cat)
    app.router.add_post("/submit", submit)
    app.router.add_get("/next", next_task)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    served.url = f"http://{host}:{port}"
    try:
        yield served
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def page() -> AsyncIterator[Page]:
    """A Chromium page that may reach loopback only; script errors on it fail the test."""
    async with loopback_page() as seen:
        yield seen.page


def template(body: str, *, submit_url: str | None = None) -> str:
    """A worker task page as the portal serves it: the script first, then the template."""
    meta = f'<meta name="crowd-sandbox-submit" content="{submit_url}">' if submit_url else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8">{meta}<title>Task</title></head>'
        f'<body><script src="/crowd-html-elements.js"></script>\n{body}\n</body></html>'
    )


async def open_task(page: Page, site: Site, name: str, body: str, **options: Any) -> None:
    site.pages[name] = template(body, **options)
    await page.goto(f"{site.url}/task/{name}")
    await expect(page.locator("crowd-form form")).to_have_count(1)  # rendered


async def record_submissions(page: Page) -> None:
    """Keeps every crowd-submit event's answerContent in window.submitted (listened for on the
    document: the event bubbles)."""
    await page.evaluate(
        """() => {
            window.submitted = [];
            document.addEventListener(
                "crowd-submit", (event) => window.submitted.push(event.detail.answerContent)
            );
        }"""
    )


async def submitted(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate("window.submitted")
    return events


async def previewed(page: Page) -> dict[str, Any]:
    """The answer the preview shows under the form, once it is there."""
    shown = page.locator("pre#crowd-sandbox-answer")
    await expect(shown).to_be_visible()
    answer: dict[str, Any] = json.loads(await shown.inner_text())
    return answer


async def images_loaded(page: Page) -> None:
    await page.wait_for_function(
        "() => [...document.images].every((image) => image.complete && image.naturalWidth > 0)"
    )


async def draw_box(
    page: Page, image: Locator, start: tuple[int, int], end: tuple[int, int]
) -> None:
    """Press, drag and release the mouse over the image; points are in displayed pixels."""
    await image.scroll_into_view_if_needed()
    shown = await image.bounding_box()
    assert shown is not None
    await page.mouse.move(shown["x"] + start[0], shown["y"] + start[1])
    await page.mouse.down()
    await page.mouse.move(shown["x"] + end[0], shown["y"] + end[1], steps=6)
    await page.mouse.up()


EVERY_ELEMENT = f"""
<style>crowd-bounding-box img {{ width: {SHOWN_WIDTH}px; }}</style>
<crowd-form>
  <crowd-instructions link-text="View instructions" link-type="button">
    <short-summary><p>Label the animal.</p></short-summary>
    <detailed-instructions><p>Look at the whole picture.</p></detailed-instructions>
    <positive-example><p>A cat labelled Cat.</p></positive-example>
    <negative-example><p>A cat labelled Dog.</p></negative-example>
  </crowd-instructions>
  <crowd-alert type="info">Take your time.</crowd-alert>
  <crowd-card heading="The event"><p>Camera 7, 09:14</p></crowd-card>

  <crowd-classifier name="category" categories="['Cat', 'Dog', 'Other']"
                    header="What does the text describe?">
    <classification-target><p>Whiskers, a tail and a loud purr.</p></classification-target>
    <full-instructions header="Classifying text">
      <p>Choose the closest animal.</p>
    </full-instructions>
    <short-instructions><p>Pick the animal.</p></short-instructions>
  </crowd-classifier>
  <crowd-classifier-multi-select name="traits" categories='["Fluffy", "Sleepy", "Loud"]'
                                 header="Which traits apply?">
    <classification-target>A sleepy, fluffy cat.</classification-target>
  </crowd-classifier-multi-select>
  <crowd-image-classifier name="photo" src="/cat.png" categories="['Cat', 'Dog']"
                          header="What is in the image?">
    <worker-comment header="Why this label?" link-text="Add a comment"></worker-comment>
  </crowd-image-classifier>
  <crowd-image-classifier-multi-select name="scene" src="/cat.png" header="What fits the image?"
      categories="['Indoors', 'Daylight']" exclusion-category="{{ text: 'None of these' }}">
  </crowd-image-classifier-multi-select>

  <crowd-input name="tag" label="One word"></crowd-input>
  <crowd-input name="count" label="How many animals" type="number"></crowd-input>
  <crowd-text-area name="notes" label="Notes" rows="3"></crowd-text-area>
  <crowd-checkbox name="quality" value="blurry">Blurry</crowd-checkbox>
  <crowd-checkbox name="quality" value="dim">Too dim</crowd-checkbox>
  <crowd-checkbox name="verified">Instructions were clear</crowd-checkbox>
  <crowd-toggle-button name="reviewed" value="done">Reviewed</crowd-toggle-button>
  <crowd-radio-group>
    <crowd-radio-button name="agree" value="yes">I agree</crowd-radio-button>
    <crowd-radio-button name="disagree" value="no">I disagree</crowd-radio-button>
  </crowd-radio-group>
  <crowd-slider name="confidence" min="1" max="10" step="1"></crowd-slider>
  <crowd-bounding-box name="animals" src="/cat.png" labels="['Cat', 'Dog']"
                      header="Box every animal">
    <short-instructions>Draw one box around each animal.</short-instructions>
  </crowd-bounding-box>

  <p><label for="reviewer">Reviewer</label> <input id="reviewer" name="reviewer"></p>
  <p><label for="mood">Mood</label>
     <select id="mood" name="mood"><option value="">(choose)</option><option>happy</option>
       <option>sad</option></select></p>
  <p><label><input type="checkbox" name="flagged"> Flag for audit</label></p>
  <p><label for="remarks">Remarks</label> <textarea id="remarks" name="remarks"></textarea></p>
</crowd-form>
"""

EVERY_ELEMENT_FILLED = {
    "category": {"label": "Cat"},
    "traits": {"labels": ["Fluffy", "Sleepy"]},
    "photo": {"label": "Dog", "workerComment": "Pointy ears"},
    "scene": {"labels": ["Daylight"]},
    "tag": "tabby",
    "count": "3",  # the docs: crowd-input answers the text entered, whatever its type
    "notes": "Line one\nline two",
    "quality": {"blurry": True, "dim": False},
    "verified": {"on": True},
    "reviewed": {"done": True},
    "agree": {"yes": True},
    "disagree": {"no": False},
    "confidence": 7,
    "animals": {
        "boundingBoxes": [
            {"height": 100, "label": "Dog", "left": 21, "top": 40, "width": 100},
            {"height": 80, "label": "Cat", "left": 220, "top": 20, "width": 80},
        ],
        "inputImageProperties": {"height": 200, "width": 400},
    },
    "reviewer": "ana",
    "mood": "happy",
    "flagged": True,
    "remarks": "ok",
}


async def test_every_element_filled_by_a_person_gives_the_documented_answer(
    page: Page, site: Site
) -> None:
    await open_task(page, site, "every", EVERY_ELEMENT)
    await record_submissions(page)
    await images_loaded(page)

    # The instructions open in a dialog with tabs, and close with Escape.
    await page.get_by_role("button", name="View instructions").click()
    dialog = page.get_by_role("dialog", name="Instructions")
    await expect(dialog.get_by_text("Label the animal.")).to_be_visible()
    await dialog.get_by_role("tab", name="Examples").click()
    await expect(dialog.get_by_text("A cat labelled Dog.")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("crowd-alert")).to_have_text("Take your time.")
    await expect(page.locator("crowd-card")).to_contain_text("The event")

    # Classifier: a click on Dog, then the arrow key back to Cat.
    classifier = page.locator("crowd-classifier")
    await expect(classifier.get_by_text("Whiskers, a tail and a loud purr.")).to_be_visible()
    await classifier.get_by_text("View full instructions").click()
    await expect(classifier.get_by_text("Choose the closest animal.")).to_be_visible()
    await classifier.get_by_label("Dog").click()
    await page.keyboard.press("ArrowLeft")
    await expect(classifier.get_by_label("Cat")).to_be_checked()

    traits = page.locator("crowd-classifier-multi-select")
    for trait in ("Fluffy", "Sleepy", "Loud", "Loud"):  # Loud twice: chosen, then taken back
        await traits.get_by_text(trait, exact=True).click()

    photo = page.locator("crowd-image-classifier")
    await photo.get_by_text("Dog", exact=True).click()
    await photo.get_by_text("Add a comment").click()
    await photo.get_by_label("Why this label?").press_sequentially("Pointy ears")
    scene = page.locator("crowd-image-classifier-multi-select")
    await scene.get_by_text("None of these").click()
    await scene.get_by_text("Daylight").click()  # a category clears the exclusion choice

    await page.get_by_label("One word").press_sequentially("tabby")
    await page.get_by_label("How many animals").press_sequentially("3")
    notes = page.get_by_label("Notes", exact=True)
    await notes.press_sequentially("Line one")
    await notes.press("Enter")  # a new line, not a submission
    await notes.press_sequentially("line two")

    await page.get_by_text("Blurry").click()
    await page.get_by_label("Instructions were clear").press("Space")
    await page.get_by_role("switch", name="Reviewed").click()
    await page.get_by_label("I disagree").click()
    await page.keyboard.press("ArrowUp")  # the group moves to "I agree"
    await expect(page.get_by_label("I disagree")).not_to_be_checked()

    slider = page.get_by_role("slider", name="confidence")
    await expect(page.locator("crowd-slider output")).to_have_text("No value chosen yet")
    await slider.click()
    for key in ("End", "ArrowLeft", "ArrowLeft", "ArrowLeft"):
        await slider.press(key)
    await expect(page.locator("crowd-slider output")).to_have_text("7")

    # Boxes: Dog chosen for new boxes; three drawn; the second relabelled, the third deleted,
    # the first selected by a click and moved one image pixel right with the arrow key.
    boxes = page.locator("crowd-bounding-box")
    image = boxes.locator("img")
    await boxes.get_by_role("group", name="Label for new boxes").get_by_text("Dog").click()
    await draw_box(page, image, (10, 20), (60, 70))
    await draw_box(page, image, (150, 50), (110, 10))  # drawn up and to the left
    await draw_box(page, image, (170, 60), (190, 90))
    drawn = boxes.get_by_role("list", name="Boxes drawn").get_by_role("listitem")
    await expect(drawn).to_have_count(3)
    await expect(drawn.nth(0)).to_contain_text("Box 1: left 20, top 40, width 100, height 100")
    await boxes.get_by_label("Label of box 2").select_option("Cat")
    await boxes.get_by_role("button", name="Delete box 3").click()
    await expect(drawn).to_have_count(2)
    first = boxes.locator(".crowd-sandbox-box").first
    await first.click()
    await page.keyboard.press("ArrowRight")
    await expect(drawn.nth(0)).to_contain_text("Box 1: left 21, top 40, width 100, height 100")
    await expect(boxes.locator(".crowd-sandbox-box-tag")).to_have_text(["Dog", "Cat"])

    await page.get_by_label("Reviewer").press_sequentially("ana")
    await page.get_by_label("Mood").select_option("happy")
    await page.get_by_label("Flag for audit").click()
    await page.get_by_label("Remarks").press_sequentially("ok")

    assert await page.evaluate("window.crowdSandbox.answerContent()") == EVERY_ELEMENT_FILLED
    await page.get_by_role("button", name="Submit").click()
    assert await previewed(page) == EVERY_ELEMENT_FILLED
    assert await submitted(page) == [EVERY_ELEMENT_FILLED]


REQUIRED = """
<crowd-form>
  <crowd-classifier name="animal" categories="['Cat', 'Dog']" header="Which animal is it?" required>
    <classification-target>Meow.</classification-target>
  </crowd-classifier>
  <crowd-input name="why" label="Why?" required></crowd-input>
  <p><label for="mood">Mood</label>
     <select id="mood" name="mood" required><option value="">(choose)</option><option>calm</option>
     </select></p>
</crowd-form>
<script>
  // As AWS's examples do: a template's own check in onsubmit, stopping with preventDefault.
  document.querySelector("crowd-form").onsubmit = (event) => {
    if (!window.allowed) event.preventDefault();
  };
</script>
"""


async def test_a_required_field_left_empty_blocks_the_submission_and_says_which(
    page: Page, site: Site
) -> None:
    await open_task(page, site, "required", REQUIRED)
    await record_submissions(page)
    message = page.locator(".crowd-sandbox-message")
    classifier = page.locator("crowd-classifier")

    await page.get_by_role("button", name="Submit").click()
    await expect(message).to_have_text(
        "Please complete before submitting: Which animal is it? (animal); Why? (why); Mood (mood)."
    )
    await expect(classifier.get_by_text("This answer is required.")).to_be_visible()
    await expect(classifier.get_by_label("Cat")).to_be_focused()  # taken to the first one
    assert await submitted(page) == []
    await expect(page.locator("#crowd-sandbox-answer")).to_have_count(0)

    await page.keyboard.press("Space")  # chooses the focused Cat
    await expect(classifier.get_by_text("This answer is required.")).to_be_hidden()
    await page.get_by_role("button", name="Submit").click()
    await expect(message).to_have_text(
        "Please complete before submitting: Why? (why); Mood (mood)."
    )
    await page.get_by_label("Why?").press_sequentially("It meows")
    await page.get_by_label("Mood").select_option("calm")

    await page.get_by_role("button", name="Submit").click()  # the template's onsubmit says no
    await expect(message).to_have_text("")
    assert await submitted(page) == []
    await page.evaluate("window.allowed = true")
    await page.get_by_role("button", name="Submit").click()
    expected = {"animal": {"label": "Cat"}, "why": "It meows", "mood": "calm"}
    assert await previewed(page) == expected
    assert await submitted(page) == [expected]


PORTAL = """
<crowd-form>
  <crowd-classifier name="label" categories='["cat", "dog"]' header="Which label is right?">
    <classification-target>event e-1</classification-target>
  </crowd-classifier>
  <crowd-text-area name="comment" label="Comment (optional)" rows="2"></crowd-text-area>
  <crowd-button form-action="submit" variant="primary">Send answer</crowd-button>
</crowd-form>
"""


async def test_with_a_submit_url_the_answer_is_posted_and_the_server_decides_what_follows(
    page: Page, site: Site
) -> None:
    message = page.locator(".crowd-sandbox-message")
    send = page.get_by_role("button", name="Send answer")

    # A refusal shows the server's message and leaves the form usable; a 2xx says Submitted.
    site.replies = [
        (409, {"message": "This task was already submitted by another reviewer."}),
        (200, {}),
    ]
    await open_task(page, site, "portal", PORTAL, submit_url="/submit")
    await expect(page.get_by_role("button", name="Submit")).to_have_count(0)  # crowd-button is it
    await page.locator("crowd-classifier").get_by_text("cat", exact=True).click()
    await send.click()
    await expect(message).to_have_text("This task was already submitted by another reviewer.")
    await expect(send).to_have_attribute("aria-disabled", "false")
    await page.get_by_label("Comment (optional)").press_sequentially("second try")
    await send.press("Enter")  # the keyboard works the crowd-button too
    await expect(message).to_have_text("Submitted")
    await expect(send).to_have_attribute("aria-disabled", "true")  # no second submission
    assert site.received == [
        {"answerContent": {"label": {"label": "cat"}}},
        {"answerContent": {"label": {"label": "cat"}, "comment": "second try"}},
    ]
    assert site.content_types == ["application/json", "application/json"]
    await expect(page.locator("#crowd-sandbox-answer")).to_have_count(0)  # no preview here

    # A 2xx with "next" takes the reviewer there.
    site.replies = [(200, {"next": "/next"})]
    await open_task(page, site, "portal", PORTAL, submit_url=f"{site.url}/submit")
    await page.locator("crowd-classifier").get_by_text("dog", exact=True).click()
    await send.click()
    await page.wait_for_url(f"{site.url}/next")
    await expect(page.get_by_role("heading", name="Next task")).to_be_visible()
    assert site.received[2:] == [{"answerContent": {"label": {"label": "dog"}}}]


EMPTY = """
<crowd-form>
  <crowd-classifier name="category" categories="['Cat', 'Dog']" header="Animal?"></crowd-classifier>
  <crowd-classifier-multi-select name="traits" categories="['Fluffy', 'Loud']" header="Traits?">
  </crowd-classifier-multi-select>
  <crowd-image-classifier name="photo" src="/cat.png" categories="['Cat']" header="Image?">
  </crowd-image-classifier>
  <crowd-input name="tag" label="Tag"></crowd-input>
  <crowd-input name="preset" label="Preset" value="as given"></crowd-input>
  <crowd-text-area name="notes" label="Notes"></crowd-text-area>
  <crowd-image-classifier-multi-select name="scene" src="/cat.png" categories="['Indoors']"
      header="Scene?"></crowd-image-classifier-multi-select>
  <crowd-checkbox name="blurry" value="yes">Blurry</crowd-checkbox>
  <crowd-toggle-button name="toggled"></crowd-toggle-button>
  <crowd-radio-group>
    <crowd-radio-button name="agree">I agree</crowd-radio-button>
  </crowd-radio-group>
  <crowd-slider name="untouched" min="0" max="10"></crowd-slider>
  <crowd-slider name="preset-level" min="0" max="10" value="4"></crowd-slider>
  <crowd-bounding-box name="animals" src="/cat.png" labels="['Cat']" header="Boxes">
  </crowd-bounding-box>
  <p><label for="reviewer">Reviewer</label> <input id="reviewer" name="reviewer"></p>
  <p><label for="mood">Mood</label>
     <select id="mood" name="mood"><option value="">(choose)</option><option>calm</option>
     </select></p>
  <p><label><input type="checkbox" name="flagged"> Flag</label></p>
  <p><label><input type="radio" name="size" value="small"> Small</label></p>
</crowd-form>
"""

#: Left empty, only what the docs show as false remains (checkboxes, radio buttons), and presets.
EMPTY_ANSWER = {
    "preset": "as given",
    "blurry": {"yes": False},
    "toggled": {"on": False},
    "agree": {"on": False},
    "preset-level": 4,
    "flagged": False,
}


async def test_optional_elements_left_empty_are_absent_from_the_answer(
    page: Page, site: Site
) -> None:
    await open_task(page, site, "empty", EMPTY)
    await record_submissions(page)
    await images_loaded(page)
    assert await page.evaluate("window.crowdSandbox.answerContent()") == EMPTY_ANSWER

    # Filled and emptied again is empty too.
    await page.get_by_label("Tag").press_sequentially("x")
    await page.get_by_label("Tag").press("Backspace")
    await page.locator("crowd-classifier-multi-select").get_by_text("Loud").click()
    await page.locator("crowd-classifier-multi-select").get_by_text("Loud").click()
    await draw_box(page, page.locator("crowd-bounding-box img"), (20, 20), (80, 60))
    await page.get_by_role("button", name="Delete box 1").click()
    await page.get_by_label("Reviewer").press_sequentially("a")
    await page.get_by_label("Reviewer").press("Backspace")

    await page.get_by_role("button", name="Submit").click()
    assert await previewed(page) == EMPTY_ANSWER
    assert await submitted(page) == [EMPTY_ANSWER]


CATEGORIES = ["Cat", "Dog", "Don't know", '<b>x</b> & "y"']
#: What Liquid's ``{{ labels | to_json | escape }}`` writes, and the same escaped once more (A2I
#: escapes output by default, so a template that adds ``| escape`` escapes twice).
ESCAPED = html.escape(json.dumps(CATEGORIES))
ESCAPED_TWICE = html.escape(ESCAPED)

CATEGORY_FORMS = f"""
<crowd-form>
  <crowd-classifier name="quoted" header="Single-quoted list"
    categories="['Cat', 'Dog', 'Don\\'t know']"></crowd-classifier>
  <crowd-classifier name="escaped" header="Escaped JSON" categories="{ESCAPED}"></crowd-classifier>
  <crowd-classifier-multi-select name="twice" header="Escaped twice"
    categories="{ESCAPED_TWICE}" exclusion-category="{{ text: 'None of these' }}">
  </crowd-classifier-multi-select>
  <crowd-bounding-box name="animals" src="/cat.png" labels="['Cat', 'Don\\'t know']"
    header="Boxes"></crowd-bounding-box>
</crowd-form>
<style>crowd-bounding-box img {{ width: {SHOWN_WIDTH}px; }}</style>
"""


async def test_categories_as_a_quoted_list_or_as_escaped_json_show_the_same_choices(
    page: Page, site: Site
) -> None:
    # This page gets the script after its content (set_content, then the script tag), on a
    # loopback origin so that the image's URL resolves.
    site.pages["blank"] = "<!doctype html><title>Task</title>"
    await page.goto(f"{site.url}/task/blank")
    await page.set_content(CATEGORY_FORMS)
    await page.add_script_tag(path=str(SCRIPT))
    await record_submissions(page)
    await images_loaded(page)

    def choices(name: str) -> Locator:
        return page.locator(f"[name={name}] .crowd-sandbox-choice")

    await expect(choices("quoted")).to_have_text(["Cat", "Dog", "Don't know"])
    await expect(choices("escaped")).to_have_text(CATEGORIES)
    await expect(choices("twice")).to_have_text([*CATEGORIES, "None of these"])
    picker = page.locator("[name=animals]").get_by_role("group", name="Label for new boxes")
    await expect(picker.locator(".crowd-sandbox-choice")).to_have_text(["Cat", "Don't know"])

    await choices("quoted").get_by_text("Don't know").click()
    await choices("escaped").get_by_text('<b>x</b> & "y"').click()
    twice = page.locator("[name=twice]")
    await twice.get_by_text("None of these").click()
    await twice.get_by_text("Dog").click()  # a category clears the exclusion choice
    await twice.get_by_text("Don't know").click()
    await picker.get_by_text("Don't know").click()
    await draw_box(page, page.locator("[name=animals] img"), (0, 0), (50, 25))

    await page.get_by_role("button", name="Submit").click()
    expected = {
        "quoted": {"label": "Don't know"},
        "escaped": {"label": '<b>x</b> & "y"'},
        "twice": {"labels": ["Dog", "Don't know"]},
        "animals": {
            "boundingBoxes": [
                {"height": 50, "label": "Don't know", "left": 0, "top": 0, "width": 100}
            ],
            "inputImageProperties": {"height": 200, "width": 400},
        },
    }
    assert await previewed(page) == expected
    assert await submitted(page) == [expected]
