"""A person in the A2I loop: headless Chromium answers, in the sandbox's worker portal, a review
the router started, and the router publishes that answer.

The route sends reviews to the sandbox flow ``slow``, whose simulated workers pick a task up only
after 300 s, so the portal offers it to a person meanwhile. The test finds the portal where an
A2I user would (``DescribeWorkteam``'s ``SubDomain``), takes the task, reads the model's label
on the page the flow's template renders, chooses another label and submits. The answer goes the
way every A2I answer goes (output.json, the status event through EventBridge and SQS), and the
reviewed envelope must carry it. The time from the click on Submit to the reviewed record on the
output topic is printed (the closing figure of issue 21).
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from playwright.async_api import expect

from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.browser import loopback_page
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import config, create_topics

pytestmark = pytest.mark.integration


def portal_home(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return str(response.read().decode())


async def test_a_person_answers_in_the_worker_portal_and_the_router_publishes_it(
    sandbox: Sandbox, sandbox_info: SandboxInfo, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    outputs = await create_topics(sandbox, tag)
    settings = config(Backend("a2i", sandbox_info), tag, tmp_path)
    settings["policies"]["routes"][0]["review_flow"] = sandbox_info.flow_definition_arns["slow"]
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    team = boto3.client("sagemaker").describe_workteam(WorkteamName="sandbox-reviewers")
    portal = f"http://{team['Workteam']['SubDomain']}/"
    event_id = f"{tag}-portal"

    process = router(path, "all", sandbox_env)
    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
        event = {"event_id": event_id, "label": "cat", "confidence": 0.3, "model": "pets"}
        await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", [json_record(event, "k")])
        process.start()
        try:
            await process.wait_ready_async(60)
            await reader.until(lambda r: len(r.records[f"rr-{tag}"]) == 1, 60)
            [request] = reader.values(f"rr-{tag}")
            loop = request["loop_name"]
            deadline = time.monotonic() + 60
            while f"data-loop='{loop}'" not in portal_home(portal):  # the router starts it
                assert time.monotonic() < deadline, "the portal never listed the review"
                await reader.poll()  # waits up to 200 ms for records: a paced re-check

            async with loopback_page() as browsed:
                page = browsed.page
                await page.goto(portal)
                section = page.locator("section[data-flow='slow']")
                await (
                    section.locator(f"[data-loop='{loop}']")
                    .get_by_role("button", name="Start working")
                    .click()
                )
                await page.wait_for_url(f"**/portal/tasks/{loop}")
                classifier = page.locator("crowd-classifier")
                # The flow's template shows the model's label, from the loop's input.
                await expect(page.get_by_text("The model said cat")).to_be_visible()
                await classifier.get_by_label("dog").click()
                await expect(classifier.get_by_label("dog")).to_be_checked()
                clicked = time.monotonic()
                await page.get_by_role("button", name="Submit").click()
                await page.wait_for_url(portal)  # accepted: the portal sends the worker home
                await reader.until(lambda r: len(r.records[f"out-{tag}"]) >= 1, 60)
                published_s = time.monotonic() - clicked
        finally:
            code = await process.stop_async()
    assert code == 0, process.output_tail()
    print(f"portal submission to the router's reviewed record: {published_s:.2f} s")
    [envelope] = reader.values(f"out-{tag}")
    assert envelope["event_id"] == event_id
    assert envelope["decision"] == "reviewed"
    assert envelope["review"]["label"] == "dog"
    assert envelope["review"]["corrected"] is True
    [answer] = envelope["review"]["answers"]
    assert answer["content"] == {"label": {"label": "dog"}}
    assert f"data-loop='{loop}'" not in portal_home(portal)
