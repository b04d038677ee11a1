"""Which Label Studio tasks are the router's reviews, and the ones it leaves alone.

Any project member can import a task under a review's (predictable) name, and change any task,
so the Label Studio backend takes a task for a review only when :class:`Ownership` says so:

- **a review's task** carries the router's tag (``data.review_tag``,
  :func:`~stream_router.labelstudio.tasks.task_tag`: an HMAC-SHA256 of the flow and the name
  under the router's key) and reads (``labelstudio/stored.py``) with the review's name;
- **a foreign task** is under a review's name without that tag (none, or one that does not
  verify). It is never taken for the review, and never deleted: it may be the router's own under
  a key since changed (a new API token without ``task_tag_key``), annotations and all;
- **a malformed task** does not read; in a listing it is left out (its review, if it is one,
  ends when it is next described: ``backend.py``).

Each task left alone is logged at WARNING and counted (``ignored(reason)``) once per task and
reason, however often listings meet it. Pure but for that logging and counting: no I/O.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from stream_router.labelstudio.stored import (
    Form,
    MalformedTask,
    StoredTask,
    TaskIdentity,
    read_identity,
    read_task,
)
from stream_router.labelstudio.tasks import tag_verifies

logger = logging.getLogger(__name__)

FOREIGN = "foreign"  #: ``ignored`` reason: a task under a review's name the router did not tag
MALFORMED = "malformed"  #: ``ignored`` reason: a task stored.py cannot read
_REMEMBERED = 10_000  #: tasks left alone remembered, each logged once


class Ownership:
    """The router's tasks under tag key ``key``; ``ignored(reason)`` counts the others."""

    def __init__(self, key: bytes, ignored: Callable[[str], None] = lambda reason: None) -> None:
        self._key = key
        self.ignored = ignored
        self._told: OrderedDict[tuple[int | str | None, str], None] = OrderedDict()

    def tagged(self, flow: str, name: str, tag: str | None) -> bool:
        """Whether ``tag`` is the router's for review ``name`` of ``flow``."""
        return tag_verifies(self._key, flow, name, tag)

    def review(self, raw: object, flow: str, form: Form | None, name: str) -> StoredTask:
        """Task ``raw`` as review ``name``'s; ``MalformedTask`` if it does not read, or is no
        longer that review's (its name or tag changed under the router)."""
        found = read_task(raw, form)
        if found.name != name:
            raise MalformedTask(found.task_id, "data.review_name", f"is no longer {name}")
        if not self.tagged(flow, name, found.tag):
            raise MalformedTask(found.task_id, "data.review_tag", "does not verify any more")
        return found

    def listed(
        self, raw: object, flow: str, project_id: int, form: Form | None
    ) -> StoredTask | None:
        """A task of a listing as a review's; None if it is no review's, foreign or malformed
        (the last two told)."""
        identity = self.identify(raw, project_id)
        if identity is None or identity.name is None:
            return None
        if not self.tagged(flow, identity.name, identity.tag):
            self.foreign(identity, project_id)
            return None
        try:
            return read_task(raw, form)
        except MalformedTask as exc:
            self.ignore(exc.task_id, MALFORMED, f"{exc}; review {identity.name} ends when it "
                        "is next described")  # fmt: skip
            return None

    def identify(self, raw: object, project_id: int) -> TaskIdentity | None:
        """Whose task ``raw`` says it is; None (told) if that does not read."""
        try:
            return read_identity(raw)
        except MalformedTask as exc:
            self.ignore(exc.task_id, MALFORMED, f"{exc} (in project {project_id})")
            return None

    def foreign(self, identity: TaskIdentity, project_id: int) -> None:
        """Tell of a task under a review's name the router did not tag."""
        how = "untagged" if identity.tag is None else "its tag does not verify"
        self.ignore(
            identity.task_id,
            FOREIGN,
            f"task {identity.task_id} of project {project_id} is under review name "
            f"{identity.name} but was not made by this router ({how}): neither taken for the "
            "review nor deleted",
        )

    def unserved(self, project_id: int, error: Exception) -> None:
        """Tell of a task of project ``project_id`` Label Studio fails on (left out of a
        listing by the client, which cannot say which one it is)."""
        where = f"project {project_id}"
        self.ignore(where, MALFORMED, f"{where}: Label Studio fails on a task it lists "
                    f"({error}); left out of the listing")  # fmt: skip

    def ignore(self, task: int | str | None, reason: str, message: str) -> None:
        """Count a task left alone, and log it at WARNING, once per ``task`` (its id, or what
        stands for it) and reason."""
        key = (task, reason)
        if key in self._told:
            return
        self._told[key] = None
        while len(self._told) > _REMEMBERED:
            self._told.popitem(last=False)
        self.ignored(reason)
        logger.warning("Label Studio task ignored (%s): %s", reason, message)
