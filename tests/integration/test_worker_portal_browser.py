"""A person works an A2I task in the sandbox's worker portal, in a browser, end to end.

The task UI and the flow definition are created with boto3 on a private emulator whose
simulated reviewers never pick a task up (``abandon_rate=1.0``), so the task waits for the
person. Headless Debian Chromium opens the portal where ``DescribeWorkteam``'s ``SubDomain``
points, finds the loop under its flow, takes it, fills every element the sandbox's crowd script
implements as a person would, and submits; the loop then completes through the emulator's
scheduler and output.json holds exactly that answer, under the portal worker's id.

The image of the image classifier and the bounding box is a PNG in the sandbox's moto S3, shown
through ``grant_read_access`` (a pre-signed URL). Every request for anything beyond 127.0.0.1
is aborted and fails the test, as does a script error on the page.

Then, over plain HTTP: a task a simulated worker holds is not offered (and cannot be taken), and
submissions that are not a bounded JSON answer are refused with 4xx and a message while the task
stays open for a good one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import boto3
import pytest
import pytest_asyncio
from playwright.async_api import expect

from stream_router.sandbox.a2i.launcher import A2IEmulator
from stream_router.sandbox.a2i.reviewers import portal_worker
from stream_router.sandbox.pytest_plugin import EmulatorFactory
from stream_router.sandbox.settings import Latency, Reviewers, SandboxSettings, Workteam
from stream_router.sandbox.stack import SandboxInfo
from tests.integration.browser import Browsed, loopback_page, png
from tests.integration.test_crowd_elements_browser import draw_box, images_loaded

pytestmark = [pytest.mark.integration]

Names = Callable[[str], str]
CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "x",
    "aws_secret_access_key": "x",
}
ROLE = "arn:aws:iam::123456789012:role/service-role/A2IExecutionRole"
#: The photo's natural size; the bounding box shows it at half that, so answers scale back.
IMAGE_SIZE = (400, 200)
POLL_S = 0.05

TEMPLATE = """<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<style>crowd-bounding-box img { width: 200px; }</style>
<crowd-form>
  <crowd-instructions link-text="View instructions" link-type="button">
    <short-summary><p>Judge the product review and its photo.</p></short-summary>
    <detailed-instructions><p>Read the whole review first.</p></detailed-instructions>
    <positive-example><p>"Works well" is Positive.</p></positive-example>
    <negative-example><p>"Broke at once" is not Positive.</p></negative-example>
  </crowd-instructions>

  <crowd-classifier name="sentiment" categories="{{ task.input.categories | to_json | escape }}"
      header="What sentiment does the review express?">
    <classification-target><p class="review">{{ task.input.text }}</p></classification-target>
    <full-instructions header="Sentiment"><p>Choose the closest one.</p></full-instructions>
    <short-instructions><p>Choose the sentiment.</p></short-instructions>
  </crowd-classifier>
  <crowd-classifier-multi-select name="topics" header="Which topics does it mention?"
      categories="{{ task.input.topics | to_json | escape }}">
    <classification-target>Review {{ task.input.review_id }}</classification-target>
  </crowd-classifier-multi-select>
  <crowd-image-classifier name="photo" src="{{ task.input.image | grant_read_access }}"
      categories="['Kettle', 'Toaster', 'Other']" header="What does the photo show?">
  </crowd-image-classifier>
  <crowd-bounding-box name="damage" src="{{ task.input.image | grant_read_access }}"
      labels="['Dent', 'Crack']" header="Box the damage">
    <short-instructions>Draw one box around each damaged part.</short-instructions>
  </crowd-bounding-box>

  <crowd-input name="product" label="Product name"></crowd-input>
  <crowd-text-area name="reason" label="Why this sentiment?" rows="3"></crowd-text-area>
  <crowd-checkbox name="sarcastic" value="yes">The review is sarcastic</crowd-checkbox>
  <crowd-radio-group>
    <crowd-radio-button name="helpful" value="yes">Helpful</crowd-radio-button>
    <crowd-radio-button name="unhelpful" value="no">Not helpful</crowd-radio-button>
  </crowd-radio-group>
  <crowd-slider name="confidence" min="1" max="10" step="1"></crowd-slider>
  <crowd-button form-action="submit" variant="primary">Send answer</crowd-button>
</crowd-form>
"""

REVIEW_TEXT = "<b>Broke</b> after two days & no refund"
CATEGORIES = ["Positive", "Negative", "Don't know"]
TOPICS = ["Price", "Quality", "Refund"]

EXPECTED = {
    "sentiment": {"label": "Negative"},
    "topics": {"labels": ["Quality", "Refund"]},
    "photo": {"label": "Kettle"},
    "damage": {
        "boundingBoxes": [{"height": 100, "label": "Crack", "left": 20, "top": 40, "width": 100}],
        "inputImageProperties": {"height": IMAGE_SIZE[1], "width": IMAGE_SIZE[0]},
    },
    "product": "Kettle <2000>",
    "reason": "It broke.\nNo refund.",
    "sarcastic": {"yes": True},
    "helpful": {"yes": True},
    "unhelpful": {"no": False},
    "confidence": 3,
}


# -- the emulator, its clients and its flows ---------------------------------------------------


@dataclass
class Portal:
    """A private emulator nobody simulated works for, with boto3 clients for it and moto."""

    emulator: A2IEmulator
    info: SandboxInfo
    sagemaker: Any
    a2i: Any
    s3: Any

    @property
    def url(self) -> str:
        return self.emulator.endpoint_url

    async def call(self, client: Any, operation: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.to_thread(getattr(client, operation), **params)
        return result

    async def flow(self, name: str) -> str:
        """A task UI with :data:`TEMPLATE` and an Active flow definition, both called ``name``;
        the flow's ARN."""
        ui = await self.call(
            self.sagemaker,
            "create_human_task_ui",
            HumanTaskUiName=name,
            UiTemplate={"Content": TEMPLATE},
        )
        team = await self.call(
            self.sagemaker, "describe_workteam", WorkteamName=self.emulator.settings.workteam.name
        )
        created = await self.call(
            self.sagemaker,
            "create_flow_definition",
            FlowDefinitionName=name,
            RoleArn=ROLE,
            HumanLoopConfig={
                "WorkteamArn": team["Workteam"]["WorkteamArn"],
                "HumanTaskUiArn": ui["HumanTaskUiArn"],
                "TaskTitle": "Review a product review",
                "TaskDescription": "Judge a review and its photo",
                "TaskCount": 1,
                "TaskAvailabilityLifetimeInSeconds": 3600,
                "TaskTimeLimitInSeconds": 600,
            },
            OutputConfig={"S3OutputPath": f"s3://{self.info.output_bucket}/portal-tests"},
        )
        deadline = time.monotonic() + 10
        while (
            await self.call(self.sagemaker, "describe_flow_definition", FlowDefinitionName=name)
        )["FlowDefinitionStatus"] != "Active":
            assert time.monotonic() < deadline, f"flow definition {name} never became Active"
            await asyncio.sleep(POLL_S)
        return str(created["FlowDefinitionArn"])

    async def start(self, loop: str, flow_arn: str, task_input: dict[str, Any]) -> None:
        await self.call(
            self.a2i,
            "start_human_loop",
            HumanLoopName=loop,
            FlowDefinitionArn=flow_arn,
            HumanLoopInput={"InputContent": json.dumps(task_input)},
        )

    async def status(self, loop: str) -> dict[str, Any]:
        return await self.call(self.a2i, "describe_human_loop", HumanLoopName=loop)

    async def until_status(self, loop: str, wanted: str, timeout_s: float = 20) -> dict[str, Any]:
        """DescribeHumanLoop every :data:`POLL_S` until ``wanted``; the last description."""
        deadline = time.monotonic() + timeout_s
        while True:
            described = await self.status(loop)
            if described["HumanLoopStatus"] == wanted:
                return described
            assert time.monotonic() < deadline, f"{loop} still {described['HumanLoopStatus']}"
            await asyncio.sleep(POLL_S)

    async def output(self, described: dict[str, Any]) -> dict[str, Any]:
        uri = described["HumanLoopOutput"]["OutputS3Uri"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        response = await self.call(self.s3, "get_object", Bucket=bucket, Key=key)
        document: dict[str, Any] = json.loads(response["Body"].read())
        return document


def nobody_simulated() -> SandboxSettings:
    """No simulated worker ever picks a task up: it waits for the person in the portal."""
    return SandboxSettings(
        flow_definitions=[],
        workteam=Workteam(reviewers=Reviewers(abandon_rate=1.0)),
        flow_activation_s=0.0,
    )


def busy_workers() -> SandboxSettings:
    """A simulated worker takes every task at once and keeps it for five minutes."""
    reviewers = Reviewers(
        pickup=Latency(distribution="fixed", median_s=0.0),
        work=Latency(distribution="fixed", median_s=300.0),
    )
    return SandboxSettings(
        flow_definitions=[], workteam=Workteam(reviewers=reviewers), flow_activation_s=0.0
    )


async def portal_on(
    settings: SandboxSettings, factory: EmulatorFactory, info: SandboxInfo
) -> Portal:
    emulator = await factory(settings)
    return Portal(
        emulator,
        info,
        sagemaker=boto3.client("sagemaker", endpoint_url=emulator.endpoint_url, **CREDENTIALS),
        a2i=boto3.client(
            "sagemaker-a2i-runtime", endpoint_url=emulator.endpoint_url, **CREDENTIALS
        ),
        s3=boto3.client("s3", endpoint_url=info.aws_endpoint_url, **CREDENTIALS),
    )


class _Listing(HTMLParser):
    """The portal home's open tasks: loop names by flow definition name."""

    def __init__(self) -> None:
        super().__init__()
        self.flows: dict[str, list[str]] = {}
        self._flow: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section" and found.get("data-flow"):
            self._flow = str(found["data-flow"])
            self.flows[self._flow] = []
        elif tag == "div" and found.get("data-loop") and self._flow is not None:
            self.flows[self._flow].append(str(found["data-loop"]))


def listed(home: str) -> dict[str, list[str]]:
    parser = _Listing()
    parser.feed(home)
    parser.close()
    return parser.flows


def moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


# -- the browser -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def browsed() -> AsyncIterator[Browsed]:
    """A Chromium page that may reach loopback only; script errors and failed loads (other than
    a favicon) fail the test."""
    async with loopback_page(refuse_failed_loads=True) as seen:
        yield seen


# -- the tests ---------------------------------------------------------------------------------


async def test_a_person_works_a_task_in_the_portal_and_the_loop_completes_with_their_answer(
    a2i_emulator_factory: EmulatorFactory,
    sandbox_info: SandboxInfo,
    browsed: Browsed,
    unique_name: Names,
) -> None:
    portal = await portal_on(nobody_simulated(), a2i_emulator_factory, sandbox_info)
    flow, loop = unique_name("portal"), unique_name("loop")
    flow_arn = await portal.flow(flow)
    image_key = f"portal-inputs/{loop}/kettle.png"
    await portal.call(
        portal.s3,
        "put_object",
        Bucket=sandbox_info.output_bucket,
        Key=image_key,
        Body=png(*IMAGE_SIZE, (200, 120, 60)),
        ContentType="image/png",
    )
    task_input = {
        "review_id": "r-17",
        "text": REVIEW_TEXT,
        "categories": CATEGORIES,
        "topics": TOPICS,
        "image": f"s3://{sandbox_info.output_bucket}/{image_key}",
    }
    await portal.start(loop, flow_arn, task_input)
    team = await portal.call(
        portal.sagemaker, "describe_workteam", WorkteamName="sandbox-reviewers"
    )
    home = f"http://{team['Workteam']['SubDomain']}/"
    assert urlsplit(home).hostname == "127.0.0.1"

    # The portal lists the loop under its flow definition; the person takes it.
    page = browsed.page
    await page.goto(home)
    task = page.locator(f"section.flow[data-flow='{flow}'] .task[data-loop='{loop}']")
    await expect(task).to_have_count(1)
    await task.get_by_role("button", name="Start working").click()
    await page.wait_for_url(f"{portal.url}/portal/tasks/{loop}")
    await expect(page.locator("crowd-form form")).to_have_count(1)  # the elements are upgraded
    await images_loaded(page)

    # The input is shown as text (escaped), never as markup; the photo came pre-signed from S3.
    classifier = page.locator("crowd-classifier")
    await expect(classifier.get_by_text(REVIEW_TEXT, exact=True)).to_be_visible()
    await expect(page.locator("crowd-form b")).to_have_count(0)
    await expect(page.locator("crowd-classifier-multi-select")).to_contain_text("Review r-17")
    photos = [url for url in browsed.requests if f"/{image_key}?" in url]
    assert len(photos) >= 1
    assert all(url.startswith(sandbox_info.aws_endpoint_url) for url in photos)
    assert all("Signature=" in urlsplit(url).query for url in photos)
    sizes = await page.evaluate(
        "() => [...document.images].map((image) => [image.naturalWidth, image.naturalHeight])"
    )
    assert sizes == [list(IMAGE_SIZE), list(IMAGE_SIZE)]
    assert not any("assets.crowd.aws" in url for url in browsed.requests)

    # The instructions open in a dialog and close with Escape.
    await page.get_by_role("button", name="View instructions").click()
    dialog = page.get_by_role("dialog", name="Instructions")
    await expect(dialog.get_by_text("Judge the product review and its photo.")).to_be_visible()
    await dialog.get_by_role("tab", name="Detailed Instructions").click()
    await expect(dialog.get_by_text("Read the whole review first.")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()

    await expect(classifier.locator(".crowd-sandbox-choice")).to_have_text(CATEGORIES)
    await classifier.get_by_label("Negative").click()
    topics = page.locator("crowd-classifier-multi-select")
    for topic in ("Refund", "Price", "Quality", "Price"):  # Price twice: chosen, taken back
        await topics.get_by_text(topic, exact=True).click()
    photo = page.locator("crowd-image-classifier")
    await photo.get_by_text("Kettle", exact=True).click()

    boxes = page.locator("crowd-bounding-box")
    await boxes.get_by_role("group", name="Label for new boxes").get_by_text("Crack").click()
    await draw_box(page, boxes.locator("img"), (10, 20), (60, 70))  # shown at half size
    drawn = boxes.get_by_role("list", name="Boxes drawn").get_by_role("listitem")
    await expect(drawn).to_have_count(1)
    await expect(drawn.first).to_contain_text("Box 1: left 20, top 40, width 100, height 100")

    await page.get_by_label("Product name").press_sequentially("Kettle <2000>")
    reason = page.get_by_label("Why this sentiment?")
    await reason.press_sequentially("It broke.")
    await reason.press("Enter")  # a new line, not a submission
    await reason.press_sequentially("No refund.")
    await page.get_by_text("The review is sarcastic").click()
    await page.get_by_label("Not helpful", exact=True).click()
    await page.get_by_label("Helpful", exact=True).click()
    await expect(page.get_by_label("Not helpful", exact=True)).not_to_be_checked()
    slider = page.get_by_role("slider", name="confidence")
    await slider.click()
    for key in ("Home", "ArrowRight", "ArrowRight"):
        await slider.press(key)
    await expect(page.locator("crowd-slider output")).to_have_text("3")
    assert await page.evaluate("window.crowdSandbox.answerContent()") == EXPECTED

    # Submit; the portal takes the person home, and the loop completes with their answer.
    clicked = time.monotonic()
    await page.get_by_role("button", name="Send answer").click()
    described = await portal.until_status(loop, "Completed")
    took_s = time.monotonic() - clicked
    print(f"\nportal submit click -> DescribeHumanLoop Completed: {took_s * 1000:.0f} ms")
    await page.wait_for_url(home)
    await expect(page.locator(f"section.flow[data-flow='{flow}']")).to_have_count(1)
    await expect(task).to_have_count(0)

    output = await portal.output(described)
    assert output["humanLoopName"] == loop
    assert output["flowDefinitionArn"] == flow_arn
    assert output["inputContent"] == task_input
    [answer] = output["humanAnswers"]
    assert answer["answerContent"] == EXPECTED
    worker_id, worker_sub = portal_worker()
    assert answer["workerId"] == worker_id
    assert answer["workerMetadata"]["identityData"]["sub"] == worker_sub
    assert moment(answer["acceptanceTime"]) <= moment(answer["submissionTime"])
    async with aiohttp.ClientSession() as http, http.get(home) as response:
        assert loop not in listed(await response.text()).get(flow, [loop])


async def test_a_task_a_simulated_worker_holds_is_not_offered(
    a2i_emulator_factory: EmulatorFactory, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    portal = await portal_on(busy_workers(), a2i_emulator_factory, sandbox_info)
    flow, loop = unique_name("held"), unique_name("loop")
    await portal.start(loop, await portal.flow(flow), {"text": "hello", "categories": ["a"]})

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{portal.url}/") as response:
            assert response.status == 200
            assert listed(await response.text()) == {flow: []}
        async with http.post(
            f"{portal.url}/portal/tasks/{loop}/accept", allow_redirects=False
        ) as response:
            assert response.status == 409
            assert "no longer available" in await response.text()
        async with http.get(f"{portal.url}/portal/tasks/{loop}") as response:
            assert response.status == 404  # the person holds nothing
    assert (await portal.status(loop))["HumanLoopStatus"] == "InProgress"


def nested(levels: int) -> dict[str, Any]:
    """``levels`` objects, one inside the other, the innermost holding a number."""
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    result: dict[str, Any] = value
    return result


#: Submissions the portal refuses: (what, body, status, words of the message).
BAD_SUBMISSIONS = [
    ("not JSON", b"label=cat", 400, "not JSON"),
    ("not an object", json.dumps({"answerContent": ["cat"]}).encode(), 400, "answerContent"),
    ("no answerContent", json.dumps({"label": {"label": "cat"}}).encode(), 400, "answerContent"),
    ("a JSON array", json.dumps([{"answerContent": {}}]).encode(), 400, "answerContent"),
    (
        "over 1 MiB",
        json.dumps({"answerContent": {"reason": "x" * 1_048_576}}).encode(),
        413,
        "larger than 1048576 bytes",
    ),
    ("33 levels", json.dumps({"answerContent": nested(33)}).encode(), 400, "deeper than 32"),
    # Not JSON, though Python's json module would take it (and write NaN into output.json).
    ("NaN", b'{"answerContent": {"score": NaN}}', 400, "not JSON"),
    # Deeper than any parser's recursion: a 400, not a crashed handler.
    (
        "100,000 levels",
        b'{"answerContent": {"d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        400,
        "not JSON",
    ),
]
GOOD = {"label": {"label": "cat"}, "reason": "fine", "deep": nested(20)}


async def take(http: aiohttp.ClientSession, portal: Portal, loop: str) -> None:
    async with http.post(
        f"{portal.url}/portal/tasks/{loop}/accept", allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == f"/portal/tasks/{loop}"


async def refused(
    http: aiohttp.ClientSession, portal: Portal, loop: str, body: bytes
) -> tuple[int, str]:
    """POST ``body`` as the answer; the status and the JSON message of a refusal."""
    async with http.post(
        f"{portal.url}/portal/tasks/{loop}/submit",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as response:
        assert 400 <= response.status < 500, f"answered {response.status}"
        message = (await response.json())["message"]
        assert isinstance(message, str)
        return response.status, message


async def test_bad_submissions_are_refused_and_the_task_stays_open_for_a_good_one(
    a2i_emulator_factory: EmulatorFactory, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    portal = await portal_on(nobody_simulated(), a2i_emulator_factory, sandbox_info)
    flow, loop = unique_name("bad"), unique_name("loop")
    await portal.start(loop, await portal.flow(flow), {"text": "hello", "categories": ["cat"]})
    good = json.dumps({"answerContent": GOOD}).encode()

    async with aiohttp.ClientSession() as http:
        # Nobody may answer a task they have not taken.
        assert await refused(http, portal, loop, good) == (404, f"You hold no open task {loop}.")
        await take(http, portal, loop)
        for what, body, status, words in BAD_SUBMISSIONS:
            answered, message = await refused(http, portal, loop, body)
            if status:
                assert (answered, words in message) == (status, True), f"{what}: {message}"
            assert (await portal.status(loop))["HumanLoopStatus"] == "InProgress", what
            async with http.get(f"{portal.url}/portal/tasks/{loop}") as response:
                assert response.status == 200, f"{what}: the task is no longer the person's"

        async with http.post(
            f"{portal.url}/portal/tasks/{loop}/submit",
            data=good,
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 200
            assert await response.json() == {"next": "/"}
        [answer] = (await portal.output(await portal.until_status(loop, "Completed")))[
            "humanAnswers"
        ]
        assert answer["answerContent"] == GOOD
        assert answer["workerId"] == portal_worker()[0]
        # Once answered, it is no one's to answer again.
        assert (await refused(http, portal, loop, good))[0] == 404


async def answered(portal: Portal, loop: str, body: bytes) -> tuple[int, str]:
    """Take the task and POST ``body`` as the answer: the status and the response's text."""
    async with aiohttp.ClientSession() as http:
        await take(http, portal, loop)
        async with http.post(
            f"{portal.url}/portal/tasks/{loop}/submit",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response:
            return response.status, await response.text()


async def open_task(
    factory: EmulatorFactory, info: SandboxInfo, names: Names
) -> tuple[Portal, str]:
    portal = await portal_on(nobody_simulated(), factory, info)
    loop = names("loop")
    await portal.start(loop, await portal.flow(names("edge")), {"text": "hello"})
    return portal, loop


async def test_a_large_valid_answer_is_accepted(
    a2i_emulator_factory: EmulatorFactory, sandbox_info: SandboxInfo, unique_name: Names
) -> None:
    portal, loop = await open_task(a2i_emulator_factory, sandbox_info, unique_name)
    content = {"label": {"label": "cat"}, "reason": "y" * 300_000}
    status, text = await answered(portal, loop, json.dumps({"answerContent": content}).encode())
    assert status == 200, text
    [answer] = (await portal.output(await portal.until_status(loop, "Completed")))["humanAnswers"]
    assert answer["answerContent"] == content
