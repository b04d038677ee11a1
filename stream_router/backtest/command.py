"""``stream-router policies backtest``: read a history, certify, write what was asked for.

The history comes from ``--input FILE`` (JSONL of result envelopes) or ``--topic TOPIC`` (over
the wire, from ``--from``: ``earliest``, an offset, or an ISO-8601 time), with a progress line
on stderr; ``--from`` a time keeps, from a file too, only what was decided since then (a
window since the audit share or the model last changed: mixing audit shares certifies little).
``--config`` is the candidate configuration: its routing mix and spend are replayed over the
history's events, its budgets compared, and its ``kafka`` section used for ``--topic``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from stream_router.errors import ConfigError
from stream_router.models import SourceRef


def start_of(text: str) -> int | str:
    """``--from``: earliest, an offset, or an ISO-8601 time (as ``@<epoch ms>``)."""
    if text == "earliest":
        return text
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"policies backtest --from {text!r}: earliest, an offset, or an ISO-8601 time"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return f"@{int(when.timestamp() * 1000)}"


def backtest_command(args: argparse.Namespace, kafka_options: Any) -> int:
    """Run the command; ``kafka_options()`` gives the client options for ``--topic``."""
    missing = [name for name in ("numpy", "scipy", "matplotlib") if find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"policies backtest needs the analysis extra ({', '.join(missing)} missing): "
            "pip install 'stream-router[analysis]'"
        )
    # The statistics import numpy and scipy: only this command pays for them.
    from stream_router.backtest.certified import Options, render, run, snippet  # noqa: PLC0415
    from stream_router.settings import load_settings  # noqa: PLC0415

    if (args.input is None) == (args.topic is None):
        raise ConfigError("policies backtest: give the history as --input FILE or --topic TOPIC")
    candidate = load_settings(args.config) if args.config else None
    review_cost = args.review_cost
    if review_cost is None:
        review_cost = candidate.review.price_per_review_usd if candidate is not None else 0.0
    options = Options(
        target_error=args.target_error,
        delta=args.delta,
        simultaneous=args.simultaneous,
        review_cost=review_cost,
        error_cost=args.error_cost,
        grid_points=args.grid_points,
    )
    history, replayed = _load(args, candidate, kafka_options)
    if not len(history):
        print("policies backtest: the history holds no result envelope", file=sys.stderr)
        return 1
    result = run(history, options, replayed, _budgets(candidate))
    print(render(result))
    print("\nrecommended policies (stream-router config check accepts this):\n")
    print(snippet(result))
    _write(args, result)
    return 0


def _load(args: argparse.Namespace, candidate: Any, kafka_options: Any) -> tuple[Any, Any]:
    """The history, and the candidate's replay over its events (None without a candidate)."""
    from stream_router.backtest.history import History, Progress, read_lines, read_topic  # noqa: PLC0415
    from stream_router.backtest.replay import Replay  # noqa: PLC0415

    history = History()
    replay = Replay(candidate) if candidate is not None else None
    start = start_of(args.start)
    if args.input is not None and start != "earliest":
        if not isinstance(start, str):
            raise ConfigError(
                "policies backtest --from: with --input, a time (a file has no offsets)"
            )
        history.since_s = int(start[1:]) / 1000  # decided at or after it

    def sink(raw: bytes) -> None:
        record = history.add(raw)
        if record is not None and replay is not None:
            replay.add(orjson.dumps(record["event"]), _source(record))

    with replay if replay is not None else contextlib.nullcontext():
        if args.input is not None:
            with open_input(args.input, "policies backtest") as handle:
                read_lines(
                    handle, sink, Progress(f"read {args.input} (bytes)", args.input.stat().st_size)
                )
        else:
            asyncio.run(
                read_topic(kafka_options(), args.topic, sink, start=start, progress=Progress)
            )
    return history, None if replay is None else replay.report


def _write(args: argparse.Namespace, result: Any) -> None:
    from stream_router.backtest.certified import csv_rows, plot, report, snippet  # noqa: PLC0415

    if args.report:
        args.report.write_bytes(orjson.dumps(report(result), option=orjson.OPT_INDENT_2) + b"\n")
    if args.csv:
        rows = csv_rows(result)
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        plot(result, str(args.plot))
    if args.snippet:
        args.snippet.write_text(snippet(result))


def open_input(path: Path, command: str) -> BinaryIO:
    """``--input`` opened for reading; a path that cannot be read is a ConfigError naming it."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{command} --input: cannot read {path}: {exc.strerror}") from exc


def _source(record: dict[str, Any]) -> SourceRef:
    """Where the event was read from, so an event without an id gets the id it had."""
    source = record.get("source") or {}
    key = record.get("key")
    raw_key = None if key is None else str(key).encode()
    try:
        return SourceRef(
            str(source["topic"]), int(source["partition"]), int(source["offset"]), raw_key
        )
    except (KeyError, TypeError, ValueError):
        return SourceRef("history", 0, 0, raw_key)


def _budgets(settings: Any) -> dict[str, float]:
    if settings is None:
        return {}
    budgets: dict[str, float] = {}
    for route in settings.policies.routes:
        budget = settings.review.budgets.get(route.name) or settings.review.budgets.get("*")
        per_day = getattr(budget, "per_day", None)
        if per_day is not None:
            budgets[route.name] = float(per_day)
    return budgets


def add_parser(policy_commands: Any, handler: Any) -> None:
    parser = policy_commands.add_parser(
        "backtest",
        help="certify per-label thresholds on a history of result envelopes, and price them",
    )
    where = parser.add_argument_group("history (one of)")
    where.add_argument("--input", type=Path, help="result envelopes, one JSON per line")
    where.add_argument("--topic", help="read the output topic over the wire")
    parser.add_argument(
        "--from", dest="start", default="earliest",
        help="earliest (default), an offset (--topic), or an ISO-8601 time: only what was "
        "decided since (e.g. the last change of the audit share or the model)",
    )  # fmt: skip
    parser.add_argument("--bootstrap-servers", help="with --topic (default: --config or env)")
    parser.add_argument(
        "--config", type=Path,
        help="candidate configuration: its routing mix and budgets over the history",
    )  # fmt: skip
    parser.add_argument(
        "--target-error", type=_rate, default=0.02, help="target error alpha (default 0.02)"
    )
    parser.add_argument(
        "--delta", type=_rate, default=0.05, help="allowed miss probability delta (default 0.05)"
    )
    parser.add_argument(
        "--simultaneous", action="store_true",
        help="one guarantee for all labels at once (delta split over labels)",
    )  # fmt: skip
    parser.add_argument("--review-cost", type=float, help="per review (default: the config's)")
    parser.add_argument("--error-cost", type=float, help="per auto-accepted error: Chow's rule")
    parser.add_argument("--grid-points", type=int, default=200, help="thresholds per label")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--csv", type=Path, help="write one row per label and threshold here")
    parser.add_argument("--plot", type=Path, help="write a PNG plot here")
    parser.add_argument("--snippet", type=Path, help="write the recommended policies here")
    parser.set_defaults(handler=handler)


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value
