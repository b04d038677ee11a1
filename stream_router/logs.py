"""Logging set-up: text for people, or one JSON object per line for log pipelines.

Log lines carry identifiers (topic, partition, offset, loop name) and counts, never payloads
or secrets.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from stream_router.settings import LoggingSettings


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``; exceptions as ``exc_info`` text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: LoggingSettings) -> None:
    handler = logging.StreamHandler()
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # aiokafka is chatty at INFO about group membership; keep it to warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
