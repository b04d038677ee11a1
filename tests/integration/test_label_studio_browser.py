"""A person in the loop: headless Chromium labels a task the router created in Label Studio.

The router runs on the sandbox's Label Studio with one route to the ``never`` flow, whose
simulated annotators never pick a task up, so the only annotation is the one made here in the
browser: log in, open the task, choose a label, submit. The reviewed envelope on the output
topic must carry that label. A screenshot of the task page is kept in the test's temporary
folder (``label-studio-task.png``; its path is printed).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from playwright.async_api import async_playwright

from stream_router.labelstudio.client import LabelStudioClient, name_filter
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import config, create_topics

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

#: How the machine's own Chromium runs here: headless, and nothing beyond loopback.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


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
    settings["review"]["label_studio"]["projects"]["never"]["deadline_s"] = 600.0
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    event_id = f"{tag}-person"
    event = {"event_id": event_id, "label": "cat", "confidence": 0.3, "model_version": "m1"}
    await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", [json_record(event, "k")])
    project = info.label_studio_projects["never"]
    shot = tmp_path / "label-studio-task.png"

    process = router(path, "all", sandbox_env)
    process.start()
    async with (
        TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader,
        LabelStudioClient(info.label_studio_url, info.label_studio_token) as admin,
    ):
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
                choice = page.locator("label.ant-radio-wrapper", has_text="dog")
                await choice.click()
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
