"""Live progress in the terminal: a block redrawn about once a second, or plain periodic lines.

On a terminal (``stream.isatty()``) the block is redrawn in place with ANSI cursor movement;
elsewhere (a pipe, a CI log, a test) one line is printed every ``plain_every_s`` seconds, so the
output stays readable as a log.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TextIO

from stream_router.demo.tracker import MetricsSnapshot


@dataclass(frozen=True)
class Progress:
    """One observation of the run."""

    elapsed_s: float
    phase: str  #: "producing" or "draining"
    produced: int
    total: int
    counts: dict[str, int]
    metrics: MetricsSnapshot

    @property
    def finished(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "in review")


class RateMeter:
    """Events per second over the last ``window_s`` seconds of observations."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, int]] = deque()

    def add(self, when_s: float, count: int) -> float:
        self._points.append((when_s, count))
        while len(self._points) > 2 and when_s - self._points[0][0] > self.window_s:
            self._points.popleft()
        first_s, first = self._points[0]
        span = when_s - first_s
        return 0.0 if span <= 0 else (count - first) / span


def _budget(metrics: MetricsSnapshot) -> str:
    if not metrics.budget_left:
        return "-"
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(metrics.budget_left.items()))


def render_block(progress: Progress, rate_in: float, rate_out: float) -> list[str]:
    """The lines of the live block."""
    c = progress.counts
    m = progress.metrics
    router = (
        f"router consumed {m.consumed:.0f}, loops in flight {m.loops_in_flight:.0f}"
        if m.ok
        else "router metrics not answering yet"
    )
    return [
        f"[{progress.elapsed_s:5.1f} s] {progress.phase}: events in {progress.produced}"
        f"/{progress.total}  ({rate_in:.1f}/s in, {rate_out:.1f}/s out)",
        f"  accepted {c['accepted']}  in review {c['in review']}  reviewed {c['reviewed']}"
        f"  unreviewed {c['unreviewed']}  dead-lettered {c['dead-lettered']}",
        f"  {router}",
        f"  budget left: {_budget(m)}",
    ]


def render_line(progress: Progress, rate_in: float, rate_out: float) -> str:
    """The plain one-line form (no terminal)."""
    c = progress.counts
    m = progress.metrics
    return (
        f"[{progress.elapsed_s:5.1f} s] {progress.phase} in={progress.produced}/{progress.total}"
        f" accepted={c['accepted']} in_review={c['in review']} reviewed={c['reviewed']}"
        f" unreviewed={c['unreviewed']} dead_lettered={c['dead-lettered']}"
        f" rate_in={rate_in:.1f}/s rate_out={rate_out:.1f}/s"
        f" loops_in_flight={m.loops_in_flight:.0f} budget_left={_budget(m).replace(' ', '')}"
    )


class Console:
    """Writes progress to ``stream``: redrawn on a terminal, periodic lines otherwise."""

    def __init__(self, stream: TextIO, *, live: bool | None = None, plain_every_s: float = 5.0):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.plain_every_s = plain_every_s
        self._drawn = 0
        self._last_plain = -float("inf")
        self._in = RateMeter()
        self._out = RateMeter()

    def say(self, text: str) -> None:
        """A line of narration above the live block."""
        self._clear()
        print(text, file=self.stream, flush=True)

    def update(self, progress: Progress, *, force: bool = False) -> None:
        now = time.monotonic()
        rate_in = self._in.add(now, progress.produced)
        rate_out = self._out.add(now, progress.finished)
        if self.live:
            self._clear()
            lines = render_block(progress, rate_in, rate_out)
            print("\n".join(lines), file=self.stream, flush=True)
            self._drawn = len(lines)
        elif force or now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            print(render_line(progress, rate_in, rate_out), file=self.stream, flush=True)

    def done(self) -> None:
        """Leave the last block on screen and continue below it."""
        self._drawn = 0

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # up N lines, clear to the end
            self._drawn = 0
