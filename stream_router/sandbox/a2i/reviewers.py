"""Simulated reviewers: what the workers of a human loop answer, and when.

A loop's fate is planned once, when it starts, from a random generator seeded with the flow's
seed and the loop name: the same loop always gets the same workers, timings and answers, which
makes runs reproducible and lets the plan survive an emulator restart as plain data.

What a worker answers follows the flow's worker template (``template.py``): the page is rendered
with the loop's input, and each crowd element on it gets an answer of the shape A2I stores for
it. The element named ``answer_name`` (else the first classifier-like one) carries the judgement:
the true label is the input's ground-truth field when present, else the model's label; with
probability ``error_rate`` the worker picks another of the element's categories. A loop expires
(Failed, FailureCode ``Expired``) when no worker is found: by ``abandon_rate``, or when a
worker's pickup time exceeds the task availability lifetime.

A person in the worker portal (``portal.py``) can take a task no simulated worker holds yet: the
plan then has a human slot, open until they submit (or their task time limit ends).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_router.sandbox.a2i.template import CrowdElement, simulate_answer
from stream_router.sandbox.settings import FlowDefinition, Latency


@dataclass(frozen=True)
class WorkerAnswer:
    """One worker's submission, with times in epoch seconds. ``content`` is the answerContent;
    a ``human`` slot's is None until the person submits (``submitted_at`` is their deadline)."""

    worker_id: str
    worker_sub: str
    accepted_at: float
    submitted_at: float
    content: dict[str, Any] | None = field(default=None)
    human: bool = False

    @property
    def pending(self) -> bool:
        return self.human and self.content is None

    def label(self, name: str) -> str | None:
        """The label this worker chose in classifier ``name`` (``{name: {"label": ...}}``)."""
        chosen = (self.content or {}).get(name)
        label = chosen.get("label") if isinstance(chosen, dict) else None
        return label if isinstance(label, str) else None


@dataclass(frozen=True)
class LoopPlan:
    """How a loop will end: Completed at ``ends_at`` with ``answers``, expired, or failed
    (``failure``: the template could not be shown with this input)."""

    expires: bool
    ends_at: float
    answers: tuple[WorkerAnswer, ...]
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "expires": self.expires,
            "ends_at": self.ends_at,
            "answers": [a.__dict__ for a in self.answers],
            "failure": self.failure,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopPlan:
        answers = []
        for stored in data["answers"]:
            answer = dict(stored)
            label = answer.pop("label", None)  # plans stored before answers followed templates
            if label is not None and answer.get("content") is None:
                answer["content"] = {"label": {"label": label}}
            answers.append(WorkerAnswer(**answer))
        return cls(
            expires=bool(data["expires"]),
            ends_at=float(data["ends_at"]),
            answers=tuple(answers),
            failure=data.get("failure"),
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
    flow: FlowDefinition,
    loop_name: str,
    input_content: Any,
    created_at: float,
    page: Sequence[CrowdElement],
) -> LoopPlan:
    """Decide, reproducibly, who answers the loop, what (for the crowd elements of ``page``, the
    flow's template rendered with the input), and when."""
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
        content = simulate_answer(
            page,
            truth=truth,
            truth_element=reviewers.answer_name,
            error_rate=reviewers.error_rate,
            rng=rng,
        )
        worker_seed = hashlib.sha256(f"{reviewers.seed}:{flow.name}:worker{index}".encode())
        answers.append(
            WorkerAnswer(
                worker_id=worker_seed.hexdigest()[:16],
                worker_sub=_uuid_like(worker_seed.hexdigest()[16:48]),
                accepted_at=accepted_at,
                submitted_at=accepted_at + work_s,
                content=content,
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
    """The ``humanAnswers`` array of output.json: one entry per worker who submitted."""
    entries: list[dict[str, Any]] = []
    for answer in plan.answers:
        if answer.content is None:
            continue  # a person who never submitted
        entry: dict[str, Any] = {
            "answerContent": answer.content,
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


def portal_worker(seed: str = "portal") -> tuple[str, str]:
    """The worker id and Cognito ``sub`` of the person using the worker portal."""
    digest = hashlib.sha256(f"stream-router-sandbox:{seed}".encode()).hexdigest()
    return digest[:16], _uuid_like(digest[16:48])


def claimable(plan: LoopPlan, now: float, task_count: int) -> bool:
    """True when a person may take the loop's task now: no simulated worker holds the slot they
    would take, and they hold none of its slots already. A loop nobody would pick up (planned to
    expire) can be taken until it expires, when it needs one worker; one needing several would
    expire anyway, since the portal is one worker."""
    if plan.failure is not None or any(a.human for a in plan.answers):
        return False
    if plan.expires:
        return task_count == 1 and now < plan.ends_at
    return any(a.accepted_at > now for a in plan.answers)


def claim(plan: LoopPlan, now: float, time_limit_s: float, worker: tuple[str, str]) -> LoopPlan:
    """``plan`` with a person in the slot of the simulated worker who would have come last; the
    person has ``time_limit_s`` to submit (see :func:`claimable`)."""
    slot = WorkerAnswer(worker[0], worker[1], now, now + time_limit_s, None, human=True)
    if plan.expires:
        return LoopPlan(expires=False, ends_at=slot.submitted_at, answers=(slot,))
    free = [a for a in plan.answers if a.accepted_at > now]
    latest = max(free, key=lambda a: a.accepted_at)
    answers = tuple(slot if a is latest else a for a in plan.answers)
    return LoopPlan(False, max(a.submitted_at for a in answers), answers)


def submit(plan: LoopPlan, content: dict[str, Any], now: float) -> LoopPlan:
    """``plan`` with the person's answer in; the loop ends once every worker has submitted."""
    answers = tuple(
        WorkerAnswer(a.worker_id, a.worker_sub, a.accepted_at, now, content, human=True)
        if a.pending
        else a
        for a in plan.answers
    )
    return LoopPlan(False, max(a.submitted_at for a in answers), answers)
