"""Random secrets and ids the sandbox generates: none of them starts with ``-``.

The sandbox hands what it generates to other programs on their command lines (Label Studio's
admin password and API token to ``label-studio start``, Kafka's cluster id to its storage
tool, the SCRAM password to the same tool). A value starting with ``-`` reads as an option
there (``label-studio start --password -Xq...`` fails), and URL-safe base64 starts with ``-``
once in 64 draws. Every secret or id of the sandbox comes from this module, whose functions
draw again until the first character is not ``-``: the values keep their length and alphabet,
and are uniform over those that do not start with ``-``. (Kafka's own ``Uuid.randomUuid`` does
the same for its ids.) ``tests/unit/test_sandbox_tokens.py`` checks both, and that no other
sandbox module draws a secret itself.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable


def urlsafe_token(nbytes: int) -> str:
    """Like :func:`secrets.token_urlsafe` (``nbytes`` random bytes, URL-safe base64 without
    padding), never starting with ``-``."""
    return _not_an_option(lambda: secrets.token_urlsafe(nbytes))


def hex_token(nbytes: int) -> str:
    """Like :func:`secrets.token_hex` (``2 * nbytes`` hex digits; one never starts with ``-``,
    it comes from here so that every sandbox secret does)."""
    return _not_an_option(lambda: secrets.token_hex(nbytes))


def kafka_cluster_id() -> str:
    """A Kafka cluster id as ``kafka-storage.sh random-uuid`` prints one: a random (version 4)
    UUID in URL-safe base64 without padding (22 characters), never starting with ``-``."""
    return _not_an_option(
        lambda: base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
    )


def _not_an_option(draw: Callable[[], str]) -> str:
    while True:
        value = draw()
        if not value.startswith("-"):
            return value
