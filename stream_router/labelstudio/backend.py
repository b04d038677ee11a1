"""Label Studio as a :class:`~stream_router.review.backend.ReviewBackend`.

Usage::

    async with LabelStudioReviewBackend(settings.review.label_studio) as ls:
        outcome = await ls.start(name, "general", content)   # a task in general's project
        state = await ls.describe(name)
        if state and state.output_uri:
            result = await ls.fetch_result(state)

A review is one task (``labelstudio/tasks.py``) in the project of its flow
(``review.label_studio.projects``); its ``name`` is stored in the task's data. How A2I's ideas
map here:

- **start** is idempotent per name: Label Studio's import is not, so a start first looks for
  a task of that name in the project and, when there is one (a redelivered request, a crash
  after the import), answers ``already_started=True`` without importing again.
- **one task per name** (:meth:`LabelStudioReviewBackend._one_task`): Label Studio has no unique
  key a task could carry, and it may apply an import long after the client gave up on it (seen
  here: an import of a process killed mid-call landed 11 s later, behind SQLite's write lock),
  so a look-then-import can still leave two tasks of one name. The task with the lowest id
  (the first one Label Studio stored) is the review; whoever sees another one of that name
  deletes it: the start right after its import, every describe that looks the name up, and
  the reconciler's listing of open tasks. ``removed`` is told of each one (a metric). Imports
  of one process are sent one at a time, which keeps Label Studio's write lock, and so such
  late imports, rare.
- **starts go in batches** (:meth:`LabelStudioReviewBackend._start_batches`): Label Studio
  answers a call in about 0.1 s here whether it looks up or imports one task or fifty, and
  parallel imports contend for SQLite's write lock (five at once timed out), so a start costs
  three calls (look up, import, look again) that starts of one flow share: those arriving while
  a batch is in flight go together in the next one (at most ``_BATCH_TASKS`` tasks and
  ``_BATCH_CHARS`` characters). A batch Label Studio rejects is split into single starts, so a
  bad review fails alone.
- **status** is derived from the task: ``Completed`` once it has ``annotations_per_task``
  annotations that were not skipped; ``Failed`` with code ``Expired`` once it was closed; else
  ``InProgress``. Label Studio has no task lifetime, so the backend enforces ``deadline_s``
  itself: asked about a task short of annotations past its deadline (the reconciler asks about
  every overdue or unlisted review), it *closes* it, recording ``closed_s`` in the task's meta,
  and the review fails. A closed task stays closed: annotations arriving later are not used.
  Label Studio Community cannot lock a task, so a person may still open a closed one; the
  labeling view shows nothing of the close.
- **output** is the task itself: ``output_uri`` is its API URL, and :meth:`fetch_result` reads
  its annotations (one answer per annotation, skipped ones left out).
- **pending** lists the flow's tasks still short of annotations and not closed or overdue.

Names are looked up by a Data Manager filter on ``data.review_name`` (a scan of the project's
tasks in Label Studio's database; up to ``_LOOKUP_NAMES`` names per call); the project and task
of every name this process started or found are kept, so describes after a start cost one call.
A describe that finds a review complete keeps the task it read for the :meth:`fetch_result`
that follows (one call less per review).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import orjson

from stream_router.errors import ConfigError, ReviewRejected, UpstreamError
from stream_router.labelstudio.client import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioNotFound,
    name_filter,
)
from stream_router.labelstudio.tasks import CONTENT_FIELD, NAME_FIELD, answer_content, task
from stream_router.review.backend import (
    ReviewBackend,
    ReviewResult,
    ReviewState,
    ReviewStatus,
    StartOutcome,
    WorkerAnswer,
)
from stream_router.review.events import epoch_s
from stream_router.settings import LabelStudioSettings

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS = 10 * 1024 * 1024  #: the longest review input (JSON characters) sent
META_KEY = "stream_router"  #: the task meta key this backend writes (``closed_s``)
EXPIRED = "Expired"
_KNOWN_NAMES = 100_000  #: names whose task is remembered (least recently used dropped)
_BATCH_TASKS = 100  #: the most tasks one import sends
_BATCH_CHARS = 4 * 1024 * 1024  #: the most JSON characters of content one import sends
_LOOKUP_NAMES = 20  #: names per lookup (the query is in the URL)
_COMPLETED_KEPT = 1_000  #: tasks kept from a describe for the fetch that follows


@dataclass(frozen=True)
class _Flow:
    name: str
    project_id: int
    required: int
    deadline_s: float


@dataclass
class _Start:
    """One start waiting for its batch."""

    name: str
    content: Mapping[str, Any]
    chars: int
    done: asyncio.Future[StartOutcome]


class LabelStudioReviewBackend:
    """Human reviews as Label Studio tasks; see the module docstring."""

    max_input_chars = MAX_INPUT_CHARS

    def __init__(
        self,
        settings: LabelStudioSettings,
        *,
        clock: Callable[[], float] = time.time,
        removed: Callable[[], None] = lambda: None,
        prediction_fields: Collection[str] = (),
    ) -> None:
        """``prediction_fields``: the event's paths of the model's label, confidence and
        scores (``ingest.mapping``), which tasks show in their model line, not in the table."""
        if settings.api_token is None:
            raise ConfigError("review.label_studio.api_token: the Label Studio backend needs it")
        self.settings = settings
        self.client = LabelStudioClient(
            settings.url,
            settings.api_token.get_secret_value(),
            timeout_s=settings.request_timeout_s,
        )
        self.clock = clock
        self.removed = removed
        self.prediction_fields = frozenset(prediction_fields)
        self._importing = asyncio.Lock()
        self._flows: dict[str, _Flow] = {}
        self._known: OrderedDict[str, tuple[_Flow, int]] = OrderedDict()
        self._completed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._queued: dict[str, list[_Start]] = {}
        self._batches: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and find every configured flow's project (ConfigError names a bad one)."""
        await self.client.open()
        try:
            await self._resolve_projects()
        except LabelStudioAuthError as exc:
            await self.client.close()
            raise ConfigError(
                f"review.label_studio.api_token: Label Studio at {self.settings.url} refused it "
                f"({exc})"
            ) from exc
        except BaseException:
            await self.client.close()
            raise

    async def close(self) -> None:
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
        await self.client.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _resolve_projects(self) -> None:
        wanted = self.settings.projects
        if not wanted:
            raise ConfigError("review.label_studio.projects: no flow is configured")
        by_title: dict[str, list[dict[str, Any]]] = {}
        for project in await self.client.projects():
            by_title.setdefault(str(project.get("title")), []).append(project)
        flows: dict[str, _Flow] = {}
        for flow, ref in wanted.items():
            where = f"review.label_studio.projects.{flow}.project"
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
            overlap = int(project.get("maximum_annotations") or 1)
            if overlap < ref.annotations_per_task:
                raise ConfigError(
                    f"review.label_studio.projects.{flow}.annotations_per_task is "
                    f"{ref.annotations_per_task}, but project {project['id']} hands a task to at "
                    f"most {overlap} annotator(s) (its maximum_annotations)"
                )
            flows[flow] = _Flow(flow, int(project["id"]), ref.annotations_per_task, ref.deadline_s)
        self._flows = flows
        logger.info(
            "Label Studio at %s: flows %s",
            self.settings.url,
            {flow: f.project_id for flow, f in flows.items()},
        )

    def project_ids(self) -> dict[str, int]:
        """Each flow's project id (after :meth:`open`)."""
        return {flow: f.project_id for flow, f in self._flows.items()}

    # -- ReviewBackend ---------------------------------------------------------------------------

    async def start(self, name: str, flow: str, content: Mapping[str, Any]) -> StartOutcome:
        """A task for review ``name`` in ``flow``'s project, unless one exists (see the module
        doc). Content that is not JSON or is longer than ``max_input_chars`` is rejected."""
        target = self._flow(flow)
        try:
            size = len(orjson.dumps(content, default=_mapping_as_dict))
        except TypeError as exc:
            raise ReviewRejected(f"content of review {name} is not JSON: {exc}") from exc
        if size > MAX_INPUT_CHARS:
            raise ReviewRejected(
                f"content of review {name} is {size} bytes of JSON; at most {MAX_INPUT_CHARS}"
            )
        waiting = _Start(name, content, size, asyncio.get_running_loop().create_future())
        self._queued.setdefault(target.name, []).append(waiting)
        batches = self._batches.get(target.name)
        if batches is None or batches.done():
            self._batches[target.name] = asyncio.create_task(
                self._start_batches(target), name=f"label-studio-starts-{target.name}"
            )
        return await waiting.done

    async def describe(self, name: str) -> ReviewState | None:
        """The review's state (closing an overdue task, see the module doc); None if no task
        of any configured flow has the name."""
        located = await self._locate(name)
        if located is None:
            return None
        flow, task_id = located
        try:
            found = await self.client.task(task_id)
        except LabelStudioNotFound:
            self._known.pop(name, None)  # deleted in Label Studio meanwhile
            return None
        state = await self._state(flow, found)
        if state.status is ReviewStatus.COMPLETED:
            self._completed[name] = found
            while len(self._completed) > _COMPLETED_KEPT:
                self._completed.popitem(last=False)
        return state

    async def fetch_result(self, state: ReviewState) -> ReviewResult:
        """Every annotation of the task at ``state.output_uri`` (skipped ones left out)."""
        if not state.output_uri:
            raise ReviewRejected(f"review {state.name} ({state.status}) has no output_uri")
        task_id = _task_id(state.output_uri, state.name)
        kept = self._completed.pop(state.name, None)
        try:
            found = kept if kept and int(kept["id"]) == task_id else await self.client.task(task_id)
        except LabelStudioNotFound as exc:
            raise ReviewRejected(
                f"task {task_id} of review {state.name} no longer exists in Label Studio"
            ) from exc
        answers = tuple(_answer(annotation) for annotation in _annotations(found))
        data = found.get("data") or {}
        content = data.get(CONTENT_FIELD)
        return ReviewResult(
            name=state.name,
            flow=state.flow,
            answers=answers,
            input_content=content if isinstance(content, dict) else {},
        )

    async def pending(self, flow: str, since_s: float | None = None) -> AsyncIterator[ReviewState]:
        """Tasks of ``flow`` (created at or after ``since_s``) still short of annotations, and
        neither closed nor past their deadline (the reconciler then describes them)."""
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
        async for found in self.client.tasks(
            target.project_id, query=query, page_size=self.settings.page_size
        ):
            name = (found.get("data") or {}).get(NAME_FIELD)
            created = epoch_s(found.get("created_at"))
            if not isinstance(name, str) or _closed_s(found) is not None:
                continue
            known = self._known.get(name)
            if name in seen or (known is not None and known[1] != int(found["id"])):
                duplicated.add(name)
                continue
            seen[name] = int(found["id"])
            if since_s is not None and created is not None and created < since_s:
                continue
            if created is not None and now >= created + target.deadline_s:
                continue
            self._remember(name, target, int(found["id"]))
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
                f"flow {flow!r} is not in review.label_studio.projects ({sorted(self._flows)})"
            ) from None

    def _remember(self, name: str, flow: _Flow, task_id: int) -> None:
        self._known[name] = (flow, task_id)
        self._known.move_to_end(name)
        while len(self._known) > _KNOWN_NAMES:
            self._known.popitem(last=False)

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
        look again (another task of a name may have landed first; see :meth:`_one_task`)."""
        names = list(dict.fromkeys(waiting.name for waiting in batch))
        existing = await self._find_many(flow, names)
        outcomes: dict[str, StartOutcome] = {}
        for name, found in existing.items():
            logger.info("review %s has task %s already: not imported again", name, found["id"])
            outcomes[name] = StartOutcome(name, str(found["id"]), already_started=True)
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
                    )
                    for name in new
                ],
            )
        if len(ids) != len(new):
            raise UpstreamError(
                f"Label Studio answered {len(ids)} task id(s) for an import of {len(new)}",
                retriable=True,
            )
        kept = await self._find_many(flow, new)
        for name, task_id in zip(new, ids, strict=True):
            first = kept.get(name)
            if first is not None and int(first["id"]) != task_id:
                logger.info("review %s has task %s already: the new task %s removed", name,
                            first["id"], task_id)  # fmt: skip
                outcomes[name] = StartOutcome(name, str(first["id"]), already_started=True)
                continue
            self._remember(name, flow, task_id)
            logger.debug("review %s is task %s of project %s", name, task_id, flow.project_id)
            outcomes[name] = StartOutcome(name, str(task_id), already_started=False)
        return outcomes

    async def _find(self, flow: _Flow, name: str) -> dict[str, Any] | None:
        """The task of review ``name`` in ``flow``'s project, after :meth:`_one_task`."""
        return (await self._find_many(flow, [name])).get(name)

    async def _find_many(self, flow: _Flow, names: list[str]) -> dict[str, dict[str, Any]]:
        """The task of each of ``names`` that has one in ``flow``'s project (after
        :meth:`_one_task`)."""
        wanted = set(names)
        found: dict[str, list[dict[str, Any]]] = {}
        for at in range(0, len(names), _LOOKUP_NAMES):
            query = name_filter(NAME_FIELD, *names[at : at + _LOOKUP_NAMES])
            async for candidate in self.client.tasks(
                flow.project_id, query=query, page_size=self.settings.page_size
            ):
                name = (candidate.get("data") or {}).get(NAME_FIELD)
                if name in wanted:
                    found.setdefault(name, []).append(candidate)
        kept: dict[str, dict[str, Any]] = {}
        for name, candidates in found.items():
            kept[name] = await self._one_task(name, candidates)
            self._remember(name, flow, int(kept[name]["id"]))
        return kept

    async def _one_task(self, name: str, found: list[dict[str, Any]]) -> dict[str, Any]:
        """The first task Label Studio stored for ``name`` (lowest id); the others deleted.

        The one owner of "one task per review" (see the module docstring)."""
        kept, *extra = sorted(found, key=lambda candidate: int(candidate["id"]))
        for duplicate in extra:
            if not await self.client.delete_task(int(duplicate["id"])):
                continue  # someone else deleted it
            logger.warning(
                "review %s: task %s duplicated task %s (%d annotation(s) on it); deleted",
                name,
                duplicate["id"],
                kept["id"],
                int(duplicate.get("total_annotations") or 0),
            )
            self.removed()
        return kept

    async def _locate(self, name: str) -> tuple[_Flow, int] | None:
        known = self._known.get(name)
        if known is not None:
            return known
        for flow in self._flows.values():
            found = await self._find(flow, name)
            if found is not None:
                return flow, int(found["id"])
        return None

    async def _state(self, flow: _Flow, found: dict[str, Any]) -> ReviewState:
        name = str((found.get("data") or {}).get(NAME_FIELD))
        created = epoch_s(found.get("created_at"))
        answers = _annotations(found)
        closed = _closed_s(found)
        state = ReviewState(name, ReviewStatus.IN_PROGRESS, flow.name, created_at_s=created)
        if closed is None and len(answers) >= flow.required:
            ended = [t for t in (_submitted_s(a) for a in answers) if t is not None]
            return _with(
                state,
                status=ReviewStatus.COMPLETED,
                output_uri=f"{self.settings.url.rstrip('/')}/api/tasks/{found['id']}",
                ended_at_s=max(ended) if ended else None,
            )
        now = self.clock()
        if closed is None and created is not None and now >= created + flow.deadline_s:
            closed = await self._close(found, now)
        if closed is None:
            return state
        return _with(
            state,
            status=ReviewStatus.FAILED,
            failure_code=EXPIRED,
            failure_reason=f"task {found['id']} got {len(answers)} of {flow.required} "
            f"annotation(s) within {flow.deadline_s:.0f} s",
            ended_at_s=closed,
        )

    async def _close(self, found: dict[str, Any], now: float) -> float:
        meta = dict(found.get("meta") or {})
        meta[META_KEY] = {**dict(meta.get(META_KEY) or {}), "closed_s": now}
        await self.client.update_task(int(found["id"]), {"meta": meta})
        logger.info("closed task %s: its deadline passed short of annotations", found["id"])
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


def _annotations(found: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The task's annotations that count: not skipped (``was_cancelled``), oldest first."""
    kept = [a for a in found.get("annotations") or [] if not a.get("was_cancelled")]
    return sorted(kept, key=lambda a: (str(a.get("created_at")), int(a.get("id", 0))))


def _answer(annotation: Mapping[str, Any]) -> WorkerAnswer:
    submitted = _submitted_s(annotation)
    lead = annotation.get("lead_time")
    spent = float(lead) if isinstance(lead, int | float) else None
    accepted = submitted - spent if submitted is not None and spent is not None else None
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):  # some Label Studio versions expand the user
        who = who.get("id")
    return WorkerAnswer(
        worker_id=str(who),
        content=answer_content(annotation.get("result") or []),
        accepted_at_s=accepted,
        submitted_at_s=submitted,
        time_spent_s=spent,
    )


def _submitted_s(annotation: Mapping[str, Any]) -> float | None:
    return epoch_s(annotation.get("updated_at")) or epoch_s(annotation.get("created_at"))


def _closed_s(found: Mapping[str, Any]) -> float | None:
    mine = (found.get("meta") or {}).get(META_KEY) or {}
    closed = mine.get("closed_s") if isinstance(mine, Mapping) else None
    return float(closed) if isinstance(closed, int | float) else None


def _task_id(uri: str, name: str) -> int:
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    if not tail.isdigit():
        raise ReviewRejected(f"review {name}: {uri!r} is not a Label Studio task URL")
    return int(tail)


def _mapping_as_dict(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


if TYPE_CHECKING:

    def _conforms(backend: LabelStudioReviewBackend) -> ReviewBackend:
        return backend
