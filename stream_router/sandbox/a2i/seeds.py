"""The sandbox settings' flow definitions as control-plane objects.

A flow definition of ``flow_definitions`` in the sandbox YAML is one way of creating what
CreateHumanTaskUi and CreateFlowDefinition create: at every emulator start each gets a human
task UI of the same name (its template from ``template_file``, or :func:`default_template`) and
a flow definition record, Active at once, whose request is what a user would have sent.
"""

from __future__ import annotations

import functools
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from stream_router.sandbox.a2i.resources import SETTINGS, FlowRecord, TaskUi
from stream_router.sandbox.a2i.template import CrowdElement, elements, render
from stream_router.sandbox.settings import FlowDefinition, Reviewers, SandboxSettings


def default_template(reviewers: Reviewers) -> str:
    """The worker template of a settings flow without ``template_file``: one crowd-classifier
    named ``reviewers.answer_name`` over ``reviewers.labels``, showing what the router sends."""
    categories = html.escape(json.dumps(reviewers.labels), quote=True)
    name = html.escape(reviewers.answer_name, quote=True)
    return f"""<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <crowd-classifier name="{name}" categories="{categories}"
      header="Which label is right for this event?">
    <classification-target>
      <p>The model said <strong>{{{{ task.input.prediction.label }}}}</strong>
        (confidence {{{{ task.input.prediction.confidence }}}}).</p>
      <pre>{{{{ task.input.event | to_json }}}}</pre>
    </classification-target>
    <full-instructions header="How to review">
      <p>Read the event and choose the label that describes it. The model's own label may be
        wrong: that is why this event is here.</p>
    </full-instructions>
    <short-instructions>Choose the right label for the event.</short-instructions>
  </crowd-classifier>
</crowd-form>
"""


def role_arn(settings: SandboxSettings) -> str:
    """The execution role the settings' flow definitions name."""
    return f"arn:aws:iam::{settings.aws.account_id}:role/stream-router-sandbox-a2i"


def settings_task_ui(settings: SandboxSettings, fd: FlowDefinition, now: float) -> TaskUi:
    """The human task UI of settings flow ``fd``: its template file, or the default."""
    if fd.template_file is not None:
        template = fd.template_file.read_text(encoding="utf-8")
    else:
        template = default_template(fd.reviewers)
    aws = settings.aws
    arn = f"arn:aws:sagemaker:{aws.region}:{aws.account_id}:human-task-ui/{fd.name}"
    return TaskUi(fd.name, arn, now, template, (), SETTINGS)


def settings_flow(
    settings: SandboxSettings, fd: FlowDefinition, ui: TaskUi, now: float
) -> FlowRecord:
    """The flow definition record of settings flow ``fd``, Active from ``now``."""
    request = {
        "HumanLoopConfig": {
            "WorkteamArn": settings.workteam_arn(fd.reviewers.workforce == "public"),
            "HumanTaskUiArn": ui.arn,
            "TaskTitle": f"Check a model's prediction ({fd.name})",
            "TaskDescription": "Choose the right label for an event the model was unsure about "
            "(simulated reviewers of the stream_router sandbox).",
            "TaskCount": fd.task_count,
            # The model's minimums, in whole seconds (the settings allow fractions).
            "TaskAvailabilityLifetimeInSeconds": max(1, math.ceil(fd.task_availability_lifetime_s)),
            "TaskTimeLimitInSeconds": max(30, math.ceil(fd.task_time_limit_s)),
        },
        "OutputConfig": {"S3OutputPath": settings.output_path(fd)},
        "RoleArn": role_arn(settings),
    }
    arn = settings.flow_arn(fd.name)
    return FlowRecord(fd.name, arn, now, now, None, request, ui.template, SETTINGS)


@functools.cache
def _default_page(labels: tuple[str, ...], answer_name: str) -> tuple[CrowdElement, ...]:
    template = default_template(Reviewers(labels=list(labels), answer_name=answer_name))
    return tuple(elements(render(template, {})))


def settings_page(fd: FlowDefinition, content: Mapping[str, Any]) -> Sequence[CrowdElement]:
    """The crowd elements a worker of settings flow ``fd`` sees for a loop with ``content``
    (for planning answers outside the emulator: Label Studio's annotators, ``demo history``).
    The default template's do not depend on the input, so they are worked out once."""
    if fd.template_file is None:
        return _default_page(tuple(fd.reviewers.labels), fd.reviewers.answer_name)
    return elements(render(fd.template_file.read_text(encoding="utf-8"), content))
