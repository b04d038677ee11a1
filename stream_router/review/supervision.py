"""Liveness and progress of the review role's background work, and what readiness says of it.

The review role runs agents (``review-requests``, ``loop-events``, several actors each) and tasks
(the backend opener, each SQS watcher, the reconciler). Each runs under :meth:`Supervisor.run`:

- an exception that reaches it (anything not handled by a typed disposition: retry, dead-letter,
  fallback) is logged with its traceback, recorded as a death, and ``on_death`` is called once:
  the review application connects it to the worker's shutdown, and the process exits non-zero
  so the orchestrator restarts it. Nothing is restarted in place and nothing is swallowed;
- cancellation (shutdown, rebalance) passes through untouched.

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

An idle role is not stalled: an agent holding nothing, and watchers completing empty polls,
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

logger = logging.getLogger(__name__)

_current: contextvars.ContextVar[int | None] = contextvars.ContextVar("_current", default=None)


class Supervisor:
    """Deaths, live components, events in hand and heartbeats of one review process."""

    def __init__(
        self, stall_after_s: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_after_s = stall_after_s
        self.monotonic = monotonic
        self.deaths: dict[str, str] = {}  #: component -> exception type, first death first
        self.on_death: Callable[[], None] = lambda: None
        self._alive: Counter[str] = Counter()
        self._required: list[str] = []
        self._beats: dict[str, tuple[float, float]] = {}  # name -> (last beat, allowance)
        self._doing: dict[str, str] = {}  # heartbeat component -> what it does
        self._failures: dict[str, str] = {}  # heartbeat component -> its last failure
        self._busy: dict[int, tuple[str, float | None]] = {}  # token -> (agent, since)
        self._tokens = itertools.count()

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

    async def run(self, name: str, work: Awaitable[None]) -> None:
        """Await one component's body; an exception escaping it ends the process."""
        self._alive[name] += 1
        if name in self._beats:
            self.beat(name)  # silence counts from the start
        try:
            await work
        except Exception as exc:
            self.died(name, exc)
        finally:
            self._alive[name] -= 1

    def died(self, name: str, exc: BaseException) -> None:
        """Record, log and act on a death (the first one triggers ``on_death``)."""
        first = not self.deaths
        self.deaths.setdefault(name, type(exc).__name__)
        logger.critical(
            "%s died (%s); stopping the process so that it is restarted",
            name,
            type(exc).__name__,
            exc_info=exc,
        )
        if first:
            self.on_death()

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

    def problem(self) -> str | None:
        """Deaths first, then components not running, then stalls; None when all is well."""
        if self.deaths:
            name, kind = next(iter(self.deaths.items()))
            return f"{name} died ({kind}); the process is stopping"
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
