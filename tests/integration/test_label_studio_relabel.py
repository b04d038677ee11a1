"""A project an older sandbox made (its state folder kept) gets the review form on the next
``sandbox up``: provisioning replaces its labeling configuration, the annotations it holds still
fit, and the tasks the router makes today import into it."""

from __future__ import annotations

import uuid

import pytest

from stream_router.labelstudio.tasks import choice_result, labeling_config, task
from stream_router.sandbox.settings import FlowDefinition
from stream_router.sandbox.stack import Sandbox, SandboxInfo

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

#: The labeling configuration sandboxes made before the review form (the raw JSON dump).
OLDER = """<View>
  <Header value="The model says: $model_label"/>
  <Text name="review" value="$review_text"/>
  <Choices name="label" toName="review" choice="single-radio" showInline="true" required="true">
{choices}
  </Choices>
</View>
"""


async def test_a_project_an_older_sandbox_made_gets_the_review_form(
    sandbox: Sandbox, label_studio_info: SandboxInfo
) -> None:
    server = sandbox.label_studio
    flow = FlowDefinition(name=f"older-{uuid.uuid4().hex[:8]}")
    labels = flow.reviewers.labels
    older = OLDER.format(choices="\n".join(f'    <Choice value="{label}"/>' for label in labels))
    async with server.client() as ls:
        made = await ls.create_project(flow.name, older, maximum_annotations=1)
        old_data = {"review_name": "old", "review_text": '{"event": {}}', "model_label": "cat"}
        [old_task] = await ls.import_tasks(int(made["id"]), [{"data": old_data}])
        await ls.create_annotation(old_task, choice_result(labels[1]))

    resources = await server.provision([flow], annotators=0)

    assert resources.projects[flow.name] == int(made["id"])
    content = {
        "event": {"event_id": "e"},
        "prediction": {"label": labels[0], "confidence": 0.4, "scores": None},
        "reason": "r",
        "_identity": {"policy_version": "1"},
    }
    async with server.client() as ls:
        project = await ls.project(int(made["id"]))
        assert project["label_config"].strip() == labeling_config(labels).strip()
        [new_task] = await ls.import_tasks(int(made["id"]), [task("new", content)])
        summary = (await ls.task(new_task))["data"]["model_summary"]
        assert summary == f"Model: {labels[0]} (confidence 0.4)"
        [annotation] = (await ls.task(old_task))["annotations"]
        assert annotation["result"][0]["value"] == {"choices": [labels[1]]}
