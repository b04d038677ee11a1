"""Amazon A2I as a :class:`~stream_router.review.backend.ReviewBackend`.

Usage::

    async with A2IReviewBackend(clients, flows=flow_uses(settings)) as a2i:  # or build(context)
        outcome = await a2i.start(name, flow_definition_arn, {"label": "cat"})
        state = await a2i.describe(name)
        if state and state.output_uri:
            result = await a2i.fetch_result(state)

A review's ``flow`` is the flow definition ARN; its ``name`` is the human loop name.
:meth:`A2IReviewBackend.open` (or ``async with``) first checks that every flow definition given
as ``flows`` exists and is Active (``aws/flows.py``: a ConfigError naming the setting
otherwise), then enters the ``sagemaker-a2i-runtime`` and ``s3`` clients once, shared by every
call. botocore retries 429 and 5xx itself (standard mode, ``AwsEndpoints.max_attempts``); what
is left after its retries maps to the review errors:

=================================  ===================================================
A2I error                          raised
=================================  ===================================================
ThrottlingException, 5xx           ``ReviewThrottled``
ServiceQuotaExceededException      ``ReviewCapacityExceeded``
ValidationException                ``ReviewRejected`` (with A2I's message)
ConflictException (start)          ``StartOutcome(already_started=True)`` or
                                   ``ReviewNameConflict`` (see :meth:`start`)
ResourceNotFoundException          ``None`` (describe), ignored (stop, delete)
anything else                      ``UpstreamError`` (retriable when 5xx or no answer)
=================================  ===================================================

Its completion signals (:meth:`A2IReviewBackend.signals`) are the SQS watchers of
``aws/watchers.py``: EventBridge's status events and S3's output notifications.

Log lines name loops and error codes, never the content shown to reviewers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from stream_router.aws.a2i_output import parse_output, split_s3_uri
from stream_router.aws.clients import AwsClients, clients_from
from stream_router.aws.flows import STARTUP_WAIT_S, FlowUse, check_flow_definitions, flow_uses
from stream_router.aws.settings import A2ISettings
from stream_router.aws.watchers import PollErrors, WatcherCounts, sqs_watchers
from stream_router.errors import (
    ConfigError,
    ReviewCapacityExceeded,
    ReviewNameConflict,
    ReviewRejected,
    ReviewThrottled,
    UpstreamError,
)
from stream_router.review.backend import (
    ReviewBackend,
    ReviewResult,
    ReviewState,
    ReviewStatus,
    Signal,
    SignalHooks,
    StartOutcome,
)

if TYPE_CHECKING:
    from stream_router.backends import BackendContext
    from stream_router.metrics import ReviewMetrics

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS = 3_145_728
CONTENT_CLASSIFIERS = frozenset({"FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent"})
_THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
_UNFINISHED = frozenset({ReviewStatus.IN_PROGRESS, ReviewStatus.STOPPING})


def build(context: BackendContext) -> A2IReviewBackend:
    """The A2I backend of ``context.settings`` (``review.backend: a2i``): its flows, content
    classifiers, AWS clients and watchers. An enabled watcher without its queue is a
    ConfigError naming the setting."""
    settings = context.settings
    section = context.section(A2ISettings)
    active = settings.watchers.active(section.name)
    if "eventbridge" in active and not section.event_queue_url:
        raise ConfigError("review.backend.event_queue_url: the eventbridge watcher needs it")
    if "s3-output" in active and not section.output_queue_url:
        raise ConfigError("review.backend.output_queue_url: the s3-output watcher needs it")
    return A2IReviewBackend(
        clients_from(settings.aws),
        content_classifiers=section.content_classifiers,
        flows=flow_uses(settings),
        watchers=section,
        active=active,
        metrics=context.metrics,
        clock=context.clock,
    )


class A2IReviewBackend(ReviewBackend):
    """Human reviews as A2I human loops (custom task type), answers read from S3.

    ``watchers`` and ``metrics``: its section, whose queues its SQS watchers poll, and what
    they count (:meth:`signals`; ``active``: the signals ``watchers.enabled`` allows); without
    ``watchers`` it has none (the reconciler alone).
    """

    max_input_chars = MAX_INPUT_CHARS  #: A2I's limit on InputContent
    start_settle_s = 0.0  #: StartHumanLoop of an existing name is refused (ConflictException)

    def __init__(
        self,
        clients: AwsClients,
        *,
        content_classifiers: Sequence[str] = (),
        page_size: int = 100,
        flows: Sequence[FlowUse] = (),
        startup_wait_s: float = STARTUP_WAIT_S,
        watchers: A2ISettings | None = None,
        active: Collection[str] = ("eventbridge", "s3-output"),
        metrics: ReviewMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = sorted(set(content_classifiers) - CONTENT_CLASSIFIERS)
        if unknown:
            raise ConfigError(
                f"unknown A2I content classifiers {unknown}; expected {sorted(CONTENT_CLASSIFIERS)}"
            )
        if not 1 <= page_size <= 100:
            raise ConfigError(f"page_size {page_size} is outside ListHumanLoops' range 1-100")
        self._clients = clients
        self._classifiers = list(content_classifiers)
        self._page_size = page_size
        self._flows = tuple(flows)
        self._startup_wait_s = startup_wait_s
        self._watchers = watchers
        self._active = tuple(active)
        self._metrics = metrics
        self._clock = clock
        self._stack: AsyncExitStack | None = None
        self._a2i: Any = None
        self._s3: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Check the flow definitions, then create the A2I and S3 clients (once; :meth:`aclose`
        releases them). A flow that is missing or not Active raises ConfigError naming it."""
        if self._stack is not None:
            return
        if self._flows:
            async with self._clients.client("sagemaker") as sagemaker:
                await check_flow_definitions(sagemaker, self._flows, wait_s=self._startup_wait_s)
        stack = AsyncExitStack()
        try:
            self._a2i = await stack.enter_async_context(
                self._clients.client("sagemaker-a2i-runtime")
            )
            self._s3 = await stack.enter_async_context(self._clients.client("s3"))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        self._a2i = self._s3 = None
        if stack is not None:
            await stack.aclose()

    def signals(self, hooks: SignalHooks) -> list[Signal]:
        """The SQS watchers ``watchers.enabled`` allows (each with its queue). A poll counts as
        progress only when SQS and forwarding both worked (``ReviewMetrics.watcher_polled``)."""
        if self._watchers is None:
            return []
        metrics, clock = self._metrics, self._clock

        def on_poll(kind: str) -> Callable[[WatcherCounts], None]:
            new_errors = PollErrors()

            def polled(counts: WatcherCounts) -> None:
                errors = new_errors(counts)
                clean = not errors["sqs"] and not errors["forward"]
                if metrics is not None:
                    clean = metrics.watcher_polled(kind, errors, clock())
                if clean:
                    hooks.beat(kind)

            return polled

        return list(sqs_watchers(self._watchers, self._active, self._clients, hooks.emit, on_poll))

    def _runtime(self) -> Any:
        if self._a2i is None:
            raise RuntimeError("A2IReviewBackend is not open: call open() or use 'async with'")
        return self._a2i

    # -- ReviewBackend ---------------------------------------------------------------------------

    async def start(
        self,
        name: str,
        flow: str,
        content: Mapping[str, Any],
        *,
        fresh: bool = False,
        not_before_s: float | None = None,
    ) -> StartOutcome:
        """StartHumanLoop ``name`` on flow definition ARN ``flow`` with ``content`` as input.

        Content that is not JSON-serializable raises ``ReviewRejected`` without calling A2I;
        longer content than ``max_input_chars`` is the starter's to refuse (A2I rejects it
        with a ValidationException).

        On ConflictException (the name is taken) the existing loop is described: if it runs on
        the same flow definition, this is taken to be a redelivered request and the outcome says
        ``already_started=True``. A2I does not return a loop's input, so whether the existing
        loop shows the same content cannot be checked; names derived from the event id and
        policy version make a different input under the same name unlikely. A loop of another
        flow definition raises ``ReviewNameConflict``. Note that A2I (and the emulator) may
        answer an identical re-send with 200: that outcome says ``already_started=False``.
        """
        runtime = self._runtime()
        try:
            text = orjson.dumps(content, default=_mapping_as_dict).decode()
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise ReviewRejected(f"content of review {name} is not JSON: {exc}") from exc
        request: dict[str, Any] = {
            "HumanLoopName": name,
            "FlowDefinitionArn": flow,
            "HumanLoopInput": {"InputContent": text},
        }
        if self._classifiers:
            request["DataAttributes"] = {"ContentClassifiers": self._classifiers}
        try:
            response = await runtime.start_human_loop(**request)
        except ClientError as exc:
            if _code(exc) != "ConflictException":
                _raise_translated(exc, f"StartHumanLoop {name}")
            return await self._resolve_conflict(name, flow, exc)
        except BotoCoreError as exc:
            _raise_unreachable(exc, f"StartHumanLoop {name}")
        logger.debug("started human loop %s", name)
        return StartOutcome(name=name, backend_id=response["HumanLoopArn"], already_started=False)

    async def _resolve_conflict(self, name: str, flow: str, conflict: ClientError) -> StartOutcome:
        existing = await self._describe_raw(name)
        if existing is None:
            raise UpstreamError(
                f"human loop {name} conflicted but no longer exists (deleted meanwhile); "
                "retry the start"
            ) from conflict
        if existing.get("FlowDefinitionArn") != flow:
            raise ReviewNameConflict(
                f"human loop name {name} belongs to a loop of flow definition "
                f"{existing.get('FlowDefinitionArn')}, not {flow}"
            ) from conflict
        logger.info("human loop %s already exists on the same flow: not started again", name)
        return StartOutcome(name=name, backend_id=existing["HumanLoopArn"], already_started=True)

    async def describe(self, name: str) -> ReviewState | None:
        """DescribeHumanLoop; None when A2I does not know the name (never started, deleted)."""
        response = await self._describe_raw(name)
        if response is None:
            return None
        output = response.get("HumanLoopOutput") or {}
        created = response.get("CreationTime")
        return ReviewState(
            name=response["HumanLoopName"],
            status=_status(response["HumanLoopStatus"], name),
            flow=response["FlowDefinitionArn"],
            created_at_s=created.timestamp() if isinstance(created, datetime) else None,
            failure_code=response.get("FailureCode"),
            failure_reason=response.get("FailureReason"),
            output_uri=output.get("OutputS3Uri"),
        )

    async def _describe_raw(self, name: str) -> dict[str, Any] | None:
        runtime = self._runtime()
        try:
            response: dict[str, Any] = await runtime.describe_human_loop(HumanLoopName=name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            _raise_translated(exc, f"DescribeHumanLoop {name}")
        except BotoCoreError as exc:
            _raise_unreachable(exc, f"DescribeHumanLoop {name}")
        return response

    async def stop(self, name: str) -> None:
        """StopHumanLoop; an unknown loop or one already finished is not an error."""
        runtime = self._runtime()
        try:
            await runtime.stop_human_loop(HumanLoopName=name)
        except ClientError as exc:
            code = _code(exc)
            if code == "ResourceNotFoundException":
                logger.info("stop: human loop %s does not exist; nothing to stop", name)
                return
            if code == "ValidationException":
                # A2I answers 400 for a loop that ended (or is stopping); a bad name is a 400
                # as well: ask which it is.
                state = await self.describe(name)
                if state is None or state.status is not ReviewStatus.IN_PROGRESS:
                    logger.info("stop: human loop %s is already ending or ended", name)
                    return
            _raise_translated(exc, f"StopHumanLoop {name}")
        except BotoCoreError as exc:
            _raise_unreachable(exc, f"StopHumanLoop {name}")
        logger.debug("stop requested for human loop %s", name)

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        """Read and parse the review's output.json from ``state.output_uri``.

        A missing, unreadable or malformed output raises ``ReviewRejected`` with the reason.
        """
        if self._s3 is None:
            raise RuntimeError("A2IReviewBackend is not open: call open() or use 'async with'")
        if not state.output_uri:
            raise ReviewRejected(f"review {state.name} ({state.status}) has no output_uri")
        bucket, key = split_s3_uri(state.output_uri, state.name)
        try:
            response = await self._s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                raw: bytes = await body.read()
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "NoSuchBucket", "404"}:
                raise ReviewRejected(
                    f"output of review {state.name} does not exist at {state.output_uri}"
                ) from exc
            _raise_translated(exc, f"GetObject {state.output_uri}")
        except BotoCoreError as exc:
            _raise_unreachable(exc, f"GetObject {state.output_uri}")
        return parse_output(raw, state)

    async def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        """Loops of ``flow`` (created at or after ``since_s``) that are InProgress or Stopping.

        Oldest first, one ListHumanLoops page (``page_size``) at a time. Summaries carry no
        output URI or failure code; describe a loop for those.
        """
        runtime = self._runtime()
        request: dict[str, Any] = {
            "FlowDefinitionArn": flow,
            "SortOrder": "Ascending",
            "MaxResults": self._page_size,
        }
        if since_s is not None:
            request["CreationTimeAfter"] = datetime.fromtimestamp(since_s, UTC)
        while True:
            try:
                page = await runtime.list_human_loops(**request)
            except ClientError as exc:
                _raise_translated(exc, f"ListHumanLoops {flow}")
            except BotoCoreError as exc:
                _raise_unreachable(exc, f"ListHumanLoops {flow}")
            for summary in page.get("HumanLoopSummaries", []):
                name = summary["HumanLoopName"]
                try:
                    status = ReviewStatus(summary["HumanLoopStatus"])
                except ValueError:
                    logger.warning("pending: loop %s has an unknown status; skipped", name)
                    continue
                if status not in _UNFINISHED:
                    continue
                created = summary.get("CreationTime")
                yield ReviewState(
                    name=name,
                    status=status,
                    flow=summary.get("FlowDefinitionArn", flow),
                    created_at_s=created.timestamp() if isinstance(created, datetime) else None,
                    failure_reason=summary.get("FailureReason"),
                )
            token = page.get("NextToken")
            if not token:
                return
            request["NextToken"] = token

    async def delete(self, name: str) -> None:
        """DeleteHumanLoop (finished loops only; an unknown name is not an error)."""
        runtime = self._runtime()
        try:
            await runtime.delete_human_loop(HumanLoopName=name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                logger.info("delete: human loop %s does not exist", name)
                return
            _raise_translated(exc, f"DeleteHumanLoop {name}")
        except BotoCoreError as exc:
            _raise_unreachable(exc, f"DeleteHumanLoop {name}")


# -- errors ------------------------------------------------------------------------------------


def _mapping_as_dict(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _status(value: str, name: str) -> ReviewStatus:
    try:
        return ReviewStatus(value)
    except ValueError as exc:
        raise UpstreamError(
            f"human loop {name} has status {value!r}, unknown to stream_router", retriable=False
        ) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _raise_translated(exc: ClientError, what: str) -> NoReturn:
    code = _code(exc)
    message = exc.response.get("Error", {}).get("Message", "")
    http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    detail = f"{what}: {code} ({message})"
    if code in _THROTTLED:
        raise ReviewThrottled(detail) from exc
    if code == "InternalServerException" or http_status >= 500:
        raise ReviewThrottled(detail, maybe_started=True) from exc
    if code == "ServiceQuotaExceededException":
        raise ReviewCapacityExceeded(detail) from exc
    if code in {"ValidationException", "ResourceNotFoundException"}:
        raise ReviewRejected(detail) from exc
    if code == "ConflictException":
        raise ReviewNameConflict(detail) from exc
    raise UpstreamError(detail, retriable=False) from exc


def _raise_unreachable(exc: BotoCoreError, what: str) -> NoReturn:
    if isinstance(exc, ParamValidationError):  # botocore refused the request before sending it
        raise ReviewRejected(f"{what}: {exc}") from exc
    raise UpstreamError(f"{what}: no answer from AWS ({type(exc).__name__}: {exc})") from exc
