"""The five operations of ``sagemaker-a2i-runtime`` 2019-11-07, with the service's validation.

This module is the emulator's behaviour without HTTP: it validates requests as the service
model's shapes demand (lengths, patterns, enums, ranges), keeps loops in a :class:`LoopStore`,
and raises :class:`ApiError` carrying the modeled error code and HTTP status. ``server.py``
puts it on the wire.

Assumptions where AWS documents nothing (kept here so they are visible):

- StartHumanLoop with the name of an existing (not deleted) loop and the same flow definition
  and the same InputContent (compared as parsed JSON) returns that loop's ARN with 200; with a
  different input or flow definition it is a 409 ConflictException, whatever the loop's status.
- A deleted loop's name can be used again.
- An unknown flow definition is a 400 ValidationException on StartHumanLoop (whose model lists no
  ResourceNotFoundException) and a 404 ResourceNotFoundException on ListHumanLoops. So is, on
  StartHumanLoop, one that is not Active (Initializing, Deleting).
- InputContent must be a JSON object (templates address ``task.input.<key>``).
- StopHumanLoop on a Stopping loop is a no-op; on a finished loop it is a ValidationException.
- CreationTimeAfter/Before filters are inclusive.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from stream_router.sandbox.a2i.reviewers import LoopPlan, iso_millis, plan_loop
from stream_router.sandbox.a2i.shapes import (
    CONFLICT,
    NOT_FOUND,
    QUOTA_EXCEEDED,
    VALIDATION,
    ApiError,
    invalid,
    parse_timestamp,
)
from stream_router.sandbox.a2i.store import ACTIVE, TERMINAL, Loop, LoopStore
from stream_router.sandbox.a2i.template import TemplateError, elements, render
from stream_router.sandbox.settings import SandboxSettings

if TYPE_CHECKING:
    from stream_router.sandbox.a2i.control import Flow

NAME_PATTERN = r"^[a-z0-9](-*[a-z0-9])*$"
FLOW_ARN_PATTERN = r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:flow-definition/.*"
MAX_INPUT_CHARS = 3_145_728
CONTENT_CLASSIFIERS = ("FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent")
SORT_ORDERS = ("Ascending", "Descending")


def validate_name(value: object, member: str = "humanLoopName") -> str:
    if not isinstance(value, str):
        raise invalid(value, member, "Member must be a string")
    if not 1 <= len(value) <= 63:
        raise invalid(
            value, member, "Member must have length less than or equal to 63 and at least 1"
        )
    if not re.fullmatch(NAME_PATTERN, value):
        raise invalid(
            value, member, f"Member must satisfy regular expression pattern: {NAME_PATTERN}"
        )
    return value


def validate_flow_arn(value: object) -> str:
    member = "flowDefinitionArn"
    if not isinstance(value, str):
        raise invalid(value, member, "Member must be a string")
    if len(value) > 1024:
        raise invalid(
            value[:64] + "...", member, "Member must have length less than or equal to 1024"
        )
    if not re.fullmatch(FLOW_ARN_PATTERN, value):
        raise invalid(
            value, member, f"Member must satisfy regular expression pattern: {FLOW_ARN_PATTERN}"
        )
    return value


def output_key(prefix: str, flow_name: str, loop_name: str, created_at: float) -> str:
    """``<prefix>/<flow>/YYYY/MM/DD/hh/mm/ss/<loop>/output.json`` (creation time, UTC)."""
    stamp = datetime.fromtimestamp(created_at, UTC).strftime("%Y/%m/%d/%H/%M/%S")
    parts = [p for p in (prefix.strip("/"), flow_name, stamp, loop_name, "output.json") if p]
    return "/".join(parts)


def output_uri(settings: SandboxSettings, flow: Flow, loop: Loop) -> str:
    """Where ``loop``'s output.json is (or will be) written."""
    path = settings.output_path(flow.definition)
    bucket, _, prefix = path.removeprefix("s3://").partition("/")
    key = output_key(prefix, flow.definition.name, loop.name, loop.created_at)
    return f"s3://{bucket}/{key}"


class HumanLoopApi:
    """The emulated service; ``schedule(due_at, name)`` is told of every timed transition and
    ``flow(arn)`` finds a flow definition (the control plane's, ``control.py``)."""

    def __init__(
        self,
        settings: SandboxSettings,
        store: LoopStore,
        *,
        clock: Callable[[], float],
        schedule: Callable[[float, str], None],
        flow: Callable[[str], Flow | None],
        max_active_loops: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.schedule = schedule
        self.flow = flow
        self.max_active_loops = max_active_loops

    # -- operations --------------------------------------------------------------------------

    def start_human_loop(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(VALIDATION, "The request body must be a JSON object")
        for member in ("HumanLoopName", "FlowDefinitionArn", "HumanLoopInput"):
            if member not in body:
                raise ApiError(VALIDATION, f"Missing required member: {member}")
        name = validate_name(body["HumanLoopName"])
        flow_arn = validate_flow_arn(body["FlowDefinitionArn"])
        content_text, content = self._input_content(body["HumanLoopInput"])
        classifiers = self._classifiers(body.get("DataAttributes"))
        flow = self.flow(flow_arn)
        if flow is None:
            raise ApiError(VALIDATION, f"Flow definition {flow_arn} does not exist")
        if flow.status != "Active":
            raise ApiError(
                VALIDATION,
                f"Flow definition {flow_arn} is {flow.status}; loops start only on an Active one "
                "(DescribeFlowDefinition until FlowDefinitionStatus is Active)",
            )

        existing = self.store.get(name)
        if existing is not None:
            same = (
                existing.flow_definition_arn == flow_arn
                and orjson.loads(existing.input_content) == content
            )
            if not same:
                raise ApiError(
                    CONFLICT,
                    f"A human loop named {name} already exists ({existing.status}) with a "
                    "different input or flow definition",
                )
            return {"HumanLoopArn": existing.arn}

        limit = self.max_active_loops()
        if limit is not None and self.store.count_active() >= limit:
            raise ApiError(
                QUOTA_EXCEEDED,
                f"The number of active human loops has reached the account quota ({limit})",
            )
        now = self.clock()
        try:
            page = elements(render(flow.template, content))
            plan = plan_loop(flow.definition, name, content, now, page)
        except TemplateError as exc:
            # A2I would start the loop and show its workers a broken page; here it fails at once.
            reason = f"The worker template cannot be rendered with this input: {exc}"
            plan = LoopPlan(expires=False, ends_at=now, answers=(), failure=reason[:1024])
        aws = self.settings.aws
        loop = Loop(
            name=name,
            arn=f"arn:aws:sagemaker:{aws.region}:{aws.account_id}:human-loop/{name}",
            flow_definition_arn=flow_arn,
            flow_name=flow.definition.name,
            status="InProgress",
            created_at=now,
            input_content=content_text,
            content_classifiers=classifiers,
            plan=plan,
            due_at=plan.ends_at,
        )
        self.store.put(loop)
        self.schedule(plan.ends_at, name)
        return {"HumanLoopArn": loop.arn}

    def describe_human_loop(self, name: str) -> dict[str, Any]:
        loop = self._existing(name)
        response: dict[str, Any] = {
            "CreationTime": iso_millis(loop.created_at),
            "HumanLoopStatus": loop.status,
            "HumanLoopName": loop.name,
            "HumanLoopArn": loop.arn,
            "FlowDefinitionArn": loop.flow_definition_arn,
        }
        if loop.failure_code:
            response["FailureCode"] = loop.failure_code
        if loop.failure_reason:
            response["FailureReason"] = loop.failure_reason
        uri = loop.output_s3_uri or self._planned_output(loop)
        if uri:
            response["HumanLoopOutput"] = {"OutputS3Uri": uri}
        return response

    def _planned_output(self, loop: Loop) -> str | None:
        """Where an open loop's output.json will be written: A2I returns it while the loop is
        InProgress too (AWS's own notebooks read it then). Not for a loop that ended without
        output (Failed, Stopped before any answer): nothing will be written."""
        if loop.status not in ("InProgress", "Stopping"):
            return None
        flow = self.flow(loop.flow_definition_arn)
        if flow is None:
            return None
        return output_uri(self.settings, flow, loop)

    def list_human_loops(self, query: Mapping[str, str]) -> dict[str, Any]:
        if "FlowDefinitionArn" not in query:
            raise ApiError(VALIDATION, "Missing required member: FlowDefinitionArn")
        flow_arn = validate_flow_arn(query["FlowDefinitionArn"])
        sort = query.get("SortOrder", "Descending")
        if sort not in SORT_ORDERS:
            raise invalid(
                sort, "sortOrder", f"Member must satisfy enum value set: [{', '.join(SORT_ORDERS)}]"
            )
        max_results = self._max_results(query.get("MaxResults"))
        after = query.get("CreationTimeAfter")
        before = query.get("CreationTimeBefore")
        after_s = parse_timestamp(after, "creationTimeAfter") if after else None
        before_s = parse_timestamp(before, "creationTimeBefore") if before else None
        if self.flow(flow_arn) is None:
            raise ApiError(NOT_FOUND, f"Flow definition {flow_arn} does not exist")
        start_key = self._decode_token(query.get("NextToken"), flow_arn, sort)
        rows = self.store.page(
            flow_arn,
            after=after_s,
            before=before_s,
            descending=sort == "Descending",
            start_key=start_key,
            limit=max_results + 1,
        )
        response: dict[str, Any] = {
            "HumanLoopSummaries": [self._summary(loop) for loop in rows[:max_results]]
        }
        if len(rows) > max_results:
            last = rows[max_results - 1]
            response["NextToken"] = self._encode_token(flow_arn, sort, last)
        return response

    def stop_human_loop(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "HumanLoopName" not in body:
            raise ApiError(VALIDATION, "Missing required member: HumanLoopName")
        loop = self._existing(validate_name(body["HumanLoopName"]))
        if loop.status == "Stopping":
            return {}
        if loop.status in TERMINAL:
            raise ApiError(
                VALIDATION, f"Human loop {loop.name} is {loop.status} and cannot be stopped"
            )
        now = self.clock()
        plan = loop.plan
        settle_at = now + self.settings.stop_settle_s
        if plan.held_at(now):
            # Workers already hold the task: they finish it and the Stopped loop has output.
            settle_at = max(settle_at, plan.ends_at)
        else:
            plan = type(plan)(expires=False, ends_at=settle_at, answers=())
        self.store.put(loop.evolve(status="Stopping", plan=plan, due_at=settle_at))
        self.schedule(settle_at, loop.name)
        return {}

    def delete_human_loop(self, name: str) -> dict[str, Any]:
        loop = self._existing(name)
        if loop.status in ACTIVE:
            raise ApiError(
                VALIDATION,
                f"Human loop {loop.name} is {loop.status}; only Failed, Completed or Stopped "
                "loops can be deleted",
            )
        self.store.delete(loop.name)
        return {}

    # -- helpers -----------------------------------------------------------------------------

    def _existing(self, name: str) -> Loop:
        loop = self.store.get(validate_name(name))
        if loop is None:
            raise ApiError(NOT_FOUND, f"Human loop {name} does not exist")
        return loop

    @staticmethod
    def _input_content(value: Any) -> tuple[str, Any]:
        if not isinstance(value, dict) or "InputContent" not in value:
            raise ApiError(VALIDATION, "Missing required member: HumanLoopInput.InputContent")
        text = value["InputContent"]
        if not isinstance(text, str):
            raise invalid(
                type(text).__name__, "humanLoopInput.inputContent", "Member must be a string"
            )
        if len(text) > MAX_INPUT_CHARS:
            raise invalid(
                f"<{len(text)} characters>",
                "humanLoopInput.inputContent",
                f"Member must have length less than or equal to {MAX_INPUT_CHARS}",
            )
        try:
            content = orjson.loads(text)
        except ValueError as exc:
            raise ApiError(VALIDATION, f"InputContent is not valid JSON: {exc}") from exc
        if not isinstance(content, dict):
            raise ApiError(VALIDATION, "InputContent must be a JSON object")
        return text, content

    @staticmethod
    def _classifiers(value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict) or not isinstance(value.get("ContentClassifiers"), list):
            raise ApiError(VALIDATION, "DataAttributes.ContentClassifiers must be a list")
        items = value["ContentClassifiers"]
        if len(items) > 256:
            raise invalid(
                len(items),
                "dataAttributes.contentClassifiers",
                "Member must have length less than or equal to 256",
            )
        for item in items:
            if item not in CONTENT_CLASSIFIERS:
                raise invalid(
                    item,
                    "dataAttributes.contentClassifiers",
                    f"Member must satisfy enum value set: [{', '.join(CONTENT_CLASSIFIERS)}]",
                )
        return tuple(items)

    @staticmethod
    def _max_results(value: str | None) -> int:
        if value is None:
            return 100
        try:
            number = int(value)
        except ValueError as exc:
            raise invalid(value, "maxResults", "Member must be an integer") from exc
        if not 1 <= number <= 100:
            raise invalid(
                value,
                "maxResults",
                "Member must have value less than or equal to 100 and at least 1",
            )
        return number

    @staticmethod
    def _summary(loop: Loop) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "HumanLoopName": loop.name,
            "HumanLoopStatus": loop.status,
            "CreationTime": iso_millis(loop.created_at),
            "FlowDefinitionArn": loop.flow_definition_arn,
        }
        if loop.failure_reason:
            summary["FailureReason"] = loop.failure_reason
        return summary

    @staticmethod
    def _encode_token(flow_arn: str, sort: str, last: Loop) -> str:
        raw = json.dumps({"f": flow_arn, "s": sort, "k": [last.created_at, last.name]})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @staticmethod
    def _decode_token(token: str | None, flow_arn: str, sort: str) -> tuple[float, str] | None:
        if token is None:
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
            if data["f"] != flow_arn or data["s"] != sort:
                raise ValueError("token of another query")
            created_at, name = data["k"]
            return float(created_at), str(name)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ApiError(VALIDATION, "The NextToken is invalid for this request") from exc
