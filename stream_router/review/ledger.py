"""The ledger: one entry per open review, kept in the review application's table.

An entry is what the review path must remember between starting a review and publishing its
outcome: the request (for the final envelope), the route and flow, when it started and when to
check on it, and the attempt (escalations start the same event again on another flow, under a
new name). Entries are plain dicts in the table (JSON), converted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LedgerEntry:
    """An open review. ``name`` is this attempt's review name; ``first_name`` the event's."""

    name: str
    first_name: str
    route: str
    flow: str
    attempt: int
    started_s: float
    deadline_s: float
    request: Mapping[str, Any] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        return cls(
            name=str(data["name"]),
            first_name=str(data["first_name"]),
            route=str(data["route"]),
            flow=str(data["flow"]),
            attempt=int(data["attempt"]),
            started_s=float(data["started_s"]),
            deadline_s=float(data["deadline_s"]),
            request=dict(data["request"]),
        )
