"""Logging set-up: text for people, or one JSON object per line for log pipelines.

Log lines carry identifiers (topic, partition, offset, loop name) and counts, never payloads
or secrets. With ``logging.format: json`` every line on stderr is one JSON object::

    {"time": "2026-01-01T12:00:00.000+00:00", "level": "INFO", "logger": "stream_router.app",
     "message": "...", "topic": "predictions", "partition": 3}

Fields passed with ``extra=`` become keys of their own; an exception adds ``exc_type`` and
``exc_info`` (the traceback text). The root handler is the only handler, so the libraries'
loggers (faust, mode, aiokafka, botocore) go through the same formatter.

Repeated lines of the Kafka libraries are summarised (:class:`RepeatSummary`): with the broker
down, aiokafka logs the same few connection errors dozens of times a second, which would bury
the lines that matter. The first of a run is logged, then one line per
:data:`SUMMARY_INTERVAL_S` with the count::

    ERROR aiokafka: repeated 612 times in the last 10 s: Unable connect to node with id 1: ...
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from stream_router.settings import LoggingSettings

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
#: Libraries that log request bodies or group chatter below WARNING.
_QUIET = ("aiokafka", "botocore", "aiobotocore", "aioboto3", "boto3", "urllib3", "s3transfer")
#: Libraries whose repeated lines are summarised (aiokafka's, also in faust's consumer thread).
SUMMARISED = ("aiokafka", "faust", "mode")
#: Seconds a run of repeated lines is counted before its summary line.
SUMMARY_INTERVAL_S = 10.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return str(value)  # "**********"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"  # payloads stay out of logs
    return str(value)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra, "exc_type", "exc_info"}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                entry["exc_type"] = type(exc).__name__
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=_jsonable)


@dataclass
class _Run:
    """Repeats of one (logger, level, template) counted since ``opened``."""

    opened: float
    repeats: int = 0
    last: logging.LogRecord | None = None


class RepeatSummary(logging.Filter):
    """Lets the first of a run of repeated library lines through, then one summary a window.

    Two records repeat each other when they come from the same logger at the same level with
    the same message template (``record.msg`` before its arguments: ``Unable connect to node
    with id %s: %s`` repeats whatever the node and the error). The first record of a run passes;
    its repeats are counted, not logged. Once ``interval_s`` has passed since the run's window
    opened, the next record handled (of any logger) or :meth:`flush` logs one summary of the
    window through ``emit``: the newest repeat's text, at its level, as "repeated N times in the
    last S s: ...", with ``repeats`` and ``window_s`` as fields of their own (JSON keys). The
    run goes on with a new window; a window without repeats ends it, so the next occurrence is
    logged as a first again. Records below ``level`` (faust's start-up chatter: "Creating
    topic %r" for each topic) and of loggers outside ``loggers`` pass untouched.

    Records may arrive from several threads (faust runs its Kafka consumer in one): the
    counting is locked, the emitting is not.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        interval_s: float = SUMMARY_INTERVAL_S,
        loggers: tuple[str, ...] = SUMMARISED,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.emit = emit
        self.interval_s = interval_s
        self.loggers = loggers
        self.level = level
        self.clock = clock
        self._runs: dict[tuple[str, int, str], _Run] = {}
        self._next_due = float("inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "repeats"):
            return True  # a summary of ours
        now = self.clock()
        passes = True
        with self._lock:
            summaries = self._close_windows(now) if now >= self._next_due else []
            if record.levelno >= self.level and record.name.split(".", 1)[0] in self.loggers:
                key = (record.name, record.levelno, str(record.msg))
                run = self._runs.get(key)
                if run is None:
                    self._runs[key] = _Run(opened=now)
                    self._next_due = min(self._next_due, now + self.interval_s)
                else:
                    run.repeats += 1
                    run.last = record
                    passes = False
        for summary in summaries:
            self.emit(summary)
        return passes

    def flush(self) -> None:
        """Log the summaries of every open window now (at exit)."""
        with self._lock:
            summaries = self._close_windows(self.clock(), final=True)
        for summary in summaries:
            self.emit(summary)

    def _close_windows(self, now: float, *, final: bool = False) -> list[logging.LogRecord]:
        summaries = []
        for key, run in list(self._runs.items()):
            if not final and now - run.opened < self.interval_s:
                continue
            if run.last is not None:
                summaries.append(_summary(run.last, run.repeats, now - run.opened))
            if final or run.last is None:
                del self._runs[key]
            else:
                self._runs[key] = _Run(opened=now)
        opened = [run.opened for run in self._runs.values()]
        self._next_due = min(opened) + self.interval_s if opened else float("inf")
        return summaries


def _summary(last: logging.LogRecord, repeats: int, window_s: float) -> logging.LogRecord:
    try:
        text = last.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the template
        text = str(last.msg)
    summary = logging.LogRecord(
        last.name,
        last.levelno,
        last.pathname,
        last.lineno,
        "repeated %d time%s in the last %.0f s: %s",
        (repeats, "" if repeats == 1 else "s", window_s, text),
        None,
    )
    summary.repeats = repeats
    summary.window_s = round(window_s, 1)
    return summary


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: stderr, with the repeats of :data:`SUMMARISED` summarised."""

    def __init__(self) -> None:
        super().__init__()
        self.summary = RepeatSummary(self.handle)
        self.addFilter(self.summary)

    def close(self) -> None:
        self.summary.flush()  # logging.shutdown at exit: the last windows' counts
        super().close()


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("stream_router").critical(
        "uncaught %s; exiting", kind.__name__, exc_info=(kind, exc, tb)
    )


def configure_logging(settings: LoggingSettings) -> None:
    handler = _Handler()
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
        sys.excepthook = _log_uncaught  # a crash's traceback becomes one JSON line too
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    logging.captureWarnings(True)  # warnings become log lines too, not raw stderr text
    # aiokafka is chatty at INFO about group membership, and the AWS SDK logs request bodies
    # at DEBUG: keep them to warnings.
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
