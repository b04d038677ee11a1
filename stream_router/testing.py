"""Helpers for testing what plugs into the router, shipped so plugin authors use what we use.

- :func:`make_prediction`: a :class:`~stream_router.Prediction` with plausible defaults;
  override what the test is about.
- :func:`check_policy`: the policy contract (``stream_router/policies/base.py``) as one call
  for a plugin's own tests; it raises :class:`AssertionError` naming the rule a policy breaks.
  The built-in policies pass it (``tests/unit/policies/test_builtin_contract.py``).
- :class:`FakeReviewBackend`: an in-memory review backend that can be scripted to fail and lets
  a test finish reviews (``stream_router.review.fake``).

Write a plugin's contract test as::

    from stream_router.testing import check_policy, make_prediction

    def test_meets_the_policy_contract() -> None:
        policy = WatchListPolicy("watch", WatchListParams(labels=["fraud"]))
        check_policy(policy, [make_prediction(label="fraud")])

What :func:`check_policy` checks, each rule named in its failure message:

==========================  ===============================================================
rule                        what it asks of the policy
==========================  ===============================================================
``documented``              ``params_model`` is a :class:`~stream_router.PolicyParams` (so
                            unknown keys are refused), nested models too; every parameter
                            has a description; the parameters have a JSON schema; the
                            ``summary`` is one line of at most 100 characters
``never raises``            ``evaluate`` returns for every prediction ingest can hand it
                            (missing and null fields, fields of the wrong type, odd class
                            scores, deep nesting, long text): a policy says review, it does
                            not raise to filter
``one verdict each``        one :class:`~stream_router.Verdict` per prediction, in order:
                            ``review`` a bool and ``reason`` a non-empty string; none for an
                            empty batch
``same input, same          evaluating the same predictions again gives the same verdicts
verdicts``                  (no clock, no randomness not derived from the event)
``batch-independent``       a prediction's verdict is the same alone, in the batch and in
                            the batch reversed (batches are cut wherever a fetch ends)
``leaves its input alone``  the predictions' events and scores are unchanged afterwards
``fast``                    at most ``max_s_per_event`` per prediction (``None`` skips it)
==========================  ===============================================================

The predictions checked are those of :func:`awkward_predictions` (each one ingest's parser can
produce) followed by the ones passed in. The policy goes through its lifecycle as ingest runs
it: ``start()``, the checks, ``close()``.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any, NoReturn

from pydantic import BaseModel

from stream_router.models import Prediction, SourceRef
from stream_router.policies.base import Policy, PolicyParams, Verdict
from stream_router.review.fake import FakeReviewBackend

__all__ = ["FakeReviewBackend", "awkward_predictions", "check_policy", "make_prediction"]

#: The longest ``summary`` ``stream-router policies list`` shows on one line.
_MAX_SUMMARY_CHARS = 100


def make_prediction(
    *,
    event_id: str = "evt-1",
    label: str = "cat",
    confidence: float = 0.9,
    scores: Mapping[str, float] | None = None,
    model_name: str | None = "animals",
    model_version: str | None = "3",
    timestamp_s: float | None = 1_700_000_000.0,
    event: Mapping[str, Any] | None = None,
    topic: str = "predictions",
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
) -> Prediction:
    """A prediction with plausible defaults; override what the test is about."""
    return Prediction(
        event_id=event_id,
        label=label,
        confidence=confidence,
        scores=scores,
        model_name=model_name,
        model_version=model_version,
        timestamp_s=timestamp_s,
        event={} if event is None else event,
        source=SourceRef(topic=topic, partition=partition, offset=offset, key=key),
    )


def awkward_predictions() -> list[Prediction]:
    """Predictions at the edges of what ingest's parser produces, for :func:`check_policy`.

    The parser guarantees a string label, a confidence in [0, 1], finite class scores (or none)
    and strings or None for the model fields; everything else in the event is whatever JSON the
    producer sent. So: missing, null and wrongly typed event fields, odd class scores (none,
    empty, one class, all zero, ties, negative, sums past the float range, many classes), empty
    and non-ASCII labels, a derived event id, deep nesting and long text.
    """
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["next"] = {}
        node = node["next"]
    events: list[dict[str, Any]] = [
        {},
        {
            "customer": {"id": "c-1", "country": "NL"},
            "features": {"amount": 12.5, "items": 3},
            "text": "a refund, please",
        },
        {"customer": None, "features": None, "text": None, "amount": None},
        {"customer": "c-1", "features": [1, "two", None, {"x": []}], "text": 42, "amount": "12"},
        {"customer": {"id": ""}, "features": {"amount": True}, "text": "", "amount": []},
        {"amount": 10**30, "tiny": 5e-324, "huge": 1.7e308, "negative": -1.7e308},
        {"text": "refund " * 20_000, "unicode": "猫 🐈 \u202e \u0000"},
        {"nested": deep, "a.b": 1, "a": {"b": {"c": [[[[]]]]}}},
    ]
    score_sets: list[Mapping[str, float] | None] = [
        None,
        {},
        {"cat": 1.0},
        {"cat": 0.0, "dog": 0.0},
        {"cat": 0.5, "dog": 0.5},
        {"cat": 0.9, "dog": 0.07, "fox": 0.03},
        {"cat": -3.0, "dog": 7.5},
        {"cat": 1.7e308, "dog": 1.7e308},
        {f"class-{i}": 1 / 1000 for i in range(1000)},
        {"": 1.0, " ": 0.0},
    ]
    predictions = [
        make_prediction(event_id=f"event-{i}", event=event) for i, event in enumerate(events)
    ]
    predictions += [
        make_prediction(event_id=f"scores-{i}", scores=scores)
        for i, scores in enumerate(score_sets)
    ]
    predictions += [
        make_prediction(event_id="zero", confidence=0.0),
        make_prediction(event_id="one", confidence=1.0),
        make_prediction(event_id="smallest", confidence=5e-324, label=""),
        make_prediction(event_id="unicode 猫", label="猫 🐈", confidence=0.5),
        make_prediction(event_id="long", label="x" * 10_000, confidence=0.7),
        make_prediction(
            event_id="bare", model_name=None, model_version=None, timestamp_s=None, key=b"k"
        ),
        make_prediction(event_id="epoch", timestamp_s=0.0, topic="other", partition=11),
        make_prediction(event_id="predictions-3-99", offset=99, partition=3)._replace(
            id_derived=True
        ),
    ]
    return predictions


def check_policy(
    policy: Policy[Any],
    predictions: Iterable[Prediction] = (),
    *,
    max_s_per_event: float | None = 0.01,
) -> None:
    """Check ``policy`` against the policy contract; see the module docstring for the rules.

    ``predictions`` are checked after :func:`awkward_predictions`: pass the ones your policy is
    about. ``max_s_per_event`` bounds the mean time per prediction (generous: it catches I/O
    and sleeping, not slow arithmetic). Raises :class:`AssertionError` naming the broken rule.
    """
    subject = f"policy {policy.name!r} ({type(policy).__qualname__})"
    _check_documented(type(policy), subject)
    batch = [*awkward_predictions(), *predictions]
    before = [copy.deepcopy((p.event, p.scores)) for p in batch]
    policy.start()
    try:
        _check_behaviour(policy, batch, subject, max_s_per_event)
    finally:
        policy.close()
    for prediction, (event, scores) in zip(batch, before, strict=True):
        if prediction.event != event or prediction.scores != scores:
            _broken(subject, "leaves its input alone", f"evaluate changed {_show(prediction)}")


def _broken(subject: str, rule: str, detail: str) -> NoReturn:
    raise AssertionError(f"{subject} breaks the policy contract, rule '{rule}': {detail}")


def _check_documented(cls: type[Policy[Any]], subject: str) -> None:
    rule = "documented"
    params_model = getattr(cls, "params_model", None)
    if not (isinstance(params_model, type) and issubclass(params_model, PolicyParams)):
        _broken(subject, rule, f"params_model is {params_model!r}, not a PolicyParams subclass")
    for model in _models_in(params_model):
        if not issubclass(model, PolicyParams):
            _broken(
                subject,
                rule,
                f"{model.__name__} must subclass PolicyParams, so that unknown keys are refused",
            )
        for name, field in model.model_fields.items():
            if not field.description:
                _broken(subject, rule, f"parameter {model.__name__}.{name} has no description")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            params_model.model_json_schema()
    except Exception as exc:
        raise AssertionError(
            f"{subject} breaks the policy contract, rule '{rule}': its parameters have no JSON "
            f"schema: {type(exc).__name__}: {exc}"
        ) from exc
    summary = cls.summary
    if (
        not isinstance(summary, str)
        or not summary.strip()
        or "\n" in summary
        or len(summary) > _MAX_SUMMARY_CHARS
    ):
        _broken(
            subject,
            rule,
            f"summary {summary!r} must be one non-empty line of at most {_MAX_SUMMARY_CHARS} "
            "characters (stream-router policies list shows it)",
        )


def _models_in(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and the models nested in its fields (ranges, per-label rules, ...)."""
    found = [model]
    for field in model.model_fields.values():
        for arg in _type_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in found:
                found.extend(m for m in _models_in(arg) if m not in found)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for arg in getattr(annotation, "__args__", ()):
        args.extend(_type_args(arg))
    return args


def _check_behaviour(
    policy: Policy[Any], batch: list[Prediction], subject: str, max_s_per_event: float | None
) -> None:
    empty = _evaluate(policy, [], subject)
    if empty != []:
        _broken(subject, "one verdict each", f"an empty batch gave {empty!r}, not []")
    alone = [_evaluate(policy, [prediction], subject)[0] for prediction in batch]
    started = time.perf_counter()
    together = _evaluate(policy, batch, subject)
    elapsed_s = time.perf_counter() - started
    again = _evaluate(policy, batch, subject)
    backwards = _evaluate(policy, batch[::-1], subject)[::-1]
    for index, prediction in enumerate(batch):
        if again[index] != together[index]:
            _broken(
                subject,
                "same input, same verdicts",
                f"{_show(prediction)} got {together[index]!r}, then {again[index]!r}",
            )
        if alone[index] != together[index] or backwards[index] != together[index]:
            _broken(
                subject,
                "batch-independent",
                f"{_show(prediction)} got {alone[index]!r} alone, {together[index]!r} in a "
                f"batch of {len(batch)} and {backwards[index]!r} in it reversed",
            )
    per_event_s = elapsed_s / len(batch)
    if max_s_per_event is not None and per_event_s > max_s_per_event:
        _broken(
            subject,
            "fast",
            f"{per_event_s * 1000:.1f} ms per prediction over {len(batch)} predictions, above "
            f"{max_s_per_event * 1000:g} ms: evaluate runs on the event loop's thread for every "
            "batch, so no I/O, no sleeping, nothing that blocks",
        )


def _evaluate(policy: Policy[Any], batch: Sequence[Prediction], subject: str) -> list[Verdict]:
    """``policy.evaluate(batch)``, its result checked for shape; an exception fails the check."""
    try:
        verdicts = policy.evaluate(batch)
    except Exception as exc:
        culprit = _show(batch[0]) if len(batch) == 1 else f"a batch of {len(batch)}"
        raise AssertionError(
            f"{subject} breaks the policy contract, rule 'never raises': evaluate raised "
            f"{type(exc).__name__}: {exc} on {culprit}; return Verdict(True, reason) for a "
            "prediction it cannot judge"
        ) from exc
    if not isinstance(verdicts, list) or len(verdicts) != len(batch):
        count = len(verdicts) if isinstance(verdicts, Sized) else "no"
        _broken(
            subject,
            "one verdict each",
            f"evaluate returned {count} verdicts ({type(verdicts).__name__}) for {len(batch)} "
            "predictions; return a list with one Verdict per prediction, in order",
        )
    for prediction, verdict in zip(batch, verdicts, strict=True):
        if not (
            isinstance(verdict, Verdict)
            and isinstance(verdict.review, bool)
            and isinstance(verdict.reason, str)
            and verdict.reason
        ):
            _broken(
                subject,
                "one verdict each",
                f"{_show(prediction)} got {verdict!r}; a verdict is "
                "Verdict(review: bool, reason: non-empty str)",
            )
    return verdicts


def _show(prediction: Prediction) -> str:
    """The prediction, briefly, for a failure message."""
    event = repr(prediction.event)
    if len(event) > 60:
        event = event[:57] + "..."
    scores = repr(prediction.scores)
    if len(scores) > 60:
        scores = scores[:57] + "..."
    return (
        f"prediction {str(prediction.event_id)[:40]!r} (label {str(prediction.label)[:40]!r}, "
        f"confidence {prediction.confidence!r}, scores {scores}, event {event})"
    )
