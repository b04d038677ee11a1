"""JSON log lines: one object per line, ``extra=`` fields as keys, exceptions, no secrets."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from stream_router.logs import JsonFormatter, configure_logging
from stream_router.settings import LoggingSettings


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("aiokafka", "botocore")}
    hook = sys.excepthook
    yield
    sys.excepthook = hook
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
    logging.captureWarnings(False)


def line(record: logging.LogRecord) -> dict[str, object]:
    text = JsonFormatter().format(record)
    assert "\n" not in text
    parsed: dict[str, object] = json.loads(text)
    return parsed


def make(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.getLogger("stream_router.test").makeRecord(
        "stream_router.test", logging.WARNING, __file__, 1, msg, args, None, extra=extra
    )


def test_extra_fields_are_keys_of_their_own() -> None:
    entry = line(make("dead-lettered %s[%d]", "in", 3, topic="in", partition=3, loop="l-1"))
    assert entry["message"] == "dead-lettered in[3]"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "stream_router.test"
    assert (entry["topic"], entry["partition"], entry["loop"]) == ("in", 3, "l-1")
    assert str(entry["time"]).endswith("+00:00")


def test_exceptions_are_included_with_their_type() -> None:
    try:
        raise ValueError("bad offset 7")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    entry = line(record)
    assert entry["exc_type"] == "ValueError"
    assert "bad offset 7" in str(entry["exc_info"])
    assert "Traceback" in str(entry["exc_info"])


def test_secrets_bytes_and_odd_values_stay_safe() -> None:
    entry = line(make("x", secret=SecretStr("hunter2"), value=b"payload-bytes", obj=object()))
    text = json.dumps(entry)
    assert "hunter2" not in text
    assert "payload-bytes" not in text
    assert entry["secret"] == "**********"
    assert entry["value"] == "<13 bytes>"


def test_configure_json_sends_library_loggers_through_the_formatter(
    restore_root: None,
) -> None:
    configure_logging(LoggingSettings(format="json", level="INFO"))
    handler = logging.getLogger().handlers[0]
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("faust.worker").info("worker up", extra={"app_id": "review"})
    logging.getLogger("aiokafka.consumer").warning("heartbeat failed")
    logging.getLogger("aiokafka.consumer").info("chatter")  # kept to warnings
    logging.getLogger("botocore.endpoint").info("request body")  # kept to warnings
    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"]) for e in lines] == [
        ("faust.worker", "worker up"),
        ("aiokafka.consumer", "heartbeat failed"),
    ]
    assert lines[0]["app_id"] == "review"


def test_an_uncaught_exception_is_one_json_line(restore_root: None) -> None:
    configure_logging(LoggingSettings(format="json"))
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        raise ConnectionError("broker 127.0.0.1:9092 unreachable")
    except ConnectionError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (entry,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert entry["level"] == "CRITICAL"
    assert entry["exc_type"] == "ConnectionError"
    assert "unreachable" in entry["exc_info"]
