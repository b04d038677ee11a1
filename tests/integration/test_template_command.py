"""``stream-router template check`` and ``template preview``, run as a user runs them.

Each command is a child process (``python -m stream_router.cli template ...``) with the
environment minus any ``STREAM_ROUTER_*`` override, so only the files it is given count. The
check reports what A2I would refuse and the answer paths a template produces, and says whether
the router's ``review.answer_path`` (given, or read from a router configuration) is one of
them. The preview writes one self-contained page; the last test opens it in headless Debian
Chromium from a ``file://`` URL, with every other request aborted and failing the test, fills
the classifier and submits: the page shows the answer A2I would store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Request, Route, async_playwright, expect

import stream_router
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_crowd_elements_browser import previewed

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(stream_router.__file__).parent / "sandbox/a2i/static/crowd-html-elements.js"

TEMPLATE = """<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <crowd-classifier name="sentiment" categories="{{ task.input.choices | to_json | escape }}"
      header="What sentiment does the review express?">
    <classification-target><p>{{ task.input.text }}</p></classification-target>
    <full-instructions header="Sentiment">Read the review; choose one.</full-instructions>
    <short-instructions>Choose the sentiment.</short-instructions>
  </crowd-classifier>
  <crowd-text-area name="reason" label="Why?"></crowd-text-area>
  <crowd-checkbox name="sarcastic" value="yes">The review is sarcastic</crowd-checkbox>
</crowd-form>
"""
REVIEW = "<b>Broke</b> after two days"
CHOICES = ["Positive", "Negative", "Neutral"]
SAMPLE = {"text": REVIEW, "choices": CHOICES}
PATHS = ["sentiment.label", "reason", "sarcastic.yes"]


def stream_router_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``stream-router ARGS`` in a child process, without STREAM_ROUTER_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_ROUTER_")}
    return subprocess.run(
        [sys.executable, "-m", "stream_router.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def listed_paths(stdout: str) -> list[str]:
    """The answer paths ``template check`` lists (indented lines after their heading)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("answer paths"))
    return [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The template and its sample input, written where a user keeps them."""
    template = tmp_path / "sentiment.liquid.html"
    template.write_text(TEMPLATE, encoding="utf-8")
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(SAMPLE), encoding="utf-8")
    return {"template": template, "sample": sample}


def test_check_a_good_template_lists_its_answer_paths(files: dict[str, Path]) -> None:
    done = stream_router_cli("template", "check", files["template"], "--input", files["sample"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert listed_paths(done.stdout) == PATHS
    assert "error:" not in done.stdout
    assert "warning:" not in done.stdout
    assert done.stdout.rstrip().endswith("A2I would accept this template")


def test_check_without_a_sample_warns_that_categories_come_from_the_input(
    files: dict[str, Path],
) -> None:
    done = stream_router_cli("template", "check", files["template"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert listed_paths(done.stdout) == PATHS
    assert "no sample input was given" in done.stdout
    assert "A2I would accept this template (see warnings)" in done.stdout


def test_check_a_template_without_crowd_form_fails_naming_it(tmp_path: Path) -> None:
    template = tmp_path / "loose.html"
    template.write_text(
        "<crowd-classifier name='label' categories='[\"cat\", \"dog\"]'></crowd-classifier>\n",
        encoding="utf-8",
    )
    done = stream_router_cli("template", "check", template)
    assert done.returncode == 1
    assert "error: no <crowd-form>" in done.stdout
    assert "outside <crowd-form>" in done.stdout  # and why it matters for the element
    assert "A2I would accept" not in done.stdout


def test_check_a_liquid_syntax_error_fails_with_its_line(tmp_path: Path) -> None:
    template = tmp_path / "broken.html"
    template.write_text(
        "<crowd-form>\n  <p>{{ task.input.text }}</p>\n  {% if %}yes{% endif %}\n</crowd-form>\n",
        encoding="utf-8",
    )
    done = stream_router_cli("template", "check", template)
    assert done.returncode == 1
    [error] = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert error == "error: the template does not render: line 3: missing expression"


def test_check_an_answer_path_the_template_does_not_produce_fails(files: dict[str, Path]) -> None:
    common = ("template", "check", files["template"], "--input", files["sample"])
    missing = stream_router_cli(*common, "--answer-path", "label.label")
    assert missing.returncode == 1
    assert "review.answer_path label.label: NOT produced by this template" in missing.stdout

    found = stream_router_cli(*common, "--answer-path", "sentiment.label")
    assert found.returncode == 0, found.stdout + found.stderr
    assert "review.answer_path sentiment.label: produced by this template" in found.stdout


def router_config(tmp_path: Path, answer_path: str | None) -> Path:
    """config/router.yaml, with ``review.answer_path`` set when given."""
    config: dict[str, Any] = yaml.safe_load((REPO / "config/router.yaml").read_text("utf-8"))
    if answer_path is not None:
        config["review"]["answer_path"] = answer_path
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_check_with_a_router_config_reads_its_answer_path(
    files: dict[str, Path], tmp_path: Path
) -> None:
    common = ("template", "check", files["template"], "--input", files["sample"])
    config = router_config(tmp_path, "sentiment.label")
    done = stream_router_cli(*common, "--config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "review.answer_path sentiment.label: produced by this template" in done.stdout

    default = router_config(tmp_path, None)  # review.answer_path unset: label.label
    done = stream_router_cli(*common, "--config", default)
    assert done.returncode == 1
    assert "review.answer_path label.label: NOT produced by this template" in done.stdout


def test_check_the_shipped_review_template_against_the_shipped_config() -> None:
    done = stream_router_cli(
        "template", "check", "config/review-task.liquid.html", "--config", "config/router.yaml"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "review.answer_path label.label: produced by this template" in done.stdout


def test_check_with_a_broken_router_config_says_what_is_wrong(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("review:\n  answer_path: 7\n  no_such_key: 1\n", encoding="utf-8")
    done = stream_router_cli("template", "check", files["template"], "--config", config)
    assert done.returncode == 2
    assert "no_such_key" in done.stderr
    assert "Traceback" not in done.stderr


class _Resources(HTMLParser):
    """Every URL a page's tags refer to, and the text of its script tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in {"src", "href", "action", "srcset"} and v]
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def test_preview_writes_a_self_contained_page(files: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    done = stream_router_cli(
        "template", "preview", files["template"], "--input", files["sample"], "--output", page
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(page) in done.stdout
    written = page.read_text(encoding="utf-8")
    resources = _Resources()
    resources.feed(written)
    resources.close()
    assert resources.urls == []  # no script, style or image from anywhere
    assert resources.scripts == [SCRIPT.read_text(encoding="utf-8")]  # inlined as it is
    assert 'src="https://assets.crowd.aws' not in written
    assert "&lt;b&gt;Broke&lt;/b&gt; after two days" in written  # the input, escaped


def test_preview_of_a_broken_template_fails_and_writes_nothing(tmp_path: Path) -> None:
    template = tmp_path / "broken.html"
    template.write_text("<crowd-form>\n{% for %}\n</crowd-form>\n", encoding="utf-8")
    page = tmp_path / "page.html"
    done = stream_router_cli("template", "preview", template, "--output", page)
    assert done.returncode == 1
    assert "line 2" in done.stdout
    assert not page.exists()


@pytest.mark.integration
async def test_the_preview_works_offline_in_a_browser_and_shows_the_answer(
    files: dict[str, Path], tmp_path: Path
) -> None:
    page_file = tmp_path / "page.html"
    done = stream_router_cli(
        "template", "preview", files["template"], "--input", files["sample"], "--output", page_file
    )
    assert done.returncode == 0, done.stdout + done.stderr
    url = page_file.as_uri()
    others: list[str] = []
    errors: list[str] = []

    async def only_the_file(route: Route, request: Request) -> None:
        if request.url == url:
            await route.continue_()
        else:
            others.append(request.url)
            await route.abort()

    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            await context.route("**/*", only_the_file)
            page = await context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            await page.goto(url)

            classifier = page.locator("crowd-classifier")
            await expect(classifier.get_by_text(REVIEW, exact=True)).to_be_visible()
            await expect(classifier.locator(".crowd-sandbox-choice")).to_have_text(CHOICES)
            await classifier.get_by_label("Negative").click()
            await page.get_by_role("button", name="Submit").click()
            assert await previewed(page) == {
                "sentiment": {"label": "Negative"},
                "sarcastic": {"yes": False},
            }
        finally:
            await browser.close()
    assert others == [], f"the preview asked for more than its file: {others}"
    assert requested == [url]
    assert errors == [], f"errors on the page: {errors}"
