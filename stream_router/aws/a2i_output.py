"""A2I's output.json (custom task type) parsed into a :class:`ReviewResult`.

Pure: bytes in, result out. The document has four top-level fields, ``flowDefinitionArn``,
``humanAnswers`` (one entry per worker: ``answerContent``, ``acceptanceTime``,
``submissionTime``, ``timeSpentInSeconds``, ``workerId``, optional ``workerMetadata``),
``humanLoopName`` and ``inputContent``. Anything else raises ``ReviewRejected`` naming what is
wrong (never quoting answers or content).
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from stream_router.errors import ReviewRejected
from stream_router.review.backend import ReviewResult, ReviewState, WorkerAnswer


def parse_output(raw: bytes, state: ReviewState) -> ReviewResult:
    """A custom task's output.json as a :class:`ReviewResult`; ``ReviewRejected`` if malformed."""

    def bad(reason: str) -> ReviewRejected:
        return ReviewRejected(f"output.json of review {state.name} is malformed: {reason}")

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise bad(f"top level is {type(document).__name__}, not an object")
    loop_name = document.get("humanLoopName", state.name)
    if loop_name != state.name:
        raise bad(f"it belongs to human loop {loop_name!r}")
    entries = document.get("humanAnswers")
    if not isinstance(entries, list):
        raise bad("humanAnswers is missing or not a list")
    input_content = document.get("inputContent", {})
    if not isinstance(input_content, dict):
        raise bad("inputContent is not an object")
    flow = document.get("flowDefinitionArn") or state.flow
    if not isinstance(flow, str):
        raise bad("flowDefinitionArn is not a string")
    answers = []
    for index, entry in enumerate(entries):
        where = f"humanAnswers[{index}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} is not an object")
        content = entry.get("answerContent")
        worker = entry.get("workerId")
        if not isinstance(content, dict):
            raise bad(f"{where}.answerContent is missing or not an object")
        if not isinstance(worker, str):
            raise bad(f"{where}.workerId is missing or not a string")
        spent = entry.get("timeSpentInSeconds")
        if spent is not None and (isinstance(spent, bool) or not isinstance(spent, int | float)):
            raise bad(f"{where}.timeSpentInSeconds is not a number")
        try:
            accepted = _epoch_s(entry.get("acceptanceTime"))
            submitted = _epoch_s(entry.get("submissionTime"))
        except (TypeError, ValueError) as exc:
            raise bad(f"{where}: {exc}") from exc
        answers.append(
            WorkerAnswer(
                worker_id=worker,
                content=content,
                accepted_at_s=accepted,
                submitted_at_s=submitted,
                time_spent_s=float(spent) if spent is not None else None,
            )
        )
    return ReviewResult(
        name=state.name, flow=flow, answers=tuple(answers), input_content=input_content
    )


def _epoch_s(value: object) -> float | None:
    """ISO 8601 (``2020-12-28T18:59:15.191Z``; naive means UTC) to epoch seconds."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"time {value!r} is not a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"time {value!r} is not ISO 8601") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def split_s3_uri(uri: str, name: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); ``ReviewRejected`` naming review ``name`` if not."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise ReviewRejected(f"output_uri {uri!r} of review {name} is not s3://bucket/key")
    return bucket, key
