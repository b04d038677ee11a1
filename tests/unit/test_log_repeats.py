"""Repeated library log lines: the first is logged, then one summary line per window."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from stream_router.logs import RepeatSummary, configure_logging
from stream_router.settings import LoggingSettings

UNREACHABLE = "Unable connect to node with id %s: %s"
REFUSED = "[Errno 111] Connect call failed ('127.0.0.1', 9092)"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str = UNREACHABLE,
    *args: object,
    name: str = "aiokafka",
    level: int = logging.ERROR,
) -> logging.LogRecord:
    if msg == UNREACHABLE and not args:
        args = (1, REFUSED)
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class Collected:
    """What a handler behind the filter would write: passed records and emitted summaries."""

    def __init__(self, clock: Clock, interval_s: float = 10.0) -> None:
        self.lines: list[str] = []
        self.summaries: list[logging.LogRecord] = []
        self.filter = RepeatSummary(self._emit, interval_s=interval_s, clock=clock)

    def _emit(self, summary: logging.LogRecord) -> None:
        assert self.filter.filter(summary), "a summary must pass the filter"
        self.summaries.append(summary)
        self.lines.append(f"{summary.levelname} {summary.name}: {summary.getMessage()}")

    def log(self, rec: logging.LogRecord) -> None:
        if self.filter.filter(rec):
            self.lines.append(f"{rec.levelname} {rec.name}: {rec.getMessage()}")


def test_a_flood_becomes_its_first_line_and_one_summary_per_window() -> None:
    clock = Clock()
    out = Collected(clock)
    for _ in range(600):  # 60 a second for 10 s
        out.log(record())
        clock.now += 0.0166
    assert out.lines == [f"ERROR aiokafka: Unable connect to node with id 1: {REFUSED}"]
    clock.now = 110.0
    out.log(record(UNREACHABLE, 1, "[Errno 111] refused again"))  # the window has ended
    assert out.lines[1:] == [
        "ERROR aiokafka: repeated 599 times in the last 10 s: Unable connect to node with id "
        f"1: {REFUSED}"
    ]
    (summary,) = out.summaries
    assert (summary.levelno, summary.repeats, summary.window_s) == (logging.ERROR, 599, 10.0)  # type: ignore[attr-defined]
    for _ in range(99):  # the run goes on: counted in the next window, nothing logged
        clock.now += 0.1
        out.log(record(UNREACHABLE, 1, "[Errno 111] refused again"))
    assert len(out.lines) == 2
    clock.now = 120.5
    out.log(record("unrelated", name="stream_router.app", level=logging.INFO))
    assert out.lines[2:] == [
        "ERROR aiokafka: repeated 100 times in the last 10 s: Unable connect to node with id "
        "1: [Errno 111] refused again",
        "INFO stream_router.app: unrelated",
    ]


def test_a_quiet_window_ends_the_run_so_the_next_occurrence_is_a_first_again() -> None:
    clock = Clock()
    out = Collected(clock)
    out.log(record())
    clock.now += 10
    out.log(record("something else"))  # closes the window: no repeats, no summary
    clock.now += 30
    out.log(record())
    assert out.lines == [
        f"ERROR aiokafka: Unable connect to node with id 1: {REFUSED}",
        "ERROR aiokafka: something else",
        f"ERROR aiokafka: Unable connect to node with id 1: {REFUSED}",
    ]
    assert out.summaries == []


def test_runs_are_told_apart_by_logger_level_and_template_not_by_arguments() -> None:
    clock = Clock()
    out = Collected(clock)
    out.log(record(UNREACHABLE, 1, REFUSED))
    out.log(record(UNREACHABLE, 2, REFUSED))  # another node, same template: a repeat
    out.log(record(UNREACHABLE, 1, REFUSED, name="aiokafka.consumer.fetcher"))
    out.log(record(UNREACHABLE, 1, REFUSED, level=logging.WARNING))
    out.log(record("Failed fetch messages from %s: %s", 1, "NodeNotReadyError"))
    assert len(out.lines) == 4
    clock.now += 10
    out.filter.flush()
    assert [s.getMessage() for s in out.summaries] == [
        f"repeated 1 time in the last 10 s: Unable connect to node with id 2: {REFUSED}"
    ]


def test_other_loggers_and_lines_below_warning_are_never_summarised() -> None:
    clock = Clock()
    out = Collected(clock)
    for offset in range(5):
        out.log(record("dead-lettered %s@%d", "in", offset, name="stream_router.ingest.dispatch"))
        out.log(record("retrying", name="botocore.retries", level=logging.WARNING))
        out.log(record("Creating topic %r", f"t{offset}", name="faust.app", level=logging.INFO))
    assert len(out.lines) == 15
    assert out.summaries == []


def test_flush_logs_the_open_windows_and_forgets_them() -> None:
    clock = Clock()
    out = Collected(clock)
    for _ in range(3):
        out.log(record(name="faust.transport.drivers.aiokafka", level=logging.WARNING))
        clock.now += 1
    out.filter.flush()
    out.filter.flush()  # nothing left the second time
    assert [s.getMessage() for s in out.summaries] == [
        f"repeated 2 times in the last 3 s: Unable connect to node with id 1: {REFUSED}"
    ]
    out.log(record(name="faust.transport.drivers.aiokafka", level=logging.WARNING))
    assert len(out.lines) == 3  # a first again


def test_records_from_several_threads_are_each_counted_once() -> None:
    clock = Clock()
    out = Collected(clock)
    threads = [
        threading.Thread(target=lambda: [out.log(record()) for _ in range(1000)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.now += 10
    out.filter.flush()
    assert len(out.lines) == 2
    assert out.summaries[0].repeats == 3999  # type: ignore[attr-defined]


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    yield
    sys.excepthook = hook
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_configured_logging_summarises_through_its_formatter_and_at_close(
    restore_root: None,
) -> None:
    configure_logging(LoggingSettings(format="json", level="INFO"))
    handler = logging.getLogger().handlers[0]
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    for node in range(50):
        logging.getLogger("aiokafka").error(UNREACHABLE, node, REFUSED)
    logging.getLogger("stream_router.app").info("still here")
    handler.close()  # what logging.shutdown does at exit
    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"].split(":")[0]) for e in lines] == [
        ("aiokafka", "Unable connect to node with id 0"),
        ("stream_router.app", "still here"),
        ("aiokafka", "repeated 49 times in the last 0 s"),
    ]
    assert (lines[2]["level"], lines[2]["repeats"]) == ("ERROR", 49)
    assert lines[2]["message"].endswith(f"node with id 49: {REFUSED}")
