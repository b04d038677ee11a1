"""Label Studio's answers are untrusted, over the wire (issue 19): what a project member can
store through Label Studio's API ends the review it poisons with a typed outcome, and the
reviews around it complete; a task the router did not make is never taken for a review.

Each test makes its own project (the shapes stored here would break the shared ones: a task
whose data is a number makes Label Studio fail every listing of its project). Members are played
by the admin token, which is what any member's token can do in Label Studio Community.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from stream_router.errors import ReviewRejected
from stream_router.labelstudio.backend import LabelStudioReviewBackend
from stream_router.labelstudio.client import (
    LabelStudioClient,
    LabelStudioFailed,
    name_filter,
    names_query,
)
from stream_router.labelstudio.settings import LabelStudioProject, LabelStudioSettings
from stream_router.labelstudio.tasks import (
    NAME_FIELD,
    choice_result,
    labeling_config,
    tag_key,
    task,
    task_tag,
)
from stream_router.naming import loop_name
from stream_router.review.backend import ReviewStatus
from stream_router.review.scheduler import OUTPUT_UNREADABLE
from stream_router.sandbox.stack import Sandbox, SandboxInfo
from tests.integration.kafka_helpers import TopicReader, json_record, produce
from tests.integration.review_backends import Backend
from tests.integration.router_process import router
from tests.integration.test_review_e2e import config, create_topics

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

LABELS = ["cat", "dog", "bird", "other"]
CONTENT = {
    "event": {"text": "a photo"},
    "prediction": {"label": "cat", "confidence": 0.42, "scores": None},
    "reason": "confidence 0.42 below 0.7",
    "_identity": {"loop_name": "x", "event_id": "e1", "route": "r", "policy_version": "7"},
}
ODD_RESULT = [{"from_name": ["label"], "type": 5, "value": "dog"}]  #: Label Studio stores it


async def own_project(admin: LabelStudioClient, title: str) -> int:
    made = await admin.create_project(title, labeling_config(LABELS), maximum_annotations=1)
    return int(made["id"])


def settings(info: SandboxInfo, project_id: int) -> LabelStudioSettings:
    assert info.label_studio_url
    assert info.label_studio_token
    return LabelStudioSettings(
        url=info.label_studio_url,
        api_token=SecretStr(info.label_studio_token),
        projects={"manual": LabelStudioProject(project=project_id)},
    )


async def started(backend: LabelStudioReviewBackend, name: str) -> int:
    return int((await backend.start(name, "manual", CONTENT)).backend_id)


async def test_poisoned_tasks_end_their_reviews_and_the_backend_keeps_working(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    project = await own_project(admin, unique_name("poisoned"))
    names = {what: unique_name(what) for what in ("good", "meta", "odd", "label", "data")}
    async with LabelStudioReviewBackend(settings(label_studio_info, project)) as backend:
        ids = {what: await started(backend, name) for what, name in names.items()}
        await admin.create_annotation(ids["good"], choice_result("dog"))
        await admin.update_task(ids["meta"], {"meta": [1]})  # the security review's PATCH
        await admin.create_annotation(ids["odd"], ODD_RESULT)
        await admin.create_annotation(ids["label"], choice_result("wolf"))  # not a class
        with pytest.raises(LabelStudioFailed):  # Label Studio answers 500 but stores it...
            await admin.update_task(ids["data"], {"data": 5})
        with pytest.raises(LabelStudioFailed):  # ...and fails on the task from then on
            await admin.request("GET", f"/api/tasks/{ids['data']}")

        assert [s.name async for s in backend.pending("manual")] == []  # all left out
        states = {what: await backend.describe(name) for what, name in names.items()}
        for what, state in states.items():
            assert state is not None, what
            assert state.status is ReviewStatus.COMPLETED, what
        result = await backend.fetch_result(states["good"])  # type: ignore[arg-type]
        assert [a.content for a in result.answers] == [{"label": {"label": "dog"}}]
        reasons = {}
        for what in ("meta", "odd", "label", "data"):
            with pytest.raises(ReviewRejected) as raised:
                await backend.fetch_result(states[what])  # type: ignore[arg-type]
            reasons[what] = str(raised.value)
        assert "meta is a list, not an object" in reasons["meta"]
        assert "result[0].from_name is a list, not a string" in reasons["odd"]
        assert "value.choices[0] is not one of element 'label''s 4 choices" in reasons["label"]
        assert "fails in Label Studio" in reasons["data"]
        assert "wolf" not in reasons["label"]

        # The project still takes reviews, which still complete.
        after = unique_name("after")
        task_id = await started(backend, after)
        await admin.create_annotation(task_id, choice_result("bird"))
        state = await backend.describe(after)
        assert state is not None
        assert state.status is ReviewStatus.COMPLETED
        [answer] = (await backend.fetch_result(state)).answers
        assert answer.content == {"label": {"label": "bird"}}


async def test_a_task_pre_imported_under_a_future_name_is_never_adopted(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    project = await own_project(admin, unique_name("squatted"))
    future = unique_name("future")
    [foreign] = await admin.import_tasks(project, [task(future, CONTENT)])  # untagged
    await admin.create_annotation(foreign, choice_result("bird"))
    ignored: list[str] = []
    async with LabelStudioReviewBackend(
        settings(label_studio_info, project), ignored=ignored.append
    ) as backend:
        assert await backend.describe(future) is None
        outcome = await backend.start(future, "manual", CONTENT)
        assert not outcome.already_started
        ours = int(outcome.backend_id)
        assert ours != foreign
        state = await backend.describe(future)
        assert state is not None
        assert state.status is ReviewStatus.IN_PROGRESS  # the foreign annotation is not ours
        await admin.create_annotation(ours, choice_result("cat"))
        done = await backend.describe(future)
        assert done is not None
        [answer] = (await backend.fetch_result(done)).answers
    assert answer.content == {"label": {"label": "cat"}}
    assert ignored == ["foreign"]
    found = sorted([int(t["id"]) async for t in admin.tasks(project)])  # type: ignore[index]
    assert found == sorted([foreign, ours])  # the foreign task is left alone, not deleted


async def test_a_list_in_the_first_tasks_name_does_not_stop_look_ups(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    project = await own_project(admin, unique_name("listed"))
    [first] = await admin.import_tasks(project, [task(unique_name("first"), CONTENT)])
    await admin.update_task(first, {"data": {NAME_FIELD: ["a", "list"]}})
    name = unique_name("review")
    with pytest.raises(ReviewRejected, match="400"):  # why names are not looked up equal
        _ = [t async for t in admin.tasks(project, query=name_filter(NAME_FIELD, name))]
    exact = settings(label_studio_info, project).model_copy(update={"clock_skew_s": 0.0})
    async with LabelStudioReviewBackend(exact) as backend:
        recorded_s = time.time()  # after open: its anchor (the first task) bounds a look-up
        task_id = await started(backend, name)
        again = await backend.start(name, "manual", CONTENT)
        assert again.already_started
        assert int(again.backend_id) == task_id
        bounded = await backend.start(name, "manual", CONTENT, not_before_s=recorded_s)
        assert (bounded.already_started, int(bounded.backend_id)) == (True, task_id)
    in_project = [t async for t in admin.tasks(project, query=names_query(NAME_FIELD, name))]
    assert [t["id"] for t in in_project] == [task_id]  # type: ignore[index]


async def test_a_late_import_of_the_routers_own_is_removed_as_a_duplicate(
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    unique_name: Callable[[str], str],
) -> None:
    """The router's own late import (a killed process's, applied after the start looked) is
    tagged as the router tags: the listing of open reviews deletes it, keeping the first."""
    project = await own_project(admin, unique_name("late"))
    name = unique_name("review")
    removed: list[int] = []
    config = settings(label_studio_info, project)
    assert config.api_token is not None
    key = tag_key(config.api_token.get_secret_value())
    async with LabelStudioReviewBackend(config, removed=lambda: removed.append(1)) as backend:
        first = await started(backend, name)
        [late] = await admin.import_tasks(
            project, [task(name, CONTENT, tag=task_tag(key, "manual", name))]
        )
        listed = [state.name async for state in backend.pending("manual")]
    assert listed == [name]
    assert late > first
    assert [int(t["id"]) async for t in admin.tasks(project)] == [first]  # type: ignore[index]
    assert removed == [1]


# -- the review role, end to end -----------------------------------------------------------


async def test_the_review_role_gives_poisoned_reviews_an_outcome_and_completes_the_rest(
    sandbox: Sandbox,
    label_studio_info: SandboxInfo,
    admin: LabelStudioClient,
    sandbox_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Ingest and review in one process on Label Studio (webhook and reconciler). Events e0-e5
    are reviewed in a project of the test's own; a member poisons e1-e4 (meta, an odd result,
    a label outside the classes, data Label Studio fails on) and had pre-imported a task under
    e5's name. Then e6 and e7 come. Every event ends exactly once: e1-e4 dead-lettered as
    OutputUnreadable with the reason, the others reviewed with the answers given to the
    router's tasks; the process never died (it stops with 0)."""
    tag = uuid.uuid4().hex[:8]
    project = await own_project(admin, f"untrusted-{tag}")
    outputs = await create_topics(sandbox, tag)
    settings = config(Backend("label-studio", label_studio_info), tag, tmp_path)
    settings["review"]["backend"]["projects"] = {
        "fast": {"project": project, "annotations_per_task": 1, "deadline_s": 600}
    }
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(settings))
    names = {f"{tag}-e{i}": loop_name(f"{tag}-e{i}", "e2e") for i in range(8)}
    [foreign] = await admin.import_tasks(project, [task(names[f"{tag}-e5"], CONTENT)])
    await admin.create_annotation(foreign, choice_result("bird"))

    async def tasks_of(events: list[str], reader: TopicReader) -> dict[str, int]:
        """The router's task of each event, once it made them all (foreign ones left out)."""
        wanted = {names[event]: event for event in events}
        deadline = time.monotonic() + 60
        while True:
            found = {
                wanted[t["data"][NAME_FIELD]]: int(t["id"])
                async for t in admin.tasks(project, query=names_query(NAME_FIELD, *wanted))
                if isinstance(t, dict)
                and isinstance(t.get("data"), dict)
                and t["data"].get(NAME_FIELD) in wanted
                and int(t["id"]) != foreign
            }
            if len(found) == len(events):
                return found
            assert time.monotonic() < deadline, f"the router made tasks for {sorted(found)} only"
            await reader.poll()  # waits up to 200 ms for records: a paced re-check

    def unsure(i: int) -> tuple[bytes | None, bytes | None]:
        event = {"event_id": f"{tag}-e{i}", "label": "cat", "confidence": 0.5}
        return json_record(event, f"k{i}")

    first = [f"{tag}-e{i}" for i in range(6)]
    later = [f"{tag}-e{i}" for i in (6, 7)]
    process = router(path, "all", sandbox_env)
    async with TopicReader(sandbox.broker.bootstrap_servers, outputs) as reader:
        process.start()
        try:
            await process.wait_ready_async(60)
            await produce(
                sandbox.broker.bootstrap_servers, f"in-{tag}", [unsure(i) for i in range(6)]
            )
            ids = await tasks_of(first, reader)
            await admin.create_annotation(ids[f"{tag}-e0"], choice_result("dog"))
            await admin.update_task(ids[f"{tag}-e1"], {"meta": [1]})
            await admin.create_annotation(ids[f"{tag}-e2"], ODD_RESULT)
            await admin.create_annotation(ids[f"{tag}-e3"], choice_result("wolf"))
            with pytest.raises(LabelStudioFailed):  # stored all the same
                await admin.update_task(ids[f"{tag}-e4"], {"data": 5})
            await admin.create_annotation(ids[f"{tag}-e5"], choice_result("cat"))
            await produce(sandbox.broker.bootstrap_servers, f"in-{tag}", [unsure(6), unsure(7)])
            ids.update(await tasks_of(later, reader))
            await admin.create_annotation(ids[f"{tag}-e6"], choice_result("other"))
            await admin.create_annotation(ids[f"{tag}-e7"], choice_result("bird"))

            def finished(r: TopicReader) -> bool:
                return len(r.values(f"out-{tag}")) + len(r.values(f"dlq-{tag}")) >= 8

            await reader.until(finished, 120)
            await reader.poll()
        finally:
            code = await process.stop_async()
    assert code == 0, process.output_tail()

    reviewed = {e["event_id"]: e for e in reader.values(f"out-{tag}")}
    dead = {d["review_request"]["event_id"]: d for d in reader.values(f"dlq-{tag}")}
    assert sorted(reviewed) == [f"{tag}-e{i}" for i in (0, 5, 6, 7)]
    assert sorted(dead) == [f"{tag}-e{i}" for i in (1, 2, 3, 4)]
    assert {e: r["review"]["label"] for e, r in reviewed.items()} == {
        f"{tag}-e0": "dog",
        f"{tag}-e5": "cat",  # the router's task, not the pre-imported one
        f"{tag}-e6": "other",
        f"{tag}-e7": "bird",
    }
    assert all(r["decision"] == "reviewed" for r in reviewed.values())
    assert {d["reason_class"] for d in dead.values()} == {OUTPUT_UNREADABLE}
    assert "meta is a list" in dead[f"{tag}-e1"]["reason"]
    assert "from_name is a list" in dead[f"{tag}-e2"]["reason"]
    assert "is not one of element 'label''s 4 choices" in dead[f"{tag}-e3"]["reason"]
    assert "fails in Label Studio" in dead[f"{tag}-e4"]["reason"]
    left = [int(t["id"]) async for t in admin.tasks(project, query=names_query(  # type: ignore[index]
        NAME_FIELD, names[f"{tag}-e5"]))]  # fmt: skip
    assert foreign in left  # never deleted
    assert "died" not in process.output_tail()
