"""LabelStudioReviewBackend against the sandbox's real Label Studio, over the wire.

The ``never`` flow's project has no simulated annotator at work (its reviewers abandon every
task), so these tests annotate its tasks themselves, as a person would, through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from stream_router.errors import ConfigError, ReviewRejected, UpstreamError
from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.client import LabelStudioClient, LabelStudioNotFound, name_filter
from stream_router.labelstudio.settings import (
    LabelStudioProject,
    LabelStudioSettings,
    LabelStudioWebhook,
)
from stream_router.labelstudio.tasks import NAME_FIELD, choice_result, tag_key, task, task_tag
from stream_router.labelstudio.webhook import (
    ACTIONS,
    MARKER,
    MARKER_HEADER,
    PATH,
    SECRET_HEADER,
    WebhookReceiver,
)
from stream_router.review.backend import ReviewStatus
from stream_router.sandbox.process import free_port
from stream_router.sandbox.stack import SandboxInfo

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

CONTENT = {
    "event": {"text": "a photo"},
    "prediction": {"label": "cat", "confidence": 0.42, "scores": None},
    "reason": "confidence 0.42 below 0.7",
    "_identity": {"loop_name": "x", "event_id": "e1", "route": "r", "policy_version": "7"},
}


def settings(info: SandboxInfo, **project: Any) -> LabelStudioSettings:
    assert info.label_studio_url
    assert info.label_studio_token
    return LabelStudioSettings(
        url=info.label_studio_url,
        api_token=SecretStr(info.label_studio_token),
        projects={"manual": LabelStudioProject(project="never", **project)},
    )


async def tasks_named(admin: LabelStudioClient, info: SandboxInfo, name: str) -> list[int]:
    project = info.label_studio_projects["never"]
    query = name_filter(NAME_FIELD, name)
    return [int(t["id"]) async for t in admin.tasks(project, query=query)]


async def annotate(admin: LabelStudioClient, task_id: int, label: str, **fields: Any) -> None:
    await admin.create_annotation(task_id, choice_result(label), lead_time=2.5, **fields)


async def test_start_is_idempotent_per_name_across_redeliveries_and_restarts(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("review")
    async with LabelStudioReviewBackend(settings(label_studio_info)) as backend:
        first = await backend.start(name, "manual", CONTENT)
        again = await backend.start(name, "manual", CONTENT)
    async with LabelStudioReviewBackend(settings(label_studio_info)) as restarted:
        after_restart = await restarted.start(name, "manual", CONTENT)
    assert (first.already_started, again.already_started, after_restart.already_started) == (
        False,
        True,
        True,
    )
    assert first.backend_id == again.backend_id == after_restart.backend_id
    assert await tasks_named(admin, label_studio_info, name) == [int(first.backend_id)]


async def test_a_start_that_may_repeat_one_reads_only_the_tasks_made_since(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    """A start cut short landed its task, its answer lost; the next start of the name (its
    request recorded after the backend opened) finds the task among the ids above the anchor of
    open, and imports nothing. A fresh start imports without a look-up."""
    name, other = unique_name("review"), unique_name("review")
    queries: list[str | None] = []
    exact = settings(label_studio_info).model_copy(update={"clock_skew_s": 0.0})
    async with LabelStudioReviewBackend(exact) as backend:
        page = backend.client.task_page

        async def spied(project_id: int, number: int, **kwargs: Any) -> list[object] | None:
            queries.append(kwargs.get("query"))
            return await page(project_id, number, **kwargs)

        backend.client.task_page = spied  # type: ignore[method-assign]
        recorded_s = time.time()
        project = label_studio_info.label_studio_projects["never"]
        assert label_studio_info.label_studio_token
        tag = task_tag(tag_key(label_studio_info.label_studio_token), "manual", name)
        [landed] = await admin.import_tasks(project, [task(name, CONTENT, tag=tag)])
        again = await backend.start(name, "manual", CONTENT, not_before_s=recorded_s)
        assert (again.already_started, again.backend_id) == (True, str(landed))
        [bounded] = queries
        assert bounded is not None
        assert '"filter:tasks:id"' in bounded
        fresh = await backend.start(other, "manual", CONTENT, fresh=True)
        assert not fresh.already_started
        assert len(queries) == 1  # the fresh start looked nothing up
    assert await tasks_named(admin, label_studio_info, name) == [landed]
    assert await tasks_named(admin, label_studio_info, other) == [int(fresh.backend_id)]


async def test_concurrent_starts_of_one_name_leave_one_task(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    """Two processes starting the same review at once (a rebalance) keep the first task."""
    name = unique_name("review")
    backends = [LabelStudioReviewBackend(settings(label_studio_info)) for _ in range(3)]
    for backend in backends:
        await backend.open()
    try:
        outcomes = await asyncio.gather(*(b.start(name, "manual", CONTENT) for b in backends))
    finally:
        for backend in backends:
            await backend.aclose()
    remaining = await tasks_named(admin, label_studio_info, name)
    assert len(remaining) == 1
    assert {o.backend_id for o in outcomes} == {str(remaining[0])}
    assert sum(not o.already_started for o in outcomes) == 1
    # The count of removals is not asserted: how many copies were made varies (a look-up sees
    # another's import or not), and Label Studio answers 204 to each of two deletes of one
    # task that arrive together (seen: three starters each counted the one copy).


async def test_a_late_duplicate_is_removed_by_the_listing_of_open_reviews(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("review")
    removed: list[int] = []
    async with LabelStudioReviewBackend(
        settings(label_studio_info), removed=lambda: removed.append(1)
    ) as backend:
        first = await backend.start(name, "manual", CONTENT)
        # An import landing after the start had looked (a killed process's, applied late).
        project = label_studio_info.label_studio_projects["never"]
        assert label_studio_info.label_studio_token
        tag = task_tag(tag_key(label_studio_info.label_studio_token), "manual", name)
        [late] = await admin.import_tasks(project, [task(name, CONTENT, tag=tag)])
        listed = [state.name async for state in backend.pending("manual")]
    assert listed.count(name) == 1
    assert await tasks_named(admin, label_studio_info, name) == [int(first.backend_id)]
    assert late > int(first.backend_id)
    assert removed == [1]


async def test_a_review_completes_with_its_annotations_as_answers(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("review")
    async with LabelStudioReviewBackend(
        settings(label_studio_info, annotations_per_task=1)
    ) as backend:
        started = await backend.start(name, "manual", CONTENT)
        state = await backend.describe(name)
        assert state is not None
        assert state.status is ReviewStatus.IN_PROGRESS
        assert name in [s.name async for s in backend.pending("manual")]
        task_id = int(started.backend_id)
        await annotate(admin, task_id, "dog")
        done = await backend.describe(name)
        assert done is not None
        assert done.status is ReviewStatus.COMPLETED
        assert done.output_uri is not None
        assert done.output_uri.endswith(f"/api/tasks/{task_id}")
        assert name not in [s.name async for s in backend.pending("manual")]
        result = await backend.fetch_result(done)
    [answer] = result.answers
    assert answer.content == {"label": {"label": "dog"}}
    assert answer.time_spent_s == 2.5
    assert answer.submitted_at_s is not None
    assert answer.accepted_at_s == pytest.approx(answer.submitted_at_s - 2.5)
    assert done.ended_at_s == answer.submitted_at_s
    assert result.input_content == CONTENT
    full = await admin.task(task_id)
    [prediction] = full["predictions"]
    assert prediction["score"] == pytest.approx(0.42)
    assert prediction["result"] == choice_result("cat")


async def test_skipped_annotations_do_not_count(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("review")
    async with LabelStudioReviewBackend(settings(label_studio_info)) as backend:
        started = await backend.start(name, "manual", CONTENT)
        await annotate(admin, int(started.backend_id), "dog", was_cancelled=True)
        state = await backend.describe(name)
    assert state is not None
    assert state.status is ReviewStatus.IN_PROGRESS


async def test_the_deadline_closes_an_unfinished_task_for_good(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("review")
    later = [0.0]  # seconds added to the real clock

    def clock() -> float:
        return time.time() + later[0]

    async with LabelStudioReviewBackend(
        settings(label_studio_info, deadline_s=600), clock=clock
    ) as backend:
        started = await backend.start(name, "manual", CONTENT)
        later[0] = 601
        assert name not in [s.name async for s in backend.pending("manual")]
        state = await backend.describe(name)
        assert state is not None
        assert state.status is ReviewStatus.FAILED
        assert state.failure_code == "Expired"
        await annotate(admin, int(started.backend_id), "dog")  # too late
        again = await backend.describe(name)
    assert again is not None
    assert again.status is ReviewStatus.FAILED
    assert again.ended_at_s == state.ended_at_s
    meta = (await admin.task(int(started.backend_id)))["meta"]
    assert meta["stream_router"]["closed_s"] == state.ended_at_s


async def test_unknown_names_and_bad_input(
    label_studio_info: SandboxInfo, unique_name: Callable[[str], str]
) -> None:
    async with LabelStudioReviewBackend(settings(label_studio_info)) as backend:
        assert await backend.describe(unique_name("never-started")) is None
        with pytest.raises(ReviewRejected, match="not JSON"):
            await backend.start(unique_name("review"), "manual", {"x": object()})
        with pytest.raises(ReviewRejected, match=r"not in review\.backend\.projects"):
            await backend.start(unique_name("review"), "elsewhere", CONTENT)


async def test_configuration_problems_fail_at_open_naming_the_field(
    label_studio_info: SandboxInfo,
) -> None:
    good = settings(label_studio_info)
    cases = [
        (good.model_copy(update={"api_token": SecretStr("wrong-token")}),
         "review.backend.api_token"),
        (good.model_copy(update={"projects": {"m": LabelStudioProject(project="nope")}}),
         "review.backend.projects.m.project"),
        (good.model_copy(update={"projects": {"m": LabelStudioProject(project=99999)}}),
         "review.backend.projects.m.project"),
        (good.model_copy(update={"projects": {"m": LabelStudioProject(
            project="never", annotations_per_task=2)}}),
         "review.backend.projects.m.annotations_per_task"),
    ]  # fmt: skip
    for broken, field in cases:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            await LabelStudioReviewBackend(broken).open()


async def test_an_unreachable_server_is_a_retriable_upstream_error(
    label_studio_info: SandboxInfo,
) -> None:
    gone = settings(label_studio_info).model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(UpstreamError) as raised:
        await LabelStudioReviewBackend(gone).open()
    assert raised.value.retriable


@pytest.mark.parametrize("secret", [None, "s3cret"])
async def test_webhook_posts_name_the_review_annotated(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
    secret: str | None,
) -> None:
    """Label Studio's real post passes the endpoint's checks. Registering keeps one webhook of
    the receiver's URL, renewed in place (Label Studio moves its updated_at: the lease), and
    deletes the router's lapsed ones (same path, marker, secret), never another integration's
    or another router's (another secret). The lease is 0 s here: any registration made before
    counts as lapsed."""
    checked: asyncio.Queue[str] = asyncio.Queue()
    results: list[str] = []

    async def check(name: str) -> None:
        await checked.put(name)

    project = label_studio_info.label_studio_projects["never"]
    ours = {MARKER_HEADER: MARKER, **({SECRET_HEADER: secret} if secret else {})}

    def elsewhere() -> str:
        return f"http://127.0.0.1:{free_port()}{PATH}"

    earlier = await admin.create_webhook(project, elsewhere(), ACTIONS, ours)
    foreign = await admin.create_webhook(project, elsewhere(), ACTIONS)
    other_secret = {MARKER_HEADER: MARKER, SECRET_HEADER: "another-router"}
    another_router = await admin.create_webhook(project, elsewhere(), ACTIONS, other_secret)
    receiver = WebhookReceiver(
        LabelStudioWebhook(port=free_port(), secret=SecretStr(secret) if secret else None),
        check,
        counted=results.append,
        lease_s=0.0,
    )
    stop = asyncio.Event()
    await receiver.start()
    worker = asyncio.create_task(receiver.run(stop))
    try:
        async with LabelStudioReviewBackend(settings(label_studio_info)) as backend:
            ids = list(backend.project_ids().values())
            await receiver.register(backend.client, ids)
            [first] = [h for h in await admin.webhooks(project) if h["url"] == receiver.url]
            await receiver.register(backend.client, ids)
            name = unique_name("review")
            started = await backend.start(name, "manual", CONTENT)
            await annotate(admin, int(started.backend_id), "bird")
            assert await asyncio.wait_for(checked.get(), 10) == name
        hooks = {h["id"]: h for h in await admin.webhooks(project)}
    finally:
        stop.set()
        await worker
        await receiver.stop()
        for made in (foreign, another_router):
            with contextlib.suppress(LabelStudioNotFound):
                await admin.delete_webhook(made["id"])
    [mine] = [h for h in hooks.values() if h["url"] == receiver.url]  # registered once
    assert mine["id"] == first["id"]
    assert mine["updated_at"] > first["updated_at"]  # renewed: the lease moves
    assert mine["headers"] == ours
    assert earlier["id"] not in hooks
    assert {foreign["id"], another_router["id"]} <= set(hooks)
    assert "queued" in results
