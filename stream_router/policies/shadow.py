"""Shadow mode: a policy that is evaluated and counted, but never sends anything to review."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from stream_router.models import Prediction
from stream_router.policies.base import Policy, PolicyParams, Verdict


class ShadowPolicy(Policy[PolicyParams]):
    """Wraps a policy: its review verdicts become accepts, counted in :attr:`hits`.

    The ingest loop reads and resets ``hits`` after each batch to export them as metrics.
    """

    params_model = PolicyParams

    def __init__(self, inner: Policy[Any]) -> None:
        super().__init__(inner.name, PolicyParams())
        self.inner = inner
        self.hits: Counter[str] = Counter()

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        verdicts = self.inner.evaluate(batch)
        out: list[Verdict] = []
        for verdict in verdicts:
            if verdict.review:
                self.hits[self.name] += 1
                out.append(Verdict(False, f"shadow {self.name} would review: {verdict.reason}"))
            else:
                out.append(verdict)
        return out

    def children(self) -> Sequence[Policy[Any]]:
        return (self.inner,)

    def start(self) -> None:
        self.inner.start()

    def close(self) -> None:
        self.inner.close()
