"""The A2I runtime emulator on the wire: REST-JSON over HTTP, as botocore's model defines it.

Routes (``sagemaker-a2i-runtime`` 2019-11-07)::

    POST   /human-loops                StartHumanLoop
    GET    /human-loops                ListHumanLoops
    POST   /human-loops/stop           StopHumanLoop
    GET    /human-loops/{name}         DescribeHumanLoop
    DELETE /human-loops/{name}         DeleteHumanLoop

Errors carry the ``x-amzn-ErrorType`` header and a ``{"Message": ...}`` body, which is how
botocore recognises modeled exceptions (``client.exceptions.ConflictException``, ...).

SageMaker's control plane for human review (``sagemaker`` 2017-07-24, JSON 1.1; ``control.py``:
task UIs, flow definitions, workteams, RenderUiTemplate) shares the port::

    POST   /   X-Amz-Target: SageMaker.<Operation>

Fault injection (``faults``) applies to the runtime API only, never to the control plane: the
faults model A2I's quotas and errors under load, and the router asks the control plane once, at
start-up (it would retry a throttled or failing check, ``aws/flows.py``, but a test of the
runtime's faults should not depend on that wait).

Sandbox-only routes, under ``/_sandbox``: ``health``, ``faults`` (GET, and PUT with the fields to
change, while running), ``stats`` (request counts by operation and outcome, loops by status).

Loops end on a timer: a scheduler wakes at each loop's planned transition, writes output.json to
S3 where the flow definition says, records the new status and sends the
"SageMaker A2I HumanLoop Status Change" event to EventBridge. A transition whose S3 write or event
fails (moto down) is retried; the event-pending flag is durable, so a restart resends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from stream_router.sandbox.a2i.api import HumanLoopApi, output_uri
from stream_router.sandbox.a2i.control import CONTENT_TYPE, ControlPlaneApi, Flow
from stream_router.sandbox.a2i.portal import WorkerPortal
from stream_router.sandbox.a2i.resources import ResourceStore
from stream_router.sandbox.a2i.reviewers import human_answers, iso_millis
from stream_router.sandbox.a2i.shapes import INTERNAL, THROTTLING, VALIDATION, ApiError
from stream_router.sandbox.a2i.store import Loop, LoopStore
from stream_router.sandbox.aws import client
from stream_router.sandbox.settings import Faults, SandboxSettings

logger = logging.getLogger(__name__)

DETAIL_TYPE = "SageMaker A2I HumanLoop Status Change"
RETRY_AFTER_S = 1.0
Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FaultInjector:
    """The emulator's faults; ``update`` replaces them while requests are served."""

    def __init__(self, faults: Faults, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.faults = faults
        self._buckets: dict[str, TokenBucket] = {}
        self._random = random.Random()

    def update(self, changes: dict[str, Any]) -> Faults:
        merged = {**self.faults.model_dump(), **changes}
        self.faults = Faults.model_validate(merged)
        self._buckets.clear()
        return self.faults

    async def before(self, operation: str) -> None:
        """Delay, throttle or fail a request as the faults say."""
        faults = self.faults
        if faults.extra_latency_s > 0:
            await asyncio.sleep(faults.extra_latency_s)
        if faults.quota_rps is not None:
            bucket = self._buckets.get(operation)
            if bucket is None:
                bucket = TokenBucket(faults.quota_rps, faults.quota_burst, self.clock)
                self._buckets[operation] = bucket
            if not bucket.take():
                raise ApiError(THROTTLING, f"Rate exceeded for {operation}")
        if faults.internal_error_rate and self._random.random() < faults.internal_error_rate:
            raise ApiError(INTERNAL, "An internal error occurred (injected by the sandbox)")


class AwsEffects:
    """Writes output.json to S3 and status events to EventBridge (boto3 in worker threads)."""

    def __init__(self, endpoint_url: str, settings: SandboxSettings) -> None:
        region = settings.aws.region
        self._s3 = client("s3", endpoint_url, region)
        self._events = client("events", endpoint_url, region)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="a2i-aws")
        self._lock = threading.Lock()
        #: Calls running in a worker thread now (a cancelled await does not stop its call).
        self.under_way = 0

    async def _call(self, call: Callable[[], Any]) -> Any:
        def counted() -> Any:
            with self._lock:
                self.under_way += 1
            try:
                return call()
            finally:
                with self._lock:
                    self.under_way -= 1

        return await asyncio.get_running_loop().run_in_executor(self._pool, counted)

    async def put_json(self, bucket: str, key: str, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        await self._call(
            lambda: self._s3.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json"
            ),
        )

    async def put_event(self, loop: Loop, region: str) -> None:
        detail = {
            "creationTime": iso_millis(loop.created_at),
            "failureCode": loop.failure_code,
            "failureReason": loop.failure_reason,
            "flowDefinitionArn": loop.flow_definition_arn,
            "humanLoopArn": loop.arn,
            "humanLoopName": loop.name,
            "humanLoopOutput": {"outputS3Uri": loop.output_s3_uri} if loop.output_s3_uri else None,
            "humanLoopStatus": loop.status,
        }
        entry = {
            "Source": "aws.sagemaker",
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(detail),
            "Resources": [loop.arn],
            "Time": datetime.now(UTC),
        }
        response = await self._call(lambda: self._events.put_events(Entries=[entry]))
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge rejected the event: {response['Entries']}")

    def presign(self, uri: str) -> str:
        """A GET URL of the sandbox's S3 for ``s3://bucket/key`` (``grant_read_access``)."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        url: str = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600
        )
        return url

    def close(self) -> int:
        """Stop taking calls; returns how many are still under way (their threads are not
        waited for)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        return self.under_way


class Emulator:
    """The HTTP app, the loop scheduler and the AWS side effects, on one event loop."""

    def __init__(
        self,
        settings: SandboxSettings,
        state_dir: Path,
        aws_endpoint_url: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = LoopStore(state_dir / "a2i.sqlite3")
        self.resources = ResourceStore(state_dir / "a2i.sqlite3")
        self.faults = FaultInjector(settings.faults, clock)
        self.effects = AwsEffects(aws_endpoint_url, settings)
        self.control = ControlPlaneApi(
            settings, self.resources, clock=clock, open_loops=self.store.count_active
        )
        self.api = HumanLoopApi(
            settings,
            self.store,
            clock=clock,
            schedule=self.schedule,
            flow=self.control.flow,
            max_active_loops=lambda: self.faults.faults.max_active_loops,
        )
        self.portal = WorkerPortal(
            self.store,
            self.control,
            clock=clock,
            schedule=self.schedule,
            presign=self.effects.presign,
        )
        self.requests: dict[str, Counter[str]] = defaultdict(Counter)
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- scheduling ----------------------------------------------------------------------------

    def schedule(self, due_at: float, name: str) -> None:
        heapq.heappush(self._heap, (due_at, name))
        self._wake.set()

    async def run_scheduler(self) -> None:
        now = self.clock()
        for due_at, name in self.store.scheduled():
            self.schedule(due_at, name)
        for loop in self.store.pending_events():
            self.schedule(now, loop.name)
        while True:
            self._wake.clear()
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                _, name = heapq.heappop(self._heap)
                if name not in self._busy:
                    self._busy.add(name)
                    task = asyncio.create_task(self._advance(name))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _advance(self, name: str) -> None:
        try:
            await self._transition(name)
        except Exception:
            logger.exception("transition of %s failed; retrying in %.0f s", name, RETRY_AFTER_S)
            self.schedule(self.clock() + RETRY_AFTER_S, name)
        finally:
            self._busy.discard(name)

    async def _transition(self, name: str) -> None:
        loop = self.store.get(name)
        if loop is None:
            return
        if loop.due_at is not None:
            if loop.due_at > self.clock():
                self.schedule(loop.due_at, name)
                return
            finished = await self._finish(loop)
            current = self.store.get(name)
            if current is None or current.status != loop.status:
                return  # changed while the output was written (stopped, deleted): its turn now
            self.store.put(finished)
            loop = finished
        if loop.event_pending:
            await self.effects.put_event(loop, self.settings.aws.region)
            current = self.store.get(name)
            if current is not None and current.status == loop.status:
                self.store.put(current.evolve(event_pending=False))

    async def _finish(self, loop: Loop) -> Loop:
        """The loop's terminal state; writes output.json first when workers answered."""
        flow = self.control.flow(loop.flow_definition_arn)
        if flow is None:  # DeleteFlowDefinition refuses while loops are open: should not happen
            return loop.evolve(
                status="Failed",
                failure_code="InternalError",
                failure_reason=f"The flow definition {loop.flow_definition_arn} no longer exists",
                due_at=None,
                event_pending=True,
            )
        if loop.status == "InProgress" and loop.plan.failure:
            return loop.evolve(
                status="Failed",
                failure_code="ValidationError",
                failure_reason=loop.plan.failure,
                due_at=None,
                event_pending=True,
            )
        if any(answer.pending for answer in loop.plan.answers):
            limit = flow.definition.task_time_limit_s
            return loop.evolve(
                status="Failed" if loop.status == "InProgress" else "Stopped",
                failure_code="Expired" if loop.status == "InProgress" else None,
                failure_reason=(
                    "The worker who accepted the task in the worker portal did not submit it "
                    f"within the task time limit of {limit:g} seconds"
                )
                if loop.status == "InProgress"
                else None,
                due_at=None,
                event_pending=True,
            )
        if loop.status == "InProgress" and loop.plan.expires:
            lifetime = flow.definition.task_availability_lifetime_s
            return loop.evolve(
                status="Failed",
                failure_code="Expired",
                failure_reason=(
                    "The human loop expired: no worker accepted the task within the task "
                    f"availability lifetime of {lifetime:g} seconds"
                ),
                due_at=None,
                event_pending=True,
            )
        status = "Completed" if loop.status == "InProgress" else "Stopped"
        uri = await self._write_output(flow, loop) if loop.plan.answers else None
        return loop.evolve(status=status, output_s3_uri=uri, due_at=None, event_pending=True)

    async def _write_output(self, flow: Flow, loop: Loop) -> str:
        uri = output_uri(self.settings, flow, loop)
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        document = {
            "flowDefinitionArn": loop.flow_definition_arn,
            "humanAnswers": human_answers(flow.definition, loop.plan, self.settings.aws.region),
            "humanLoopName": loop.name,
            "inputContent": json.loads(loop.input_content),
        }
        await self.effects.put_json(bucket, key, document)
        return uri

    # -- HTTP ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/human-loops", self._op("StartHumanLoop", self._start))
        app.router.add_get("/human-loops", self._op("ListHumanLoops", self._list))
        app.router.add_post("/human-loops/stop", self._op("StopHumanLoop", self._stop))
        app.router.add_get("/human-loops/{name}", self._op("DescribeHumanLoop", self._describe))
        app.router.add_delete("/human-loops/{name}", self._op("DeleteHumanLoop", self._delete))
        app.router.add_post("/", self._control_plane)
        self.portal.add_routes(app)
        app.router.add_get("/_sandbox/health", self._health)
        app.router.add_get("/_sandbox/faults", self._get_faults)
        app.router.add_put("/_sandbox/faults", self._put_faults)
        app.router.add_get("/_sandbox/stats", self._stats)
        return app

    def _op(
        self, operation: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            request_id = str(uuid.uuid4())
            try:
                await self.faults.before(operation)
                body = await handler(request)
            except ApiError as err:
                self.requests[operation][err.kind.code] += 1
                return web.json_response(
                    {"Message": err.message},
                    status=err.kind.status,
                    headers={"x-amzn-ErrorType": err.kind.code, "x-amzn-RequestId": request_id},
                )
            except Exception:
                logger.exception("%s failed", operation)
                self.requests[operation][INTERNAL.code] += 1
                return web.json_response(
                    {"Message": "An internal error occurred"},
                    status=INTERNAL.status,
                    headers={"x-amzn-ErrorType": INTERNAL.code, "x-amzn-RequestId": request_id},
                )
            self.requests[operation]["OK"] += 1
            return web.json_response(body, headers={"x-amzn-RequestId": request_id})

        return serve

    async def _control_plane(self, request: web.Request) -> web.Response:
        """SageMaker's JSON 1.1 protocol: the operation is in X-Amz-Target; no faults apply."""
        target = request.headers.get("X-Amz-Target")
        operation = self.control.operation(target)
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        try:
            body = self.control.call(target, await self._json_body(request), request.host)
        except ApiError as err:
            self.requests[operation][err.kind.code] += 1
            return web.json_response(
                {"__type": err.kind.code, "message": err.message},
                status=err.kind.status,
                headers=headers,
                content_type=CONTENT_TYPE,
            )
        self.requests[operation]["OK"] += 1
        return web.json_response(body, headers=headers, content_type=CONTENT_TYPE)

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except ValueError as exc:
            raise ApiError(VALIDATION, f"The request body is not valid JSON: {exc}") from exc

    async def _start(self, request: web.Request) -> dict[str, Any]:
        return self.api.start_human_loop(await self._json_body(request))

    async def _list(self, request: web.Request) -> dict[str, Any]:
        return self.api.list_human_loops(request.query)

    async def _stop(self, request: web.Request) -> dict[str, Any]:
        return self.api.stop_human_loop(await self._json_body(request))

    async def _describe(self, request: web.Request) -> dict[str, Any]:
        return self.api.describe_human_loop(request.match_info["name"])

    async def _delete(self, request: web.Request) -> dict[str, Any]:
        return self.api.delete_human_loop(request.match_info["name"])

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _get_faults(self, _: web.Request) -> web.Response:
        return web.json_response(self.faults.faults.model_dump())

    async def _put_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise TypeError("the body must be a JSON object")
            faults = self.faults.update(changes)
        except (ValueError, TypeError, ValidationError) as exc:
            return web.json_response({"Message": str(exc)}, status=400)
        logger.info("faults now %s", faults.model_dump())
        return web.json_response(faults.model_dump())

    async def _stats(self, _: web.Request) -> web.Response:
        loops = self.store.count_by_status()
        return web.json_response(
            {
                "requests": {op: dict(counts) for op, counts in self.requests.items()},
                "loops": loops,
                "active_loops": self.store.count_active(),
                "portal_submissions": self.portal.submitted,
                "aws_calls_under_way": self.effects.under_way,
            }
        )

    def close(self) -> int:
        """Stop; returns the AWS calls still under way (``AwsEffects.close``)."""
        for task in self._tasks:
            task.cancel()
        under_way = self.effects.close()
        self.resources.close()
        self.store.close()
        return under_way
