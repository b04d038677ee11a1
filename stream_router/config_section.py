"""The base of every configuration section, and of a review backend's own section.

It lives apart from ``settings.py`` so that a backend's package can declare its section
(``aws/settings.py``, ``labelstudio/settings.py``) without importing the whole configuration,
and the backend table (``backends.py``) can name those sections while ``settings.py`` reads the
table.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A part of the configuration: unknown keys are refused, values cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSettings(Section):
    """A review backend's own section, ``review.backend``.

    ``name`` is the backend's line in the table of ``stream_router/backends.py``; each subclass
    declares it as a ``Literal`` of that name with that default, which is how a configuration
    picks its section (``review.backend: {name: label-studio, ...}``, or the short
    ``review.backend: label-studio`` when the defaults do).
    """

    name: str

    def check_flows(self, named_flows: Sequence[tuple[str, str]]) -> None:
        """Checks that need the rest of the configuration: ``named_flows`` are the settings that
        name a review flow, as ``(where, flow)`` (``Settings.named_flows``). Raises ValueError
        naming the setting; a backend that checks its flows only at start-up (A2I: against
        SageMaker) keeps this default, which checks nothing."""
        del named_flows
