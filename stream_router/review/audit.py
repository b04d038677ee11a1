"""The audit monitor: the error of auto-accepted predictions, measured on audited reviews.

An audit route (a ``sample`` policy) sends a random share of otherwise-accepted predictions to
review; ingest records on each request its ``review_probability``, below 1 for such a sample
(``ReviewRequest.audited``). Reviewers are taken as truth: an audited review whose consolidated
label differs from the model's (``review.corrected``) is an error of what the router accepts
unreviewed. The review role counts, per route and model label, audited reviews and errors, and
:mod:`~stream_router.review.confidence` turns the counts into an anytime-valid bound on the
error rate, compared with the route's ``review.audit`` target (metrics, an alert).

**What counts.** A review whose request is audited, was decided under the configured
``policies.version`` (the monitor starts afresh with a new version: raising a threshold and
bumping the version measures the new configuration alone), and whose outcome is published with
decision ``reviewed`` and an answer (a label). Unreviewed, dead-lettered and unanswered reviews
give no label and are not counted.

**Exactly once.** Each such review is in the counts exactly once, whatever crashes, rebalances
and republished outcomes happen. The counts are ledger state, kept like the budget counters:
each review-requests partition has an :class:`AuditTally` under the ledger key ``_audit``
(``review/ledger.py``), written only by the partition's owner, with a sequence number ``seq``.
The invariant: *the tally holds exactly the samples numbered 1 to ``tally.seq``, and every
counted review's CLOSED ledger entry carries its sample* (:class:`AuditSample`, numbered).
It holds because:

1. A review is counted only by the write that closes its ledger entry (``ReviewScheduler.
   _close``): the CLOSED record carries the sample, numbered ``tally.seq + 1``, and the tally,
   with the sample folded in and ``seq`` advanced, is written right after; both acknowledged,
   under the partition's audit lock, so samples are numbered and folded one at a time, in order.
   If either write fails, this process no longer knows what the ledger holds (the close may have
   landed without its acknowledgement): it closes no more audited reviews of the partition
   (:class:`AuditUnsure`; the process is stopping anyway) and leaves them to the next owner, whose
   recovery (3) reads what landed. Publishing an outcome counts nothing.
2. An entry is closed once: a CLOSED entry has no next step, and a redelivered request or a
   late notice finds it and does nothing (scheduler rules 1 and 3). An outcome published again
   after a crash belongs to an entry whose close never landed (it is still ENDED): its close,
   when it lands, is the first and only one, numbered like the lost one would have been.
3. A new owner reads the partition's ledger whole (restart or rebalance) and, before driving
   it, folds the samples of CLOSED entries numbered above the tally's ``seq`` (the close
   landed, the tally write did not), in order, and writes the tally (:func:`recover`). Samples
   at or below ``seq`` are in the tally already, so nothing is counted twice.
4. A CLOSED entry is deleted only ``review.ledger_retention_s`` (days) after its close, long
   after its sample was folded (at once, or by the recovery that precedes any pruning).

Like every ledger record, these writes are not fenced: a write of an owner that lost the
partition, already in flight at the revoke (milliseconds), could land after the new owner read
the ledger (a rebalance and a whole read: seconds). Counting is per partition (``AuditTally``),
never per route: a key per route would be written by every instance and the last writer would
win (the argument of ``review/shares.py``). ``tests/unit/review/test_scheduler.py`` proves the
invariant under its combined faults, with writes also refused exactly where counting happens
(the audited close, the tally), and in the crashes that matter: between the close and the
tally, between the published outcome and the close (the outcome is published twice), and a
process that goes on closing reviews after a tally write failed (as it does while it stops).

**Bounded labels.** Metric label values never come from a record alone: a route is shown only
if the configuration has it (:meth:`ReviewRoutes.label`), and a partition admits at most
``review.audit.max_labels`` model labels per route (the first seen); later ones, labels longer
than :data:`MAX_LABEL_CHARS`, with control characters or equal to a name of ours, are counted
as :data:`OTHER_LABEL`. A forged stream therefore adds at most ``topic_partitions x
max_labels`` series per route, and a tally stays small (at most :data:`MAX_VERSIONS` versions).
:data:`ALL_LABELS` is each route's total over its labels.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import Gauge

from stream_router.errors import StreamRouterError
from stream_router.metrics import ReviewMetrics
from stream_router.review.confidence import BetaPrior, Estimate, estimate, log_threshold
from stream_router.review.request import UNCONFIGURED_ROUTE, ReviewRequest, ReviewRoutes
from stream_router.settings import AuditSettings

logger = logging.getLogger(__name__)

TALLY_FORMAT = 1
#: The label value of a route's total over its model labels.
ALL_LABELS = "(all)"
#: The label value of model labels past ``review.audit.max_labels`` (or not fit to show).
OTHER_LABEL = "(other)"
#: Longest model label shown as it is.
MAX_LABEL_CHARS = 64
#: Policy versions a tally keeps counts of (a rollout runs two at once; older ones are dropped).
MAX_VERSIONS = 3

#: route -> model label (as counted) -> (audited reviews, errors)
Counts = Mapping[str, Mapping[str, tuple[int, int]]]


class AuditUnsure(StreamRouterError):
    """A write that counts an audited review failed earlier in this process: the partition's
    counts are known again only to an owner that reads its ledger, so no more audited reviews
    are closed here (they would be numbered from a tally the ledger may no longer match)."""


@dataclass(frozen=True)
class Observation:
    """What one audited, answered review says: its route, the model's label, an error or not."""

    route: str
    label: str  #: the model's label, as the request has it
    error: bool


@dataclass(frozen=True)
class AuditSample:
    """A counted review, as its CLOSED ledger entry carries it (``seq``: its number in the
    partition's tally; ``label`` as counted, after the label cap)."""

    seq: int
    version: str
    route: str
    label: str
    error: bool

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "version": self.version, "route": self.route,
                "label": self.label, "error": self.error}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> AuditSample:
        """Raises KeyError, TypeError or ValueError for anything but an encoded sample."""
        seq, error = data["seq"], data["error"]
        strings = [data[name] for name in ("version", "route", "label")]
        if type(seq) is not int or seq < 1 or type(error) is not bool:
            raise ValueError(f"audit sample {data!r} has no valid seq or error")
        if not all(isinstance(text, str) for text in strings):
            raise TypeError(f"audit sample {data!r} has a non-string name")
        return cls(seq, strings[0], strings[1], strings[2], error)


@dataclass(frozen=True)
class AuditTally:
    """A partition's audit counts: the samples numbered 1 to ``seq``, per policy version."""

    seq: int = 0
    #: version -> route -> label -> (n, k); ``updated`` orders versions by their last sample
    versions: Mapping[str, Counts] = field(default_factory=dict)
    updated: Mapping[str, int] = field(default_factory=dict)

    def counts(self, version: str) -> Counts:
        return self.versions.get(version, {})

    def fold(self, sample: AuditSample) -> AuditTally:
        """The tally with ``sample`` (numbered ``seq + 1``) counted."""
        if sample.seq != self.seq + 1:
            raise ValueError(f"audit sample {sample.seq} folded into a tally at {self.seq}")
        routes = {route: dict(labels) for route, labels in self.counts(sample.version).items()}
        labels = routes.setdefault(sample.route, {})
        n, k = labels.get(sample.label, (0, 0))
        labels[sample.label] = (n + 1, k + int(sample.error))
        versions = {**self.versions, sample.version: routes}
        updated = {**self.updated, sample.version: sample.seq}
        for old in sorted(updated, key=updated.__getitem__)[: max(0, len(updated) - MAX_VERSIONS)]:
            del versions[old], updated[old]
        return AuditTally(sample.seq, versions, updated)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": TALLY_FORMAT,
                "seq": self.seq,
                "versions": {
                    version: {"updated": self.updated.get(version, 0), "routes": {
                        route: {label: list(nk) for label, nk in labels.items()}
                        for route, labels in routes.items()
                    }}
                    for version, routes in self.versions.items()
                },
            }
        )  # fmt: skip

    @classmethod
    def decode(cls, value: bytes) -> AuditTally:
        """Raises ValueError (orjson's decode error is one), KeyError or TypeError."""
        data = orjson.loads(value)
        if data.get("v") != TALLY_FORMAT:
            raise ValueError(f"audit tally format {data.get('v')!r}, expected {TALLY_FORMAT}")
        versions: dict[str, Counts] = {}
        updated: dict[str, int] = {}
        for version, body in data["versions"].items():
            updated[version] = int(body["updated"])
            versions[version] = {
                str(route): {str(label): _pair(nk) for label, nk in labels.items()}
                for route, labels in body["routes"].items()
            }
        return cls(int(data["seq"]), versions, updated)


def _pair(value: Any) -> tuple[int, int]:
    n, k = value
    if type(n) is not int or type(k) is not int or not 0 <= k <= n:
        raise ValueError(f"audit counts {value!r} are not (n, k) with 0 <= k <= n")
    return n, k


def recover(tally: AuditTally, samples: Iterable[AuditSample | None]) -> AuditTally:
    """``tally`` with the samples numbered above its ``seq`` folded in, in order (rule 3).

    ``samples`` are those of the partition's CLOSED entries (None for entries without one).
    """
    pending = sorted((s for s in samples if s is not None and s.seq > tally.seq),
                     key=lambda s: s.seq)  # fmt: skip
    for found in pending:
        sample = found
        if found.seq != tally.seq + 1:  # only a lost or foreign ledger record can do this
            logger.warning("audit sample %d found, tally at %d; counting it as %d",
                           found.seq, tally.seq, tally.seq + 1)  # fmt: skip
            sample = dataclasses.replace(found, seq=tally.seq + 1)
        tally = tally.fold(sample)
    return tally


@dataclass(frozen=True)
class Auditor:
    """What the review role counts (see the module docstring), from its configuration."""

    settings: AuditSettings
    version: str  #: ``policies.version``: only reviews decided under it are counted

    def observe(
        self, request: ReviewRequest | None, outcome: str, record: bytes | None
    ) -> Observation | None:
        """The observation an outcome gives, or None when it does not count.

        ``record`` is the published envelope: its ``review.label`` (an answer was given) and
        ``review.corrected`` (it differs from the model's) are what consumers read too.
        """
        if request is None or outcome != "reviewed" or record is None:
            return None
        if not request.audited or request.policy_version != self.version:
            return None
        try:
            review = orjson.loads(record)["review"]
            answered, corrected = review["label"] is not None, review["corrected"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("review %s: its reviewed record has no review label (%r); not "
                           "counted as an audit", request.loop_name, exc)  # fmt: skip
            return None
        if not answered or not isinstance(corrected, bool):
            return None
        return Observation(request.route, request.label, corrected)

    def sample(self, tally: AuditTally, seen: Observation) -> AuditSample:
        """The sample numbered next in ``tally``, its label capped (module docstring)."""
        admitted = tally.counts(self.version).get(seen.route, {})
        label = OTHER_LABEL if _unfit(seen.label) else seen.label
        if label not in admitted and len(set(admitted) - {OTHER_LABEL}) >= self.settings.max_labels:
            label = OTHER_LABEL
        return AuditSample(tally.seq + 1, self.version, seen.route, label, seen.error)


def _unfit(label: str) -> bool:
    return (
        len(label) > MAX_LABEL_CHARS
        or label in (ALL_LABELS, OTHER_LABEL)
        or not label.isprintable()
    )


@dataclass(frozen=True)
class AuditEstimate:
    """One route and label's confidence sequence over the partitions given."""

    route: str
    label: str
    target: float
    estimate: Estimate


def estimates(
    tallies: Iterable[AuditTally], auditor: Auditor, routes: ReviewRoutes
) -> list[AuditEstimate]:
    """Per configured route and label (and :data:`ALL_LABELS`), the confidence sequence of the
    counts of ``auditor.version`` in ``tallies`` (one per partition), at ``review.audit.delta``."""
    streams: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for tally in tallies:
        for route, labels in tally.counts(auditor.version).items():
            if routes.label(route) == UNCONFIGURED_ROUTE:
                continue  # counted under a configuration that had it
            for label, nk in labels.items():
                streams.setdefault((route, label), []).append(nk)
            total = (sum(n for n, _ in labels.values()), sum(k for _, k in labels.values()))
            streams.setdefault((route, ALL_LABELS), []).append(total)
    settings, found = auditor.settings, []
    for (route, label), counts in sorted(streams.items()):
        target = settings.target_for(route)
        prior = BetaPrior.for_target(target)
        found.append(
            AuditEstimate(route, label, target, estimate(counts, prior, settings.delta, target))
        )
    return found


class AuditReport:
    """Publishes the audit metrics of the partitions this instance owns (``ReviewMetrics``:
    ``stream_router_review_audit_*``); :meth:`publish` runs on each pass of the monitor."""

    def __init__(self, metrics: ReviewMetrics, auditor: Auditor, routes: ReviewRoutes) -> None:
        self.metrics = metrics
        self.auditor = auditor
        self.routes = routes
        self._shown: set[tuple[str, str]] = set()
        metrics.audit_log_evidence_threshold.set(log_threshold(auditor.settings.delta))
        for route in routes.flows:
            metrics.audit_target_error.labels(route).set(auditor.settings.target_for(route))

    def publish(self, tallies: Sequence[AuditTally]) -> None:
        metrics = self.metrics
        shown: set[tuple[str, str]] = set()
        for found in estimates(tallies, self.auditor, self.routes):
            labels = (found.route, found.label)
            shown.add(labels)
            value = found.estimate
            metrics.audit_reviews.labels(*labels).set(value.n)
            metrics.audit_errors.labels(*labels).set(value.k)
            metrics.audit_error_lower.labels(*labels).set(value.lower)
            metrics.audit_error_upper.labels(*labels).set(value.upper)
            metrics.audit_log_evidence.labels(*labels).set(value.log_evidence)
        for labels in self._shown - shown:  # partitions moved away: another instance shows them
            for gauge in self._gauges():
                gauge.remove(*labels)
        self._shown = shown

    def _gauges(self) -> list[Gauge]:
        metrics = self.metrics
        return [metrics.audit_reviews, metrics.audit_errors, metrics.audit_error_lower,
                metrics.audit_error_upper, metrics.audit_log_evidence]  # fmt: skip
