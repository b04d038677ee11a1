"""SageMaker's control plane for human review, as the sandbox serves it.

SageMaker (``sagemaker`` 2017-07-24) speaks JSON 1.1: every call is ``POST /`` with the header
``X-Amz-Target: SageMaker.<Operation>`` and a JSON body; errors carry their code in the body's
``__type``, which is how botocore picks the exception class (``client.exceptions.ResourceInUse``
and so on). The operations an A2I user's code calls, shaped as botocore's model says:

=========================  ===================================================================
operation                  errors (besides ValidationException for a malformed request)
=========================  ===================================================================
CreateHumanTaskUi          ResourceInUse (name taken)
DescribeHumanTaskUi        ResourceNotFound
ListHumanTaskUis           -
DeleteHumanTaskUi          ResourceNotFound
CreateFlowDefinition       ResourceInUse (name taken, or still Deleting); ValidationException
                           for an unknown task UI or workteam, TaskCount above the workteam's
                           workers, a request source or activation config (custom tasks only)
DescribeFlowDefinition     ResourceNotFound
ListFlowDefinitions        -
DeleteFlowDefinition       ResourceNotFound; ResourceInUse while loops are InProgress/Stopping
DescribeWorkteam           ValidationException for an unknown name (the model lists no error)
ListWorkteams              -
RenderUiTemplate           ResourceNotFound (unknown HumanTaskUiArn); template errors are in
                           the answer's ``Errors``, as the API returns them
=========================  ===================================================================

Flow definitions are first-class however they were made: those of the sandbox settings
(``flow_definitions`` in YAML) are created at every start with a task UI of the same name, their
template from ``template_file`` or a crowd-classifier built from the reviewers' labels. Those
created through the API persist across restarts in the emulator's SQLite file. Both kinds are
what StartHumanLoop accepts (only while Active) and what the router's start-up check describes.

Assumptions where AWS documents nothing (visible here on purpose):

- A created flow definition is Initializing for ``flow_activation_s`` and then Active; a deleted
  one is Deleting for ``flow_deletion_s`` and then gone (its name free again).
- Deleting a flow definition with open loops is ResourceInUse.
- A flow keeps a copy of its task UI's template: deleting the task UI leaves the flow working.
- Defaults of omitted lifetimes: TaskAvailabilityLifetimeInSeconds 864,000 (its documented
  maximum), TaskTimeLimitInSeconds 3,600 (documented).
- List operations return 10 items unless MaxResults says otherwise; SortOrder defaults to
  Descending by creation time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from stream_router.sandbox.a2i import template as worker_template
from stream_router.sandbox.a2i.resources import API, SETTINGS, FlowRecord, ResourceStore, TaskUi
from stream_router.sandbox.a2i.seeds import settings_flow, settings_task_ui
from stream_router.sandbox.a2i.shapes import (
    VALIDATION,
    ApiError,
    ErrorKind,
    integer,
    invalid,
    name_of,
    page_of,
    required,
    string,
    tags_of,
)
from stream_router.sandbox.settings import FlowDefinition, SandboxSettings

logger = logging.getLogger(__name__)

TARGET_PREFIX = "SageMaker."
CONTENT_TYPE = "application/x-amz-json-1.1"
RESOURCE_NOT_FOUND = ErrorKind("ResourceNotFound", 400)
RESOURCE_IN_USE = ErrorKind("ResourceInUse", 400)
UNKNOWN_OPERATION = ErrorKind("UnknownOperationException", 400)

WORKTEAM_NAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
ROLE_ARN_PATTERN = r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
WORKTEAM_ARN_PATTERN = r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:workteam/.*"
TASK_UI_ARN_PATTERN = r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]+:[0-9]{12}:human-task-ui/.*"
S3_URI_PATTERN = r"s3://([^/]+)/?(.*)"
MAX_TEMPLATE_CHARS = 128_000
MAX_AVAILABILITY_S = 864_000
DEFAULT_TIME_LIMIT_S = 3_600


@dataclass(frozen=True)
class Flow:
    """A flow definition as the runtime uses it: its ARN, the settings shape the simulated
    reviewers plan from (task count, lifetimes, reviewers, output path) and its template."""

    arn: str
    definition: FlowDefinition
    template: str
    status: str
    human_loop_config: dict[str, Any]


class ControlPlaneApi:
    """SageMaker's control plane for human review (see module doc); ``open_loops(arn)`` counts
    a flow's loops InProgress or Stopping."""

    def __init__(
        self,
        settings: SandboxSettings,
        resources: ResourceStore,
        *,
        clock: Callable[[], float],
        open_loops: Callable[[str], int] = lambda arn: 0,
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.clock = clock
        self.open_loops = open_loops
        aws = settings.aws
        self.prefix = f"arn:aws:sagemaker:{aws.region}:{aws.account_id}"
        self._operations: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "CreateHumanTaskUi": self.create_human_task_ui,
            "DescribeHumanTaskUi": self.describe_human_task_ui,
            "ListHumanTaskUis": self.list_human_task_uis,
            "DeleteHumanTaskUi": self.delete_human_task_ui,
            "CreateFlowDefinition": self.create_flow_definition,
            "DescribeFlowDefinition": self.describe_flow_definition,
            "ListFlowDefinitions": self.list_flow_definitions,
            "DeleteFlowDefinition": self.delete_flow_definition,
            "DescribeWorkteam": self.describe_workteam,
            "ListWorkteams": self.list_workteams,
            "RenderUiTemplate": self.render_ui_template,
        }
        self._settings_flows = {fd.name: fd for fd in settings.flow_definitions}
        self._cache: dict[str, Flow] = {}
        self._create_settings_flows()

    # -- the runtime's view ------------------------------------------------------------------

    def flow(self, arn: str) -> Flow | None:
        """The flow definition of ``arn`` in any status, or None when there is none."""
        name = arn.rpartition("/")[2]
        record = self.resources.flow(name)
        if record is None or record.arn != arn:
            return None
        status = self._status(record)
        if status is None:
            return None
        cached = self._cache.get(arn)
        if cached is None or cached.status != status:
            cached = Flow(
                arn, self._definition(record), record.template, status, record.human_loop_config
            )
            self._cache[arn] = cached
        return cached

    def flows(self) -> list[Flow]:
        """Every flow definition there is now, oldest first."""
        found = (self.flow(record.arn) for record in self.resources.flows())
        return [flow for flow in found if flow is not None]

    def _status(self, record: FlowRecord) -> str | None:
        """``record``'s status now; None (and the record removed) once its deletion is over."""
        now = self.clock()
        if (
            record.deleted_at is not None
            and now >= record.deleted_at + self.settings.flow_deletion_s
        ):
            self.resources.delete_flow(record.name)
            self._cache.pop(record.arn, None)
            return None
        return record.status(now)

    def _definition(self, record: FlowRecord) -> FlowDefinition:
        if record.source == SETTINGS and record.name in self._settings_flows:
            return self._settings_flows[record.name]
        config = record.human_loop_config
        reviewers = self.settings.workteam.reviewers
        public = "/public-crowd/" in config["WorkteamArn"]
        if public != (reviewers.workforce == "public"):
            reviewers = reviewers.model_copy(
                update={"workforce": "public" if public else "private"}
            )
        return FlowDefinition(
            name=record.name,
            s3_output_path=record.output_path,
            task_count=config["TaskCount"],
            task_availability_lifetime_s=config["TaskAvailabilityLifetimeInSeconds"],
            task_time_limit_s=config["TaskTimeLimitInSeconds"],
            reviewers=reviewers,
        )

    def _create_settings_flows(self) -> None:
        """The settings' flow definitions, created (again) as the API would have."""
        now = self.clock()
        for fd in self.settings.flow_definitions:
            existing = self.resources.flow(fd.name)
            if existing is not None and existing.source == API:
                logger.warning(
                    "the settings' flow definition %s replaces the one of that name created "
                    "through the API",
                    fd.name,
                )
            ui = settings_task_ui(self.settings, fd, now)
            self.resources.put_task_ui(ui)
            record = settings_flow(self.settings, fd, ui, now)
            self.resources.put_flow(record)
            self._cache.pop(record.arn, None)

    # -- the wire ----------------------------------------------------------------------------

    @staticmethod
    def operation(target: str | None) -> str:
        """The operation an ``X-Amz-Target`` header names (for counting requests)."""
        if not target:
            return "(no X-Amz-Target)"
        return target.removeprefix(TARGET_PREFIX)

    def call(self, target: str | None, body: Any, host: str = "127.0.0.1") -> dict[str, Any]:
        """Serve one request: the operation ``target`` names, with the parsed JSON ``body``;
        ``host`` is the address the request came to (the worker portal's, for workteams)."""
        handler = None
        if target and target.startswith(TARGET_PREFIX):
            handler = self._operations.get(target.removeprefix(TARGET_PREFIX))
        if handler is None:
            raise ApiError(
                UNKNOWN_OPERATION,
                f"The sandbox's SageMaker serves only {sorted(self._operations)}; "
                f"X-Amz-Target {target!r} is not one of them",
            )
        if not isinstance(body, dict):
            raise ApiError(VALIDATION, "The request body must be a JSON object")
        return handler(body, host)

    # -- human task UIs ----------------------------------------------------------------------

    def create_human_task_ui(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        name = name_of(body, "HumanTaskUiName")
        content = _template_content(body)
        tags = tags_of(body.get("Tags"))
        problems = worker_template.check(content).errors
        if problems:
            raise ApiError(VALIDATION, f"The worker template is not valid: {'; '.join(problems)}")
        if self.resources.task_ui(name) is not None:
            raise ApiError(RESOURCE_IN_USE, f"Human task UI {name} already exists")
        ui = TaskUi(name, f"{self.prefix}:human-task-ui/{name}", self.clock(), content, tags, API)
        self.resources.put_task_ui(ui)
        return {"HumanTaskUiArn": ui.arn}

    def describe_human_task_ui(self, body: dict[str, Any], host: str) -> dict[str, Any]:
        ui = self._task_ui(name_of(body, "HumanTaskUiName"))
        return {
            "HumanTaskUiArn": ui.arn,
            "HumanTaskUiName": ui.name,
            "HumanTaskUiStatus": "Active",
            "CreationTime": ui.created_at,
            "UiTemplate": {
                "Url": f"http://{host}/portal/task-uis/{ui.name}/template.liquid",
                "ContentSha256": hashlib.sha256(ui.template.encode()).hexdigest(),
            },
        }

    def list_human_task_uis(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        page, token = page_of(body, self.resources.task_uis(), "HumanTaskUis")
        summaries = [
            {"HumanTaskUiName": ui.name, "HumanTaskUiArn": ui.arn, "CreationTime": ui.created_at}
            for ui in page
        ]
        return {"HumanTaskUiSummaries": summaries, **token}

    def delete_human_task_ui(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        ui = self._task_ui(name_of(body, "HumanTaskUiName"))
        self.resources.delete_task_ui(ui.name)
        return {}

    def _task_ui(self, name: str) -> TaskUi:
        ui = self.resources.task_ui(name)
        if ui is None:
            raise ApiError(RESOURCE_NOT_FOUND, f"Human task UI {name} does not exist")
        return ui

    # -- flow definitions --------------------------------------------------------------------

    def create_flow_definition(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        name = name_of(body, "FlowDefinitionName")
        for unsupported in ("HumanLoopRequestSource", "HumanLoopActivationConfig"):
            if body.get(unsupported) is not None:
                raise ApiError(
                    VALIDATION,
                    f"{unsupported} is for Amazon Rekognition and Amazon Textract task types; "
                    "the sandbox serves custom task types only (omit it, as a custom flow does)",
                )
        config = self._human_loop_config(required(body, "HumanLoopConfig"))
        output = required(body, "OutputConfig")
        if not isinstance(output, dict):
            raise invalid(output, "outputConfig", "Member must be a structure")
        path = string(
            required(output, "S3OutputPath", "outputConfig."),
            "outputConfig.s3OutputPath",
            high=1024,
            pattern=S3_URI_PATTERN,
        )
        if output.get("KmsKeyId") is not None:
            string(
                output["KmsKeyId"], "outputConfig.kmsKeyId", high=2048, pattern=r"[a-zA-Z0-9:/_-]*"
            )
        role = string(
            required(body, "RoleArn"), "roleArn", low=20, high=2048, pattern=ROLE_ARN_PATTERN
        )
        tags = tags_of(body.get("Tags"))
        existing = self.resources.flow(name)
        if existing is not None and self._status(existing) is not None:
            raise ApiError(
                RESOURCE_IN_USE,
                f"Flow definition {name} already exists ({existing.status(self.clock())})",
            )
        ui = self.resources.task_ui_by_arn(config["HumanTaskUiArn"])
        if ui is None:
            raise ApiError(VALIDATION, f"Human task UI {config['HumanTaskUiArn']} does not exist")
        output_config = {"S3OutputPath": path}
        if output.get("KmsKeyId") is not None:
            output_config["KmsKeyId"] = output["KmsKeyId"]
        request = {
            "HumanLoopConfig": config,
            "OutputConfig": output_config,
            "RoleArn": role,
            "Tags": list(tags),
        }
        now = self.clock()
        record = FlowRecord(
            name,
            self.settings.flow_arn(name),
            now,
            now + self.settings.flow_activation_s,
            None,
            request,
            ui.template,
            API,
        )
        self.resources.put_flow(record)
        self._cache.pop(record.arn, None)
        return {"FlowDefinitionArn": record.arn}

    def _human_loop_config(self, value: Any) -> dict[str, Any]:
        where = "humanLoopConfig."
        if not isinstance(value, dict):
            raise invalid(value, "humanLoopConfig", "Member must be a structure")
        workteam = string(
            required(value, "WorkteamArn", where),
            f"{where}workteamArn",
            high=256,
            pattern=WORKTEAM_ARN_PATTERN,
        )
        ui_arn = string(
            required(value, "HumanTaskUiArn", where),
            f"{where}humanTaskUiArn",
            high=1024,
            pattern=TASK_UI_ARN_PATTERN,
        )
        title = string(required(value, "TaskTitle", where), f"{where}taskTitle", low=1, high=128)
        description = string(
            required(value, "TaskDescription", where), f"{where}taskDescription", low=1, high=255
        )
        count = integer(required(value, "TaskCount", where), f"{where}taskCount", low=1, high=3)
        lifetime = integer(
            value.get("TaskAvailabilityLifetimeInSeconds", MAX_AVAILABILITY_S),
            f"{where}taskAvailabilityLifetimeInSeconds",
            low=1,
            high=MAX_AVAILABILITY_S,
        )
        limit = integer(
            value.get("TaskTimeLimitInSeconds", DEFAULT_TIME_LIMIT_S),
            f"{where}taskTimeLimitInSeconds",
            low=30,
        )
        config: dict[str, Any] = {
            "WorkteamArn": workteam,
            "HumanTaskUiArn": ui_arn,
            "TaskTitle": title,
            "TaskDescription": description,
            "TaskCount": count,
            "TaskAvailabilityLifetimeInSeconds": lifetime,
            "TaskTimeLimitInSeconds": limit,
        }
        keywords = value.get("TaskKeywords")
        if keywords is not None:
            if not isinstance(keywords, list) or not 1 <= len(keywords) <= 5:
                raise invalid(keywords, f"{where}taskKeywords", "Member must have 1 to 5 items")
            for keyword in keywords:
                string(
                    keyword,
                    f"{where}taskKeywords.member",
                    low=1,
                    high=30,
                    pattern=r"^[A-Za-z0-9]+( [A-Za-z0-9]+)*$",
                )
            config["TaskKeywords"] = keywords
        public = workteam == self.settings.workteam_arn(public=True)
        if not public and workteam != self.settings.workteam_arn():
            raise ApiError(
                VALIDATION,
                f"Workteam {workteam} does not exist; the sandbox has "
                f"{self.settings.workteam_arn()} (private) and the public workforce "
                f"{self.settings.workteam_arn(public=True)}",
            )
        if public:
            price = value.get("PublicWorkforceTaskPrice")
            if not isinstance(price, dict) or not isinstance(price.get("AmountInUsd"), dict):
                raise ApiError(
                    VALIDATION, "PublicWorkforceTaskPrice is required for the public workforce"
                )
            config["PublicWorkforceTaskPrice"] = price
        elif count > self.settings.workteam.workers:
            raise ApiError(
                VALIDATION,
                f"TaskCount {count} is more than the {self.settings.workteam.workers} workers of "
                f"workteam {self.settings.workteam.name}",
            )
        return config

    def describe_flow_definition(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        name = name_of(body, "FlowDefinitionName")
        record = self.resources.flow(name)
        status = self._status(record) if record is not None else None
        if record is None or status is None:
            raise ApiError(RESOURCE_NOT_FOUND, f"Could not find flow definition {name!r}")
        request = record.request
        response: dict[str, Any] = {
            "FlowDefinitionArn": record.arn,
            "FlowDefinitionName": record.name,
            "FlowDefinitionStatus": status,
            "CreationTime": record.created_at,  # JSON 1.1 timestamps are epoch seconds
            "HumanLoopConfig": request["HumanLoopConfig"],
            "OutputConfig": request["OutputConfig"],
            "RoleArn": request["RoleArn"],
        }
        return response

    def list_flow_definitions(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        records = [r for r in self.resources.flows() if self._status(r) is not None]
        page, token = page_of(body, records, "FlowDefinitions")
        now = self.clock()
        summaries = [
            {
                "FlowDefinitionName": record.name,
                "FlowDefinitionArn": record.arn,
                "FlowDefinitionStatus": record.status(now),
                "CreationTime": record.created_at,
            }
            for record in page
        ]
        return {"FlowDefinitionSummaries": summaries, **token}

    def delete_flow_definition(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        name = name_of(body, "FlowDefinitionName")
        record = self.resources.flow(name)
        if record is None or self._status(record) is None:
            raise ApiError(RESOURCE_NOT_FOUND, f"Could not find flow definition {name!r}")
        if record.deleted_at is not None:
            return {}
        open_loops = self.open_loops(record.arn)
        if open_loops:
            raise ApiError(
                RESOURCE_IN_USE,
                f"Flow definition {name} has {open_loops} human loops InProgress or Stopping; "
                "stop them (StopHumanLoop) and delete it when they have ended",
            )
        self.resources.put_flow(
            FlowRecord(
                record.name,
                record.arn,
                record.created_at,
                record.active_at,
                self.clock(),
                record.request,
                record.template,
                record.source,
            )
        )
        self._cache.pop(record.arn, None)
        return {}

    # -- workteams ---------------------------------------------------------------------------

    def _workteam(self, host: str) -> dict[str, Any]:
        team = self.settings.workteam
        region = self.settings.aws.region
        return {
            "WorkteamName": team.name,
            "MemberDefinitions": [
                {
                    "CognitoMemberDefinition": {
                        "UserPool": f"{region}_sandbox",
                        "UserGroup": team.name,
                        "ClientId": "sandboxportalclient",
                    }
                }
            ],
            "WorkteamArn": self.settings.workteam_arn(),
            "WorkforceArn": f"{self.prefix}:workforce/default",
            "Description": f"The sandbox's {team.workers} simulated reviewers, and you in the "
            "worker portal",
            "SubDomain": host,
            "CreateDate": 0.0,
            "LastUpdatedDate": 0.0,
        }

    def describe_workteam(self, body: dict[str, Any], host: str) -> dict[str, Any]:
        name = string(
            required(body, "WorkteamName"),
            "workteamName",
            low=1,
            high=63,
            pattern=WORKTEAM_NAME_PATTERN,
        )
        if name != self.settings.workteam.name:
            raise ApiError(VALIDATION, f"Workteam {name} does not exist")
        return {"Workteam": self._workteam(host)}

    def list_workteams(self, body: dict[str, Any], host: str) -> dict[str, Any]:
        sort_by = body.get("SortBy", "CreateDate")
        if sort_by not in ("Name", "CreateDate"):
            raise invalid(
                sort_by, "sortBy", "Member must satisfy enum value set: [Name, CreateDate]"
            )
        contains = body.get("NameContains")
        if contains is not None:
            string(contains, "nameContains", low=1, high=63, pattern=WORKTEAM_NAME_PATTERN)
        teams = [self._workteam(host)]
        if contains is not None:
            teams = [t for t in teams if contains in t["WorkteamName"]]
        page, token = page_of(body, teams, "Workteams", created=lambda team: 0.0)
        return {"Workteams": page, **token}

    # -- rendering ---------------------------------------------------------------------------

    def render_ui_template(self, body: dict[str, Any], _: str) -> dict[str, Any]:
        string(required(body, "RoleArn"), "roleArn", low=20, high=2048, pattern=ROLE_ARN_PATTERN)
        task = required(body, "Task")
        if not isinstance(task, dict):
            raise invalid(task, "task", "Member must be a structure")
        text = string(required(task, "Input", "task."), "task.input", low=2, high=128_000)
        if body.get("HumanTaskUiArn") is not None:
            arn = string(
                body["HumanTaskUiArn"], "humanTaskUiArn", high=1024, pattern=TASK_UI_ARN_PATTERN
            )
            ui = self.resources.task_ui_by_arn(arn)
            if ui is None:
                raise ApiError(RESOURCE_NOT_FOUND, f"Human task UI {arn} does not exist")
            content = ui.template
        else:
            content = _template_content(body)
        try:
            task_input = orjson.loads(text)
        except ValueError as exc:
            return _render_error("InvalidInput", f"Task.Input is not JSON: {exc}")
        if not isinstance(task_input, dict):
            return _render_error("InvalidInput", "Task.Input must be a JSON object")
        try:
            rendered = worker_template.render(content, task_input)
        except worker_template.TemplateError as exc:
            return _render_error("TemplateError", str(exc))
        return {"RenderedContent": rendered, "Errors": []}


def _template_content(body: dict[str, Any]) -> str:
    """``UiTemplate.Content`` of a request, validated as the model says."""
    ui_template = required(body, "UiTemplate")
    if not isinstance(ui_template, dict):
        raise invalid(ui_template, "uiTemplate", "Member must be a structure")
    return string(
        required(ui_template, "Content", "uiTemplate."),
        "uiTemplate.content",
        low=1,
        high=MAX_TEMPLATE_CHARS,
    )


def _render_error(code: str, message: str) -> dict[str, Any]:
    """RenderUiTemplate's answer when the template cannot be rendered: the error, no content."""
    return {"RenderedContent": "", "Errors": [{"Code": code, "Message": message}]}
