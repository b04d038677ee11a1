"""Composite policies: ``all``, ``any`` and ``not`` over child policies.

::

    {type: all, policies: [{type: field, field: model_name, op: eq, value: fraud-v2},
                           {type: confidence, below: 0.9}]}

``all`` reviews when every child says review; ``any`` when at least one does; ``not`` inverts
its one child. Children are evaluated over the whole batch (no short-circuit per event), which
keeps batch-oriented children fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from pydantic import Field

from stream_router.errors import PolicyLoadError
from stream_router.models import Prediction, new_tuple
from stream_router.policies.base import Builder, Policy, PolicyParams, Verdict


class CompositeParams(PolicyParams):
    policies: list[dict[str, Any]] = Field(min_length=1, description="Child policy specs.")


class NotParams(PolicyParams):
    policy: dict[str, Any] = Field(description="The policy to invert.")


class _Composite(Policy[CompositeParams]):
    """Children evaluated over the whole batch; per event, the first ``settles`` verdict wins."""

    params_model = CompositeParams
    #: The verdict (review or not) that settles an event at once when a child gives it.
    settles: ClassVar[bool]
    #: How the children's reasons are joined when none settles the event.
    joiner: ClassVar[str]

    def __init__(self, name: str, params: CompositeParams, members: Sequence[Policy[Any]]) -> None:
        super().__init__(name, params)
        self.members = tuple(members)

    @classmethod
    def create(cls, name: str, params: Mapping[str, Any], build: Builder, path: str) -> Self:
        validated = cls.params_model.model_validate(dict(params))
        members = [
            build(spec, f"{path}.policies.{index}") for index, spec in enumerate(validated.policies)
        ]
        return cls(name, validated, members)

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        columns = [member.evaluate(batch) for member in self.members]
        if len(columns) == 1:
            return columns[0]
        settles, joiner = self.settles, self.joiner
        out: list[Verdict] = []
        append = out.append
        if len(columns) == 2:  # the usual pair: the same, without a loop per event
            for first, second in zip(*columns, strict=True):
                if first.review == settles:
                    append(first)
                elif second.review == settles:
                    append(second)
                else:
                    append(new_tuple(Verdict, (not settles, first.reason + joiner + second.reason)))
            return out
        for row in zip(*columns, strict=True):
            for verdict in row:
                if verdict.review == settles:
                    append(verdict)
                    break
            else:
                append(new_tuple(Verdict, (not settles, joiner.join([v.reason for v in row]))))
        return out

    def children(self) -> Sequence[Policy[Any]]:
        return self.members

    def start(self) -> None:
        for member in self.members:
            member.start()

    def close(self) -> None:
        for member in self.members:
            member.close()


class AllPolicy(_Composite):
    """Review when every child policy says review."""

    summary = "review when all child policies say review"
    settles = False
    joiner = " and "


class AnyPolicy(_Composite):
    """Review when at least one child policy says review."""

    summary = "review when any child policy says review"
    settles = True
    joiner = "; "


class NotPolicy(Policy[NotParams]):
    """Review exactly when the child policy does not."""

    params_model = NotParams
    summary = "invert one child policy"

    def __init__(self, name: str, params: NotParams, member: Policy[Any]) -> None:
        super().__init__(name, params)
        self.member = member

    @classmethod
    def create(cls, name: str, params: Mapping[str, Any], build: Builder, path: str) -> Self:
        validated = cls.params_model.model_validate(dict(params))
        if not isinstance(validated.policy, Mapping):
            raise PolicyLoadError(f"{path}.policy: must be a policy spec")
        return cls(name, validated, build(validated.policy, f"{path}.policy"))

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        return [Verdict(not v.review, f"not ({v.reason})") for v in self.member.evaluate(batch)]

    def children(self) -> Sequence[Policy[Any]]:
        return (self.member,)

    def start(self) -> None:
        self.member.start()

    def close(self) -> None:
        self.member.close()
