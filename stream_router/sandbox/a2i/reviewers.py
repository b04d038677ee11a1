"""Simulated reviewers: what the workers of a human loop answer, and when.

A loop's fate is planned once, when it starts, from a random generator seeded with the flow's
seed and the loop name: the same loop always gets the same workers, timings and answers, which
makes runs reproducible and lets the plan survive an emulator restart as plain data.

Answer rule, per worker: the true label is the input's ground-truth field when present, else the
model's label; with probability ``error_rate`` the worker picks another label from ``labels``.
A loop expires (Failed, FailureCode ``Expired``) when no worker is found: by ``abandon_rate``, or
when a worker's pickup time exceeds the task availability lifetime.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stream_router.sandbox.settings import FlowDefinition, Latency


@dataclass(frozen=True)
class WorkerAnswer:
    """One worker's submission, with times in epoch seconds."""

    worker_id: str
    worker_sub: str
    label: str
    accepted_at: float
    submitted_at: float


@dataclass(frozen=True)
class LoopPlan:
    """How a loop will end: Completed at ``ends_at`` with ``answers``, or expired."""

    expires: bool
    ends_at: float
    answers: tuple[WorkerAnswer, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "expires": self.expires,
            "ends_at": self.ends_at,
            "answers": [a.__dict__ for a in self.answers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopPlan:
        return cls(
            expires=bool(data["expires"]),
            ends_at=float(data["ends_at"]),
            answers=tuple(WorkerAnswer(**a) for a in data["answers"]),
        )

    def held_at(self, when: float) -> bool:
        """True when every worker had accepted the task by ``when`` (a stop cannot undo it)."""
        return bool(self.answers) and all(a.accepted_at <= when for a in self.answers)


def sample(latency: Latency, rng: random.Random) -> float:
    """Draw one duration in seconds."""
    if latency.distribution == "fixed" or latency.median_s == 0:
        value = latency.median_s
    elif latency.distribution == "uniform":
        half = latency.median_s * latency.spread
        value = rng.uniform(max(0.0, latency.median_s - half), latency.median_s + half)
    else:
        value = latency.median_s * math.exp(rng.gauss(0.0, latency.spread))
    if latency.max_s is not None:
        value = min(value, latency.max_s)
    return value


def lookup(document: Any, dotted_path: str) -> Any:
    """Value at ``a.b.c`` in nested mappings, or None when any step is missing."""
    node = document
    for part in dotted_path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def true_label(flow: FlowDefinition, input_content: Any) -> str | None:
    """The label a careful reviewer gives: ground truth when present, else the model's."""
    for path in (flow.reviewers.ground_truth_path, flow.reviewers.model_label_path):
        value = lookup(input_content, path)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    return None


def _rng(flow: FlowDefinition, loop_name: str) -> random.Random:
    digest = hashlib.sha256(f"{flow.reviewers.seed}:{flow.name}:{loop_name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plan_loop(
    flow: FlowDefinition, loop_name: str, input_content: Any, created_at: float
) -> LoopPlan:
    """Decide, reproducibly, who answers the loop, what, and when."""
    rng = _rng(flow, loop_name)
    reviewers = flow.reviewers
    lifetime_end = created_at + flow.task_availability_lifetime_s
    if rng.random() < reviewers.abandon_rate:
        return LoopPlan(expires=True, ends_at=lifetime_end, answers=())

    truth = true_label(flow, input_content)
    answers: list[WorkerAnswer] = []
    for index in range(flow.task_count):
        accepted_at = created_at + sample(reviewers.pickup, rng)
        if accepted_at > lifetime_end:
            return LoopPlan(expires=True, ends_at=lifetime_end, answers=())
        work_s = min(sample(reviewers.work, rng), flow.task_time_limit_s)
        label = truth if truth is not None else ""
        wrong = [x for x in reviewers.labels if x != truth]
        if wrong and (truth is None or rng.random() < reviewers.error_rate):
            label = rng.choice(wrong)
        worker_seed = hashlib.sha256(f"{reviewers.seed}:{flow.name}:worker{index}".encode())
        answers.append(
            WorkerAnswer(
                worker_id=worker_seed.hexdigest()[:16],
                worker_sub=_uuid_like(worker_seed.hexdigest()[16:48]),
                label=label,
                accepted_at=accepted_at,
                submitted_at=accepted_at + work_s,
            )
        )
    return LoopPlan(
        expires=False, ends_at=max(a.submitted_at for a in answers), answers=tuple(answers)
    )


def _uuid_like(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"


def iso_millis(epoch_s: float) -> str:
    """``2020-12-28T18:59:15.191Z``: the timestamp form of A2I's output and events."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def human_answers(
    flow: FlowDefinition, plan: LoopPlan, region: str, user_pool: str = "sandbox"
) -> list[dict[str, Any]]:
    """The ``humanAnswers`` array of output.json for a crowd-classifier template."""
    entries: list[dict[str, Any]] = []
    for answer in plan.answers:
        entry: dict[str, Any] = {
            "answerContent": {flow.reviewers.answer_name: {"label": answer.label}},
            "acceptanceTime": iso_millis(answer.accepted_at),
            "submissionTime": iso_millis(answer.submitted_at),
            "timeSpentInSeconds": round(answer.submitted_at - answer.accepted_at, 3),
            "workerId": answer.worker_id,
        }
        if flow.reviewers.workforce == "private":
            entry["workerMetadata"] = {
                "identityData": {
                    "identityProviderType": "Cognito",
                    "issuer": f"https://cognito-idp.{region}.amazonaws.com/{region}_{user_pool}",
                    "sub": answer.worker_sub,
                }
            }
        entries.append(entry)
    return entries
