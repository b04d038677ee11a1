"""The supervisor of one process: what ends it, and whether it is ready.

Both roles use it: the ingest role's own, or the review role's, which under ``all`` supervises
the embedded ingest too. It owns, for its process:

- deaths: every background task, agent and component runs under :meth:`Supervisor.run`. An
  exception that reaches it (anything not handled by a typed disposition: retry, dead-letter,
  fallback) is logged with its traceback and recorded as a death, and the first death calls
  ``on_death`` once (the review role connects it to the worker's shutdown). The process then
  exits with :data:`EXIT_DIED`, so the orchestrator restarts it: nothing is restarted in place
  and nothing is swallowed. Cancellation (shutdown, rebalance) passes through untouched. Work
  run ``until_shutdown`` (the ingest role's loop) is dead too when it returns before the process
  is ``stopping``;
- ``stopping``: set once SIGTERM is being handled;
- named readiness checks: a check returns ``None`` when fine, or a short reason;
- components that must run until shutdown (:meth:`Supervisor.require`), heartbeats and events
  in hand, and whether they stalled (below);
- readiness: :meth:`Supervisor.problems`, what ``/readyz`` lists (``stream_router.health``).

Readiness lists the deaths first (``task NAME died: REASON``), then ``stopping``, then each
failing check as ``NAME: REASON``. A role that reports its components on one line of its own
(the review role: ``review: ...``) makes that line from :meth:`Supervisor.death` and
:meth:`Supervisor.stall` around its own conditions, and adds it as a check that reports the
deaths: they are then said there (``NAME died (KIND); the process is stopping``), not apart.

"Stalled", concretely (``stall_after_s``, monotonic time):

- an agent has held one event for longer than ``stall_after_s``, not counting deliberate waits
  (a budget hold, the open-reviews quota, the in-flight cap), which run under
  :meth:`Supervisor.waiting`; throttling retries and SDK timeouts count, so ``stall_after_s``
  must exceed the longest retry sequence (minutes, not seconds);
- a heartbeat component (a watcher beats after every poll, the reconciler after every sweep)
  did not beat within its allowance: ``stall_after_s`` plus the component's own period (the
  reconciler's interval). Silence is counted from the component's start. Readiness then says
  what the component does (the monitor names the Kafka cluster it reads) and the last
  failure it reported (:meth:`Supervisor.failed`), so an unreachable dependency is named.

An idle process is not stalled: an agent holding nothing, and watchers completing empty polls,
are fine.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

logger = logging.getLogger(__name__)

EXIT_DIED = 1  #: the exit code of a process after a death, so that it is restarted

T = TypeVar("T")
Check = Callable[[], str | None]

_current: contextvars.ContextVar[int | None] = contextvars.ContextVar("_current", default=None)


class Supervisor:
    """Deaths, stopping, readiness checks, components, heartbeats and events in hand of one
    process; see the module docstring."""

    def __init__(
        self, stall_after_s: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_after_s = stall_after_s
        self.monotonic = monotonic
        self.deaths: dict[str, str] = {}  #: name -> exception type (or reason), first death first
        self.on_death: Callable[[], None] = lambda: None
        self.stopping = False
        self._reasons: dict[str, str] = {}  # name -> "type: message" (or reason)
        self._checks: dict[str, Check] = {}
        self._deaths_in_check = False  # a check reports the deaths: not listed apart
        self._alive: Counter[str] = Counter()
        self._required: list[str] = []
        self._beats: dict[str, tuple[float, float]] = {}  # name -> (last beat, allowance)
        self._doing: dict[str, str] = {}  # heartbeat component -> what it does
        self._failures: dict[str, str] = {}  # heartbeat component -> its last failure
        self._busy: dict[int, tuple[str, float | None]] = {}  # token -> (agent, since)
        self._tokens = itertools.count()

    # -- deaths ------------------------------------------------------------------------------

    async def run(self, name: str, work: Awaitable[T], *, until_shutdown: bool = False) -> T | None:
        """Await one component's body; an exception escaping it is a death, and so is a return
        before the process is stopping when ``until_shutdown``. Returns what ``work`` returned,
        None after a death."""
        self._alive[name] += 1
        if name in self._beats:
            self.beat(name)  # silence counts from the start
        try:
            result = await work
        except Exception as exc:
            self.died(name, exc)
            return None
        finally:
            self._alive[name] -= 1
        if until_shutdown and not self.stopping:
            self.died(name, "ended before shutdown")
            return None
        return result

    def died(self, name: str, cause: BaseException | str) -> None:
        """Record and log a death, with its traceback when ``cause`` is an exception (else it is
        the reason); the first death calls ``on_death``. A name keeps its first cause."""
        exc = cause if isinstance(cause, BaseException) else None
        kind = type(cause).__name__ if exc is not None else str(cause)
        reason = f"{kind}: {cause}" if exc is not None else kind
        first = not self.deaths
        self.deaths.setdefault(name, kind)
        self._reasons.setdefault(name, reason)
        logger.critical(
            "background task %s died (%s); the process stops so it can be restarted",
            name,
            reason,
            exc_info=exc,
            extra={"task": name},
        )
        if first:
            self.on_death()

    # -- components --------------------------------------------------------------------------

    def require(self, name: str) -> None:
        """``name`` must run until shutdown; readiness reports it when none of it runs."""
        if name not in self._required:
            self._required.append(name)

    def heartbeat(self, name: str, period_s: float = 0.0, doing: str = "") -> None:
        """``name`` must :meth:`beat` at least every ``period_s + stall_after_s`` seconds;
        ``doing`` says what it does, for readiness ("reads offsets from Kafka at ...")."""
        self._beats[name] = (self.monotonic(), period_s + self.stall_after_s)
        if doing:
            self._doing[name] = doing

    def beat(self, name: str) -> None:
        _, allowance = self._beats.get(name, (0.0, self.stall_after_s))
        self._beats[name] = (self.monotonic(), allowance)
        self._failures.pop(name, None)

    def failed(self, name: str, reason: str) -> None:
        """A heartbeat component's attempt failed (it goes on); readiness shows the last one
        while the component is silent too long. The next :meth:`beat` clears it."""
        self._failures[name] = reason

    # -- events in hand ----------------------------------------------------------------------

    @contextmanager
    def handling(self, agent: str) -> Iterator[None]:
        """Mark one event in hand by ``agent`` (an actor handles one event at a time)."""
        token = next(self._tokens)
        self._busy[token] = (agent, self.monotonic())
        reset = _current.set(token)
        try:
            yield
        finally:
            _current.reset(reset)
            del self._busy[token]

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A deliberate wait of the event in hand (budget hold, quota): not a stall."""
        token = _current.get()
        if token is None or token not in self._busy:
            yield
            return
        agent, _ = self._busy[token]
        self._busy[token] = (agent, None)
        try:
            yield
        finally:
            if token in self._busy:
                self._busy[token] = (agent, self.monotonic())

    # -- readiness ---------------------------------------------------------------------------

    def add_check(self, name: str, check: Check, *, reports_deaths: bool = False) -> None:
        """Readiness lists ``name: reason`` while ``check`` returns a reason. A check that
        ``reports_deaths`` starts with :meth:`death`: the deaths are then not listed apart."""
        if name in self._checks:
            raise ValueError(f"a readiness check named {name!r} exists already; pick another")
        self._checks[name] = check
        self._deaths_in_check |= reports_deaths

    def problems(self) -> list[str]:
        """Why the process is not ready; empty when it is. Deaths come first, then
        ``stopping``, then each failing check (a check that raises is one of them)."""
        listed = {} if self._deaths_in_check else self._reasons
        found = [f"task {name} died: {reason}" for name, reason in listed.items()]
        if self.stopping:
            found.append("stopping")
        for name, check in self._checks.items():
            try:
                reason = check()
            except Exception as exc:  # a broken check must not hide the others
                reason = f"check failed: {type(exc).__name__}: {exc}"
            if reason is not None:
                found.append(f"{name}: {reason}")
        return found

    def death(self) -> str | None:
        """The first death, on one line (what a check that reports the deaths starts with); None
        while nothing died."""
        if not self.deaths:
            return None
        name, kind = next(iter(self.deaths.items()))
        return f"{name} died ({kind}); the process is stopping"

    def stall(self) -> str | None:
        """A required component not running, else the longest event in hand beyond
        ``stall_after_s``, else the first heartbeat silent beyond its allowance; None when
        everything runs and moves."""
        for name in self._required:
            if self._alive[name] <= 0:
                return f"{name} is not running"
        now = self.monotonic()
        held = [(now - since, agent) for agent, since in self._busy.values() if since is not None]
        if held:
            longest, agent = max(held)
            if longest > self.stall_after_s:
                return (
                    f"{agent}: one event in hand for {longest:.0f} s "
                    f"(stall threshold {self.stall_after_s:g} s)"
                )
        for name, (last, allowance) in self._beats.items():
            silent = now - last
            if silent > allowance:
                doing = f" ({self._doing[name]})" if name in self._doing else ""
                failure = self._failures.get(name)
                failure = f"; last failure: {failure}" if failure else ""
                return (
                    f"{name}{doing}: no progress for {silent:.0f} s (allowed {allowance:g} s)"
                    f"{failure}"
                )
        return None
