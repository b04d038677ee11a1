"""``sample``: deterministic audit sampling of a fixed percentage of predictions.

::

    {type: sample, percent: 2, salt: audit-2024-q3}

Meant to be the **last route**: placed after the routes that catch doubtful predictions, it
sends a steady share of the otherwise-accepted ones to review, which measures what the other
policies let through (and gives reviewers known-good examples).

The decision is a stable function of the event id, so a redelivered event gets the same verdict
and never a second paid review, in any process and on any partition::

    bucket = int.from_bytes(blake2b(event_id.encode("utf-8"), key=salt, digest_size=8)) / 2**64
    review = bucket < percent / 100           # compared exactly, not in float arithmetic

(``salt`` and the id UTF-8 encoded, lone surrogates passed through; the digest read
big-endian.) Only the event id and the salt count: not the topic, partition, offset or time.
Change the salt to draw a different, independent sample. Raising ``percent`` keeps every id
sampled at the lower percent. An event without an id of its own gets one derived from its Kafka
coordinates; it is still sampled stably on redelivery, but a copy on another topic is a new id.
"""

from __future__ import annotations

from fractions import Fraction
from hashlib import blake2b
from math import ceil
from typing import Final

from pydantic import Field, field_validator

from stream_router.models import Prediction, new_tuple
from stream_router.policies.base import EventPolicy, PolicyParams, Verdict
from stream_router.policies.fields import NumberDisplay

_DIGEST_BYTES: Final = 8
#: The hash's range: ``bucket`` is an integer in ``[0, BUCKETS)``.
BUCKETS: Final = 2 ** (8 * _DIGEST_BYTES)
#: ``bucket * _PER_BUCKET`` is ``bucket / BUCKETS`` to the last bit (scaling by a power of two
#: rounds nothing; the one rounding is the integer's to a float, as in the division), at a
#: third of the cost of dividing integers this large.
_PER_BUCKET: Final = 2.0 ** -(8 * _DIGEST_BYTES)
#: BLAKE2b's longest key.
MAX_SALT_BYTES: Final = 64


class SampleParams(PolicyParams):
    percent: float = Field(
        ge=0.0,
        le=100.0,
        allow_inf_nan=False,
        description="Share of predictions to review, in percent (0 to 100).",
    )
    salt: str = Field(
        default="",
        description="Key of the hash (at most 64 UTF-8 bytes); a new salt draws a new sample.",
    )

    @field_validator("salt")
    @classmethod
    def _salt_fits(cls, salt: str) -> str:
        size = len(salt.encode("utf-8"))
        if size > MAX_SALT_BYTES:
            raise ValueError(f"salt is {size} bytes in UTF-8; at most {MAX_SALT_BYTES} allowed")
        return salt


class SamplePolicy(EventPolicy[SampleParams]):
    """Review a stable ``percent`` of predictions, chosen by a keyed hash of the event id."""

    params_model = SampleParams
    summary = "review a deterministic percent of predictions (audit sample; put it last)"

    def __init__(self, name: str, params: SampleParams) -> None:
        super().__init__(name, params)
        #: The salt as the hash's key: sample policies with one salt read the same draw.
        self.salt_key = params.salt.encode("utf-8")
        self._hasher = blake2b(digest_size=_DIGEST_BYTES, key=self.salt_key)
        #: Review when ``bucket < threshold``. Exact, without float rounding:
        #: hash < percent / 100 * 2**64  <=>  hash < ceil(...).
        self.threshold = ceil(Fraction(params.percent) * BUCKETS / 100)
        fraction = params.percent / 100
        self._fraction_text = repr(fraction)
        self._display = NumberDisplay(fraction)
        percent_text = f"{params.percent:g}"
        if float(percent_text) != params.percent:
            percent_text = repr(params.percent)
        self._sample_text = f"{percent_text}% audit sample"

    def bucket(self, event_id: str) -> int:
        """The event id's hash as an integer in ``[0, 2**64)``."""
        hasher = self._hasher.copy()
        hasher.update(event_id.encode("utf-8", "surrogatepass"))
        return int.from_bytes(hasher.digest(), "big")

    def check(self, prediction: Prediction) -> Verdict:
        bucket = self.bucket(prediction.event_id)
        shown = self._display.show(bucket * _PER_BUCKET)
        if bucket < self.threshold:
            reason = f"in {self._sample_text} (bucket {shown} < {self._fraction_text})"
            return new_tuple(Verdict, (True, reason))
        reason = f"not in {self._sample_text} (bucket {shown} >= {self._fraction_text})"
        return new_tuple(Verdict, (False, reason))
