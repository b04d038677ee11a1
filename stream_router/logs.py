"""Logging set-up: text for people, or one JSON object per line for log pipelines.

Log lines carry identifiers (topic, partition, offset, loop name) and counts, never payloads
or secrets. With ``logging.format: json`` every line on stderr is one JSON object::

    {"time": "2026-01-01T12:00:00.000+00:00", "level": "INFO", "logger": "stream_router.app",
     "message": "...", "topic": "predictions", "partition": 3}

Fields passed with ``extra=`` become keys of their own; an exception adds ``exc_type`` and
``exc_info`` (the traceback text). The root handler is the only handler, so the libraries'
loggers (faust, mode, aiokafka, botocore) go through the same formatter.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from stream_router.settings import LoggingSettings

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
#: Libraries that log request bodies or group chatter below WARNING.
_QUIET = ("aiokafka", "botocore", "aiobotocore", "aioboto3", "boto3", "urllib3", "s3transfer")


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


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("stream_router").critical(
        "uncaught %s; exiting", kind.__name__, exc_info=(kind, exc, tb)
    )


def configure_logging(settings: LoggingSettings) -> None:
    handler = logging.StreamHandler()
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
