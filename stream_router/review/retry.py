"""The one retry policy of the review path's upstream calls (the review backend, S3).

An upstream call is made once per try; the SDK's own retries (botocore's standard mode,
``aws.max_attempts``) sit below it for transport errors. When a try fails with a retriable
:class:`~stream_router.errors.UpstreamError` the work is tried again after
:meth:`RetryPolicy.delay`: exponential from ``base_s``, capped at ``max_s``, with full jitter in
its upper half, and never sooner than the backend's own hint (``retry_after_s``). There is no
limit on tries: the ledger keeps the work, a long outage shows as the age of the oldest pending
entry (metrics, alerts), and a restart loses nothing.

The scheduler (``review/scheduler.py``) keeps the count of failures per entry; a throttled start
also pauses the shared rate limiter for the same delay, so every start waits, not only the one
that was refused.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class RetryPolicy:
    base_s: float = 0.5
    max_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int, hint_s: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
        ceiling = min(self.max_s, self.base_s * 2 ** max(0, failures - 1))
        return max(hint_s or 0.0, self.rng.uniform(ceiling / 2, ceiling))
