"""Label Studio as a :class:`~stream_router.review.backend.ReviewBackend`.

Usage::

    async with LabelStudioReviewBackend(settings.review.backend) as ls:  # or build(context)
        outcome = await ls.start(name, "general", content)   # a task in general's project
        state = await ls.describe(name)
        if state and state.output_uri:
            result = await ls.fetch_result(state)

A review is one task (``labelstudio/tasks.py``) in the project of its flow
(``review.backend.projects``); its ``name`` and its tag are stored in the task's data. How
A2I's ideas map here:

- **start** is idempotent per name: Label Studio's import is not, so a start first looks for
  a task of that name in the project and, when there is one (a redelivered request, a crash
  after the import), answers ``already_started=True`` without importing again.
- **only the router's tasks** are reviews (``labelstudio/ownership.py``): any member can import
  a task under a (predictable) review name, so each task the router imports carries its tag, an
  HMAC of flow and name, and a look-up takes a task only when the tag verifies. Others under a
  review's name are left alone, neither taken nor deleted, logged and counted (``foreign``).
  The key is ``task_tag_key``, else derived from ``api_token``; never ``webhook.secret``, which
  Label Studio shows to the organization's members with every webhook's headers.
- **answers are untrusted**: members can store any JSON in a task, so every task is read by
  ``labelstudio/stored.py``, and one that does not read (a list for an object, a label outside
  the element's choices, a name or tag changed under the router, a task Label Studio itself
  fails on) ends its review as A2I's unreadable output.json does: describe answers Completed
  with the task as output, and :meth:`fetch_result` raises ``MalformedTask`` (a
  ``ReviewRejected``), which the scheduler dead-letters as ``OutputUnreadable``. A listing
  leaves such a task out, logged and counted (``malformed``), and goes on. Names are looked up
  with ``client.names_query`` (a ``contains`` filter no task's data can make Label Studio
  refuse) and the exact name kept.
- **one task per name** (:meth:`LabelStudioReviewBackend._one_task`): Label Studio has no unique
  key a task could carry, and it may apply an import long after the client gave up on it (seen
  here: an import of a process killed mid-call landed 11 s later, behind SQLite's write lock;
  one sent while Label Studio was stalled, by a process killed meanwhile, 9 s later, and its
  task was labelled before anyone looked). So a start that may repeat an import with no answer
  waits ``import_settle_s`` (this backend's ``start_settle_s``; the scheduler keeps it, rule 3),
  and its look-up then finds the task. Should an import land later still, a look-then-import
  leaves two tasks of one name. The tagged task with the lowest
  id (the first one Label Studio stored) is the review; whoever sees another tagged one of that
  name deletes it (both are the router's, or the other is a copy made later): the start right
  after its import, every describe that looks the name up, and the reconciler's listing of
  open tasks. ``removed`` is told of each one (a metric). Imports
  of one process are sent one at a time, which keeps Label Studio's write lock, and so such
  late imports, rare.
- **starts go in batches** (:meth:`LabelStudioReviewBackend._start_batches`): Label Studio
  answers a call in about 0.1 s here whether it looks up or imports one task or fifty, and
  parallel imports contend for SQLite's write lock (five at once timed out), so a start costs
  up to three calls (look up, import, look again) that starts of one flow share: those
  arriving while a batch is in flight go together in the next one (at most ``_BATCH_TASKS``
  tasks and ``_BATCH_CHARS`` characters). A batch Label Studio rejects is split into single
  starts, so a bad review fails alone.
- **a start costs the same in a project of any size** (:meth:`LabelStudioReviewBackend.
  _after_ids`). A look-up by name is a scan of the project's tasks (their data is JSON; Label
  Studio has no index on it), so a start looks up only what may exist, and only where:

  - a *fresh* start (``ReviewBackend.start``: the ledger shows no start of the name was sent
    before) is imported without a look-up before or after: no task of its name can exist, so
    neither a first one to answer nor an earlier one to keep. This rests on the scheduler's
    ``fresh`` alone (``review/scheduler.py``, rule 3).
  - any other start reads only the tasks with ids above a bound (``client.names_after_query``:
    Label Studio's primary key, then the names). Every start of the name was sent after
    ``not_before_s``, the request's recording, on the clock of the instance that recorded it.
    This backend keeps *anchors* (``labelstudio/anchors.py``): a task id it saw, with its own
    clock read after the answer that showed it; every id up to it was handed out before that
    time (ids only grow, never come back). The bound is the greatest id anchored at or before
    ``not_before_s - clock_skew_s``: anchored before the recording, whatever the two clocks
    say, as long as they differ by at most ``clock_skew_s``; so every start of the name was
    sent after the bound's id was handed out, and each of its tasks, landing when it may (an
    import applied after ``import_settle_s`` too: Label Studio gives it its id as it applies
    it), has a greater id. Label Studio's clock (``created_at``) never enters. Anchors come
    from :meth:`open` (each project's greatest id), every import's answer and every look-up.
    A start with no anchor that old (a request recorded before this process opened, read from
    the ledger after a restart or a rebalance) reads every task, as does a describe of a name
    this process does not know. ``tests/unit/test_labelstudio_starts.py`` fails if the bound
    reaches too far (an anchor stamped before its answer, no allowance for skew).
- **status** is derived from the task: ``Completed`` once ``annotations_per_task`` annotators
  gave an annotation that was not skipped (one per annotator: ``StoredTask.counted``);
  ``Failed`` with code ``Expired`` once it was closed; else ``InProgress``. Label Studio has
  no task lifetime, so the backend enforces ``deadline_s`` itself: asked about a task short of
  annotations past its deadline (the reconciler asks about every overdue or unlisted review),
  it *closes* it, recording ``closed_s`` in the task's meta, and the review fails. A closed
  task stays closed: annotations arriving later are not used. Label Studio Community cannot
  lock a task, so a person may still open a closed one; the labeling view shows nothing of the
  close.
- **output** is the task itself: ``output_uri`` is its API URL, and :meth:`fetch_result` reads
  the answers of the first ``annotations_per_task`` annotators (later ones are left out, as A2I
  has exactly its task count of workers; a task short of them is rejected). A choices answer
  must be one of the element's choices in the project's labeling configuration, read at
  :meth:`open` (for the review form: the route's labels); any other is malformed.
- **pending** lists the flow's tasks still short of annotations and not closed or overdue.
- **its completion signal** is the webhook (``labelstudio/webhook.py``; :meth:`signals`): bound
  before the backend opens, registered in every flow's project by :meth:`open`
  (``webhook.register_on_start``).

Names are looked up by a Data Manager filter on ``data.review_name`` (a scan of the project's
tasks in Label Studio's database, or of those above an id; up to ``_LOOKUP_NAMES`` names per
call); the project and task
of every name this process started or found (tagged) are kept, so describes after a start cost
one call. A describe that finds a review complete keeps the task it read for the
:meth:`fetch_result` that follows (one call less per review).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from stream_router.errors import ConfigError, ReviewRejected, UpstreamError
from stream_router.labelstudio.anchors import IdAnchors
from stream_router.labelstudio.client import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioFailed,
    LabelStudioNotFound,
    names_after_query,
    names_query,
)
from stream_router.labelstudio.ownership import FOREIGN, MALFORMED, Ownership
from stream_router.labelstudio.settings import LabelStudioSettings
from stream_router.labelstudio.stored import (
    META_KEY,
    Form,
    MalformedTask,
    StoredTask,
    read_form,
)
from stream_router.labelstudio.tasks import NAME_FIELD, tag_key, task, task_tag
from stream_router.labelstudio.webhook import WebhookReceiver
from stream_router.review.backend import (
    ReviewBackend,
    ReviewResult,
    ReviewState,
    ReviewStatus,
    Signal,
    SignalHooks,
    StartOutcome,
)
from stream_router.review.events import EventSource

if TYPE_CHECKING:
    from stream_router.backends import BackendContext

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS = 10 * 1024 * 1024  #: the longest review input (JSON characters) sent
EXPIRED = "Expired"
_KNOWN_NAMES = 100_000  #: names whose task is remembered (least recently used dropped)
_BATCH_TASKS = 100  #: the most tasks one import sends
_BATCH_CHARS = 4 * 1024 * 1024  #: the most JSON characters of content one import sends
_LOOKUP_NAMES = 20  #: names per lookup (the query is in the URL)
_COMPLETED_KEPT = 1_000  #: tasks kept from a describe for the fetch that follows

__all__ = ["EXPIRED", "FOREIGN", "MALFORMED", "META_KEY", "LabelStudioReviewBackend"]


@dataclass(frozen=True)
class _Flow:
    name: str
    project_id: int
    required: int
    deadline_s: float
    form: Form | None  #: the project's answerable elements; None: Label Studio gave none


@dataclass
class _Start:
    """One start waiting for its batch."""

    name: str
    content: Mapping[str, Any]
    chars: int
    done: asyncio.Future[StartOutcome]
    fresh: bool  #: ``ReviewBackend.start``'s: no earlier start of the name was sent
    not_before_s: float | None  #: ``ReviewBackend.start``'s: none was sent before then


def build(context: BackendContext) -> LabelStudioReviewBackend:
    """The Label Studio backend of ``context.settings`` (``review.backend: label-studio``)."""
    settings = context.settings
    mapping = settings.ingest.mapping
    metrics = context.metrics
    return LabelStudioReviewBackend(
        context.section(LabelStudioSettings),
        clock=context.clock,
        removed=metrics.duplicates_removed.inc,
        ignored=lambda reason: metrics.tasks_ignored.labels(reason).inc(),
        webhook_posts=lambda result: metrics.webhook_posts.labels(result).inc(),
        prediction_fields=[p for p in (mapping.label, mapping.confidence, mapping.scores) if p],
        webhook="webhook" in settings.watchers.active("label-studio"),
    )


class LabelStudioReviewBackend(ReviewBackend):
    """Human reviews as Label Studio tasks; see the module docstring.

    ``removed()`` is called for each duplicate task deleted, ``ignored(reason)`` once for each
    task left alone (``foreign`` or ``malformed``), ``webhook_posts(result)`` once per webhook
    post; all three are metric hooks.
    """

    max_input_chars = MAX_INPUT_CHARS

    def __init__(
        self,
        settings: LabelStudioSettings,
        *,
        clock: Callable[[], float] = time.time,
        removed: Callable[[], None] = lambda: None,
        ignored: Callable[[str], None] = lambda reason: None,
        webhook_posts: Callable[[str], None] = lambda result: None,
        prediction_fields: Collection[str] = (),
        webhook: bool = True,
    ) -> None:
        """``prediction_fields``: the event's paths of the model's label, confidence and
        scores (``ingest.mapping``), which tasks show in their model line, not in the table.
        ``webhook``: whether its webhook may be a signal (``watchers.enabled``; it is one when
        ``webhook.enabled`` too)."""
        if settings.api_token is None:
            raise ConfigError("review.backend.api_token: the Label Studio backend needs it")
        self.settings = settings
        self.start_settle_s = settings.import_settle_s
        self.anchors = IdAnchors()
        self._tag_key = tag_key((settings.task_tag_key or settings.api_token).get_secret_value())
        self.ownership = Ownership(self._tag_key, ignored)
        self.client = LabelStudioClient(
            settings.url,
            settings.api_token.get_secret_value(),
            timeout_s=settings.request_timeout_s,
            unserved=self.ownership.unserved,
        )
        self.clock = clock
        self.removed = removed
        self.webhook_posts = webhook_posts
        self.webhook_wanted = webhook and settings.webhook.enabled
        self.webhook: WebhookReceiver | None = None
        self.prediction_fields = frozenset(prediction_fields)
        self._importing = asyncio.Lock()
        self._flows: dict[str, _Flow] = {}
        self._known: OrderedDict[str, tuple[_Flow, int]] = OrderedDict()
        self._completed: OrderedDict[str, tuple[int, StoredTask | MalformedTask]] = OrderedDict()
        self._queued: dict[str, list[_Start]] = {}
        self._batches: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and find every configured flow's project (ConfigError names a bad one);
        register the webhook in each project, if it is a signal and ``register_on_start``."""
        await self.client.open()
        try:
            await self._resolve_projects()
            for flow in self._flows.values():
                await self._anchor(flow)
            if self.webhook is not None and self.settings.webhook.register_on_start:
                await self.webhook.register(self.client, list(self.project_ids().values()))
        except LabelStudioAuthError as exc:
            await self.client.aclose()
            raise ConfigError(
                f"review.backend.api_token: Label Studio at {self.settings.url} refused it ({exc})"
            ) from exc
        except BaseException:
            await self.client.aclose()
            raise

    def signals(self, hooks: SignalHooks) -> list[Signal]:
        """The webhook endpoint, unless ``webhook.enabled`` or ``watchers.enabled`` leave it
        out: a post makes it ask about the review at once (``hooks.check``)."""
        if not self.webhook_wanted:
            return []
        if self.webhook is None:

            async def check(name: str) -> None:
                await hooks.check(name, EventSource.WEBHOOK)

            self.webhook = WebhookReceiver(self.settings.webhook, check, counted=self.webhook_posts)
        return [self.webhook]

    async def aclose(self) -> None:
        batches = list(self._batches.values())
        for batch in batches:
            batch.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        self._batches.clear()
        closed = RuntimeError("LabelStudioReviewBackend closed before the start was sent")
        for queue in self._queued.values():
            for waiting in queue:
                _settle(waiting, closed)
            queue.clear()
        await self.client.aclose()

    async def _resolve_projects(self) -> None:
        wanted = self.settings.projects
        if not wanted:
            raise ConfigError("review.backend.projects: no flow is configured")
        by_title: dict[str, list[dict[str, Any]]] = {}
        for project in await self.client.projects():
            by_title.setdefault(str(project.get("title")), []).append(project)
        flows: dict[str, _Flow] = {}
        for flow, ref in wanted.items():
            where = f"review.backend.projects.{flow}.project"
            if isinstance(ref.project, int):
                try:
                    project = await self.client.project(ref.project)
                except LabelStudioNotFound as exc:
                    raise ConfigError(
                        f"{where}: no Label Studio project has id {ref.project}"
                    ) from exc
            else:
                found = by_title.get(ref.project, [])
                if len(found) != 1:
                    how = "no" if not found else f"{len(found)}"
                    raise ConfigError(
                        f"{where}: {how} Label Studio projects are titled {ref.project!r}; "
                        "name exactly one by title, or give its id"
                    )
                project = found[0]
            project_id = project.get("id")
            if not isinstance(project_id, int) or isinstance(project_id, bool):
                raise ConfigError(f"{where}: Label Studio answered a project without an id")
            overlap = project.get("maximum_annotations")
            overlap = overlap if isinstance(overlap, int) and overlap > 0 else 1
            if overlap < ref.annotations_per_task:
                raise ConfigError(
                    f"review.backend.projects.{flow}.annotations_per_task is "
                    f"{ref.annotations_per_task}, but project {project_id} hands a task to at "
                    f"most {overlap} annotator(s) (its maximum_annotations)"
                )
            form = read_form(project.get("parsed_label_config"))
            if form is None:
                logger.warning(
                    "project %s (flow %s): Label Studio describes no labeling configuration; "
                    "answers are read for their shape only, not checked against its choices",
                    project_id, flow,
                )  # fmt: skip
            flows[flow] = _Flow(flow, project_id, ref.annotations_per_task, ref.deadline_s, form)
        self._flows = flows
        logger.info(
            "Label Studio at %s: flows %s",
            self.settings.url,
            {flow: f.project_id for flow, f in flows.items()},
        )

    async def _anchor(self, flow: _Flow) -> None:
        """An anchor of the greatest task id in ``flow``'s project now (none if the project is
        empty, or Label Studio fails on its newest task: a member can store data it then fails
        to list; look-ups read all tasks until an import gives one)."""
        try:
            highest = await self.client.highest_task_id(flow.project_id)
        except LabelStudioFailed as exc:
            logger.warning("project %s: no task id to bound look-ups by yet (%s)",
                           flow.project_id, exc)  # fmt: skip
            return
        if highest is not None:
            self.anchors.saw(self.clock(), highest)

    def project_ids(self) -> dict[str, int]:
        """Each flow's project id (after :meth:`open`)."""
        return {flow: f.project_id for flow, f in self._flows.items()}

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
        """A task for review ``name`` in ``flow``'s project, unless one exists (see the module
        doc). Content that is not JSON is rejected; longer content than ``max_input_chars`` is
        the starter's to refuse."""
        target = self._flow(flow)
        try:
            size = len(orjson.dumps(content, default=_mapping_as_dict))
        except TypeError as exc:
            raise ReviewRejected(f"content of review {name} is not JSON: {exc}") from exc
        done = asyncio.get_running_loop().create_future()
        waiting = _Start(name, content, size, done, fresh, not_before_s)
        self._queued.setdefault(target.name, []).append(waiting)
        batches = self._batches.get(target.name)
        if batches is None or batches.done():
            self._batches[target.name] = asyncio.create_task(
                self._start_batches(target), name=f"label-studio-starts-{target.name}"
            )
        return await waiting.done

    async def describe(self, name: str) -> ReviewState | None:
        """The review's state (closing an overdue task, see the module doc); None if no task
        of any configured flow is the review's. A task that cannot be read ends the review:
        Completed, its output unreadable (see the module doc)."""
        located = await self._locate(name)
        if located is None:
            return None
        flow, task_id = located
        try:
            read = await self._read_at(flow, name, task_id)
        except LabelStudioNotFound:
            self._known.pop(name, None)  # deleted in Label Studio meanwhile
            return None
        if isinstance(read, MalformedTask):
            logger.warning("review %s ends, its task unreadable: %s", name, read)
            self._keep(name, task_id, read)
            return ReviewState(
                name,
                ReviewStatus.COMPLETED,
                flow.name,
                output_uri=self._task_url(task_id),
                failure_reason=str(read),
            )
        state = await self._state(flow, read)
        if state.status is ReviewStatus.COMPLETED:
            self._keep(name, task_id, read)
        return state

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        """The answers of the first ``annotations_per_task`` annotators of the task at
        ``state.output_uri``; ``ReviewRejected`` (``MalformedTask``) if the task cannot be read,
        is no longer the review's, or is short of annotations."""
        if not state.output_uri:
            raise ReviewRejected(f"review {state.name} ({state.status}) has no output_uri")
        task_id = _task_id(state.output_uri, state.name)
        flow = self._flow(state.flow)
        kept = self._completed.pop(state.name, None)
        if kept is not None and kept[0] == task_id:
            read = kept[1]
        else:
            try:
                read = await self._read_at(flow, state.name, task_id)
            except LabelStudioNotFound as exc:
                raise ReviewRejected(
                    f"task {task_id} of review {state.name} no longer exists in Label Studio"
                ) from exc
        if isinstance(read, MalformedTask):
            raise MalformedTask(read.task_id, read.where, read.problem) from read
        counted = read.counted()[: flow.required]
        if len(counted) < flow.required:
            raise ReviewRejected(
                f"task {task_id} of review {state.name} has annotations of {len(counted)} of "
                f"the {flow.required} annotator(s) it needs (removed since it completed?)"
            )
        return ReviewResult(
            name=state.name,
            flow=state.flow,
            answers=tuple(annotation.answer() for annotation in counted),
            input_content=read.content,
        )

    async def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        """Tasks of ``flow`` (created at or after ``since_s``) still short of annotations, and
        neither closed nor past their deadline (the reconciler then describes them). Tasks that
        are no review's, not the router's or unreadable are left out (see the module doc)."""
        target = self._flow(flow)
        now = self.clock()
        query = orjson.dumps(
            {
                "filters": {
                    "conjunction": "and",
                    "items": [
                        {
                            "filter": "filter:tasks:total_annotations",
                            "operator": "less",
                            "type": "Number",
                            "value": target.required,
                        }
                    ],
                }
            }
        ).decode()
        seen: dict[str, int] = {}
        duplicated: set[str] = set()
        async for raw in self.client.tasks(
            target.project_id, query=query, page_size=self.settings.page_size
        ):
            found = self.ownership.listed(raw, target.name, target.project_id, target.form)
            if found is None or found.closed_s is not None:
                continue
            name, created = found.name, found.created_s
            known = self._known.get(name)
            if name in seen or (known is not None and known[1] != found.task_id):
                duplicated.add(name)
                continue
            seen[name] = found.task_id
            if since_s is not None and created is not None and created < since_s:
                continue
            if created is not None and now >= created + target.deadline_s:
                continue
            self._remember(name, target, found.task_id)
            yield ReviewState(name, ReviewStatus.IN_PROGRESS, flow, created_at_s=created)
        if duplicated:  # keeps the first task of each name, deletes the others
            await self._find_many(target, sorted(duplicated))

    # -- internals -------------------------------------------------------------------------------

    def _flow(self, flow: str) -> _Flow:
        if not self._flows:
            raise RuntimeError("LabelStudioReviewBackend is not open: call open() first")
        try:
            return self._flows[flow]
        except KeyError:
            raise ReviewRejected(
                f"flow {flow!r} is not in review.backend.projects ({sorted(self._flows)})"
            ) from None

    def _remember(self, name: str, flow: _Flow, task_id: int) -> None:
        self._known[name] = (flow, task_id)
        self._known.move_to_end(name)
        while len(self._known) > _KNOWN_NAMES:
            self._known.popitem(last=False)

    def _keep(self, name: str, task_id: int, read: StoredTask | MalformedTask) -> None:
        """Keep what a describe read of a task for the :meth:`fetch_result` that follows."""
        self._completed[name] = (task_id, read)
        while len(self._completed) > _COMPLETED_KEPT:
            self._completed.popitem(last=False)

    def _task_url(self, task_id: int) -> str:
        return f"{self.settings.url.rstrip('/')}/api/tasks/{task_id}"

    async def _read_at(self, flow: _Flow, name: str, task_id: int) -> StoredTask | MalformedTask:
        """Task ``task_id`` read as review ``name``'s, or what makes it unreadable as such."""
        try:
            raw = await self._fetch(flow, name, task_id)
            return self.ownership.review(raw, flow.name, flow.form, name)
        except MalformedTask as exc:
            return exc

    async def _fetch(self, flow: _Flow, name: str, task_id: int) -> object:
        """Task ``task_id`` of review ``name`` as Label Studio answers it. When Label Studio
        fails on it (5xx), the task is looked for under the name in a listing: a member can
        store task data Label Studio itself then fails on, and such a task no longer holds the
        name either (``MalformedTask``); a failing Label Studio fails the listing too."""
        try:
            return await self.client.task(task_id)
        except LabelStudioFailed as exc:
            failure = exc
        async for raw in self.client.tasks(
            flow.project_id, query=names_query(NAME_FIELD, name), page_size=self.settings.page_size
        ):
            if isinstance(raw, dict) and raw.get("id") == task_id:
                return raw
        raise MalformedTask(
            task_id, "the task", f"fails in Label Studio ({failure}) and is not listed under {name}"
        )

    async def _start_batches(self, flow: _Flow) -> None:
        """Send the starts queued for ``flow``, a batch at a time, until none is left."""
        queue = self._queued[flow.name]
        while queue:
            batch = [queue.pop(0)]
            chars = batch[0].chars
            while queue and len(batch) < _BATCH_TASKS and chars + queue[0].chars <= _BATCH_CHARS:
                chars += queue[0].chars
                batch.append(queue.pop(0))
            try:
                await self._start_batch(flow, batch)
            finally:  # cancelled (closing): no caller is left waiting
                interrupted = RuntimeError("LabelStudioReviewBackend closed during the start")
                for waiting in batch:
                    _settle(waiting, interrupted)

    async def _start_batch(self, flow: _Flow, batch: list[_Start]) -> None:
        try:
            outcomes = await self._start_many(flow, batch)
        except ReviewRejected as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            logger.info("Label Studio rejected a batch of %d starts (%s): each is sent alone",
                        len(batch), exc)  # fmt: skip
            for waiting in batch:
                try:
                    _settle_all([waiting], await self._start_many(flow, [waiting]))
                except Exception as error:
                    _settle(waiting, error)
            return
        except Exception as exc:
            for waiting in batch:  # each start's caller gets it (its retry policy decides)
                _settle(waiting, exc)
            return
        _settle_all(batch, outcomes)

    async def _start_many(self, flow: _Flow, batch: list[_Start]) -> dict[str, StartOutcome]:
        """The outcome per name of ``batch``: look up, import the names without a task, and
        look again (another task of a name may have landed first; see :meth:`_one_task`).
        Fresh names are neither looked up nor looked at again (see :meth:`_look_up`)."""
        names = list(dict.fromkeys(waiting.name for waiting in batch))
        after = self._after_ids(batch)
        existing = await self._look_up(flow, after)
        outcomes: dict[str, StartOutcome] = {}
        for name, task_id in existing.items():
            logger.info("review %s has task %s already: not imported again", name, task_id)
            outcomes[name] = StartOutcome(name, str(task_id), already_started=True)
        new = [name for name in names if name not in existing]
        if not new:
            return outcomes
        content = {waiting.name: waiting.content for waiting in batch}
        async with self._importing:
            ids = await self.client.import_tasks(
                flow.project_id,
                [
                    task(
                        name,
                        content[name],
                        image_field=self.settings.image_field,
                        text_field=self.settings.text_field,
                        hidden=self.prediction_fields,
                        tag=task_tag(self._tag_key, flow.name, name),
                    )
                    for name in new
                ],
            )
        if len(ids) != len(new):
            raise UpstreamError(
                f"Label Studio answered {len(ids)} task id(s) for an import of {len(new)}",
                retriable=True,
            )
        if ids:
            self.anchors.saw(self.clock(), max(ids))
        kept = await self._look_up(flow, {name: after[name] for name in new if name in after})
        for name, task_id in zip(new, ids, strict=True):
            first = kept.get(name)
            if first is not None and first != task_id:
                logger.info("review %s has task %s already: the new task %s removed", name,
                            first, task_id)  # fmt: skip
                outcomes[name] = StartOutcome(name, str(first), already_started=True)
                continue
            self._remember(name, flow, task_id)
            logger.debug("review %s is task %s of project %s", name, task_id, flow.project_id)
            outcomes[name] = StartOutcome(name, str(task_id), already_started=False)
        return outcomes

    def _after_ids(self, batch: list[_Start]) -> dict[str, int | None]:
        """The names of ``batch`` to look up, each with the id its tasks are all above (None:
        not known, every task is read). A name every start of which is fresh is left out: no
        start of it was sent before, so it has no task. For the others, the tasks of a start
        sent after ``not_before_s`` have ids above the greatest anchored at or before it
        (``labelstudio/anchors.py``), this backend's clock ``clock_skew_s`` behind the one
        that recorded the request at the most (the module docstring says why that suffices)."""
        looked = {waiting.name for waiting in batch if not waiting.fresh}
        after: dict[str, int | None] = {}
        for waiting in batch:
            if waiting.name not in looked:
                continue
            above = None
            if waiting.not_before_s is not None:
                above = self.anchors.before(waiting.not_before_s - self.settings.clock_skew_s)
            if waiting.name in after:  # started twice in the batch: the looser bound
                earlier = after[waiting.name]
                above = None if earlier is None or above is None else min(earlier, above)
            after[waiting.name] = above
        return after

    async def _look_up(self, flow: _Flow, after: Mapping[str, int | None]) -> dict[str, int]:
        """:meth:`_find_many` of the names of ``after``: those with a known bound together,
        above the least of them; the others among every task of the project."""
        bounded = {name: above for name, above in after.items() if above is not None}
        unbounded = [name for name, above in after.items() if above is None]
        found = await self._find_many(flow, unbounded) if unbounded else {}
        if bounded:
            found |= await self._find_many(flow, list(bounded), min(bounded.values()))
        return found

    async def _find_many(
        self, flow: _Flow, names: list[str], after_id: int | None = None
    ) -> dict[str, int]:
        """The task id of each of ``names`` that has a task of the router's in ``flow``'s
        project (after :meth:`_one_task`), among the tasks with ids above ``after_id`` (all,
        if None); other tasks under those names are ignored. The greatest id listed is an
        anchor (``labelstudio/anchors.py``)."""
        wanted = set(names)
        found: dict[str, set[int]] = {}  # a set: another chunk's query may list a task again
        highest = 0
        for at in range(0, len(names), _LOOKUP_NAMES):
            chunk = names[at : at + _LOOKUP_NAMES]
            query = (
                names_query(NAME_FIELD, *chunk)
                if after_id is None
                else names_after_query(NAME_FIELD, after_id, *chunk)
            )
            async for raw in self.client.tasks(
                flow.project_id, query=query, page_size=self.settings.page_size
            ):
                identity = self.ownership.identify(raw, flow.project_id)
                if identity is None:
                    continue
                highest = max(highest, identity.task_id)
                if identity.name not in wanted:
                    continue  # another name containing a wanted one
                if self.ownership.tagged(flow.name, identity.name, identity.tag):
                    found.setdefault(identity.name, set()).add(identity.task_id)
                else:
                    self.ownership.foreign(identity, flow.project_id)
        if highest:
            self.anchors.saw(self.clock(), highest)
        kept: dict[str, int] = {}
        for name, task_ids in found.items():
            kept[name] = await self._one_task(name, task_ids)
            self._remember(name, flow, kept[name])
        return kept

    async def _one_task(self, name: str, task_ids: Collection[int]) -> int:
        """The first task Label Studio stored for ``name`` (lowest id) of the router's tagged
        ones; the others deleted.

        The one owner of "one task per review" (see the module docstring)."""
        kept, *extra = sorted(task_ids)
        for duplicate in extra:
            if not await self.client.delete_task(duplicate):
                continue  # someone else deleted it
            logger.warning("review %s: task %s duplicated task %s; deleted", name, duplicate, kept)
            self.removed()
        return kept

    async def _locate(self, name: str) -> tuple[_Flow, int] | None:
        known = self._known.get(name)
        if known is not None:
            return known
        for flow in self._flows.values():
            found = (await self._find_many(flow, [name])).get(name)
            if found is not None:
                return flow, found
        return None

    async def _state(self, flow: _Flow, found: StoredTask) -> ReviewState:
        counted = found.counted()
        state = ReviewState(found.name, ReviewStatus.IN_PROGRESS, flow.name,
                            created_at_s=found.created_s)  # fmt: skip
        closed = found.closed_s
        if closed is None and len(counted) >= flow.required:
            ended = [a.submitted_s for a in counted[: flow.required] if a.submitted_s is not None]
            return _with(
                state,
                status=ReviewStatus.COMPLETED,
                output_uri=self._task_url(found.task_id),
                ended_at_s=max(ended) if ended else None,
            )
        now = self.clock()
        created = found.created_s
        if closed is None and created is not None and now >= created + flow.deadline_s:
            closed = await self._close(found, now)
        if closed is None:
            return state
        return _with(
            state,
            status=ReviewStatus.FAILED,
            failure_code=EXPIRED,
            failure_reason=f"task {found.task_id} got annotations of {len(counted)} of "
            f"{flow.required} annotator(s) within {flow.deadline_s:.0f} s",
            ended_at_s=closed,
        )

    async def _close(self, found: StoredTask, now: float) -> float:
        meta = dict(found.meta)
        meta[META_KEY] = {**dict(meta.get(META_KEY) or {}), "closed_s": now}
        try:
            await self.client.update_task(found.task_id, {"meta": meta})
        except ReviewRejected as exc:  # the review fails all the same; closed again next time
            logger.warning("closing task %s was refused (%s); its review fails", found.task_id, exc)
            return now
        logger.info("closed task %s: its deadline passed short of annotations", found.task_id)
        return now


def _settle(waiting: _Start, error: BaseException) -> None:
    if not waiting.done.done():  # a start whose caller gave up is not waited for
        waiting.done.set_exception(error)


def _settle_all(batch: list[_Start], outcomes: Mapping[str, StartOutcome]) -> None:
    """Each start its outcome; a name started twice in the batch is ``already_started`` the
    second time."""
    told: set[str] = set()
    for waiting in batch:
        outcome = outcomes[waiting.name]
        if waiting.name in told:
            outcome = StartOutcome(outcome.name, outcome.backend_id, already_started=True)
        told.add(waiting.name)
        if not waiting.done.done():
            waiting.done.set_result(outcome)


def _with(state: ReviewState, **changes: Any) -> ReviewState:
    fields = {**state.__dict__, **changes}
    return ReviewState(**fields)


def _task_id(uri: str, name: str) -> int:
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    if not tail.isdigit():
        raise ReviewRejected(f"review {name}: {uri!r} is not a Label Studio task URL")
    return int(tail)


def _mapping_as_dict(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
