"""A person in the loop: headless Chromium labels a task the router created in Label Studio.

The router runs on the sandbox's Label Studio with one route to the ``never`` flow, whose
simulated annotators never pick a task up, so the only annotation is the one made here in the
browser: log in, open the task, choose a label, submit. The reviewed envelope on the output
topic must carry that label. A screenshot of the task page is kept in the test's temporary
folder (``label-studio-task.png``; its path is printed).

Before choosing, the test reads the task as the reviewer sees it (``labelstudio/tasks.py``): the
projected fields as a table of dotted names and readable values (the event's own label,
confidence and scores, and a field the projection leaves out, not among them), the image of
``image_field`` (served from loopback by the test, and loaded) and the text of ``text_field``,
the model's label and confidence once, its scores once, the model's label pre-selected, and
no JSON anywhere in the form.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from playwright.async_api import Locator, async_playwright, expect

from stream_router.labelstudio.client import LabelStudioClient, name_filter
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS, png
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import config, create_topics

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

#: The labeling form of the task page (Label Studio's editor, without its Data Manager table).
FORM = "[class*='main-view__annotation']"
#: The image the task shows: 96 x 64 pixels, so the test can tell it loaded.
IMAGE_SIZE = (96, 64)


@asynccontextmanager
async def image_server(served: list[str]) -> AsyncIterator[str]:
    """An HTTP server on loopback serving ``/cat.png``; its base URL. Paths asked for go to
    ``served``."""
    image = png(*IMAGE_SIZE, (120, 120, 130))

    async def cat(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=image, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat.png", cat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def cells(table: Locator) -> list[list[str]]:
    """The text of each body row's cells."""
    return [
        await row.locator("td").all_inner_texts() for row in await table.locator("tbody tr").all()
    ]


async def test_a_person_labels_a_task_in_the_browser_and_the_label_is_published(
    sandbox: Sandbox,
    label_studio_info: SandboxInfo,
    sandbox_env: dict[str, str],
    tmp_path: Path,
) -> None:
    info = label_studio_info
    assert info.label_studio_url
    assert info.label_studio_token
    assert info.label_studio_user
    assert info.label_studio_password
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    settings = config(Backend("label-studio", info), tag, tmp_path)
    settings["policies"]["routes"][0]["review_flow"] = "never"
    settings["review"]["backend"]["projects"]["never"]["deadline_s"] = 600.0
    settings["review"]["backend"]["image_field"] = "photo"
    settings["review"]["backend"]["text_field"] = "caption"
    settings["review"]["projection"] = [
        "event_id", "label", "confidence", "scores", "model", "model_version", "photo",
        "caption", "camera.id", "camera.exposure_s", "amount",
    ]  # fmt: skip
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    event_id = f"{tag}-person"
    served: list[str] = []
    caption = "A grey cat on a mat, or a small dog?"
    project = info.label_studio_projects["never"]
    shot = tmp_path / "label-studio-task.png"

    process = router(path, "all", sandbox_env)
    async with (
        image_server(served) as images,
        TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader,
        LabelStudioClient(info.label_studio_url, info.label_studio_token) as admin,
    ):
        event = {
            "event_id": event_id, "label": "cat", "confidence": 0.3,
            "scores": {"cat": 0.3, "dog": 0.2}, "model": "pets", "model_version": "m1",
            "photo": f"{images}/cat.png", "caption": caption,
            "camera": {"id": 7, "exposure_s": 0.0123456, "serial": "left out"},
            "amount": 1234.5, "secret": "not-for-reviewers",
        }  # fmt: skip
        await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", [json_record(event, "k")])
        process.start()
        try:
            await process.wait_ready_async(60)
            await reader.until(lambda r: len(r.records[f"rr-{tag}"]) == 1, 60)
            [request] = reader.values(f"rr-{tag}")
            query = name_filter(NAME_FIELD, request["loop_name"])

            async def created() -> list[int]:
                return [int(t["id"]) async for t in admin.tasks(project, query=query)]

            task_ids: list[int] = []
            deadline = time.monotonic() + 60
            while not task_ids:  # the router creates it at its own pace
                task_ids = await created()
                assert task_ids or time.monotonic() < deadline, "no task within 60 s"
                if not task_ids:
                    await reader.poll()  # waits up to 200 ms for records: a paced re-check
            [task_id] = task_ids

            async with async_playwright() as driver:
                browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                await page.goto(f"{info.label_studio_url}/user/login/")
                await page.fill("input[name=email]", info.label_studio_user)
                await page.fill("input[name=password]", info.label_studio_password)
                await page.click("button[type=submit]")
                await page.wait_for_url(lambda url: "/user/login" not in url)
                await page.goto(f"{info.label_studio_url}/projects/{project}/data?task={task_id}")
                form = page.locator(FORM)
                said = form.get_by_text("Model: cat (confidence 0.3)", exact=True)
                await expect(said).to_have_count(1)  # waits for the task to render
                await expect(
                    form.get_by_text("Scores: cat 0.3 · dog 0.2", exact=True)
                ).to_have_count(1)
                await expect(form.get_by_text(caption, exact=True)).to_have_count(1)
                table = form.locator("table")
                await expect(table.locator("tbody tr")).to_have_count(6)
                assert await table.locator("thead th").all_inner_texts() == ["Field", "Value"]
                assert await cells(table) == [
                    ["event_id", event_id],
                    ["model", "pets"],
                    ["model_version", "m1"],
                    ["camera.id", "7"],
                    ["camera.exposure_s", "0.01235"],
                    ["amount", "1234.5"],
                ]
                image = form.locator('img[alt="photo"]')
                await expect(image).to_have_count(1)
                loaded = await image.element_handle()
                await page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=loaded)
                size = await image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
                assert tuple(size) == IMAGE_SIZE
                assert set(served) == {"/cat.png"}  # the browser loaded it from here
                checked = form.locator("label.ant-radio-wrapper-checked")
                # the model's label pre-selected (a choice's text ends in its hotkey, "[1]")
                await expect(checked).to_have_text([re.compile(r"^cat(\[\d+\])?$")])
                text = await form.inner_text()
                assert text.count("confidence") == 1
                assert text.count("Model:") == 1
                for unwanted in ("{", "}", '":', "not-for-reviewers", "left out", "_identity"):
                    assert unwanted not in text, (unwanted, text)
                choice = form.locator("label.ant-radio-wrapper", has_text="dog")
                await choice.click()
                await expect(checked).to_have_text([re.compile(r"^dog(\[\d+\])?$")])
                await page.screenshot(path=str(shot), full_page=True)
                await page.get_by_label("Submit current annotation").click()
                await reader.until(lambda r: len(r.records[f"out-{tag}"]) >= 1, 60)
                await browser.close()
        finally:
            code = await process.stop_async()
    assert code == 0, process.output_tail()
    print(f"screenshot of the task page: {shot}")
    assert shot.stat().st_size > 10_000
    [envelope] = reader.values(f"out-{tag}")
    assert envelope["event_id"] == event_id
    assert envelope["decision"] == "reviewed"
    assert envelope["review"]["backend"] == "label-studio"
    assert envelope["review"]["label"] == "dog"
    assert envelope["review"]["corrected"] is True
    [answer] = envelope["review"]["answers"]
    assert answer["content"] == {"label": {"label": "dog"}}
