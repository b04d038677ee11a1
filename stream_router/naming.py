"""Human loop names: deterministic, so a redelivered request cannot start a second paid review.

A2I's rule for names: 1-63 characters matching ``^[a-z0-9](-*[a-z0-9])*$``. The name is made of
a readable prefix of the event id (for operators) and a hash of the event identity and policy
version (for uniqueness)::

    evt-0042-1f3a9c0b2d4e6f8a1b3c5d7e9f0a

The same event under the same policy version always gets the same name; a new policy version
gives new names (a re-evaluation is a new review). Names leave room for an escalation suffix
(``-a2``): the review path keys everything about a review by its first name, so all attempts of
one event land on the same partition.
"""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 63
NAME_RE = re.compile(r"^[a-z0-9](-*[a-z0-9])*$")
_HASH_CHARS = 28
_ATTEMPT_SUFFIX = 3  # "-a2" ... "-a9": room kept so escalation names stay within 63
_PREFIX_CHARS = MAX_LENGTH - _ATTEMPT_SUFFIX - _HASH_CHARS - 1
_ATTEMPT_RE = re.compile(rf"^(.*[0-9a-f]{{{_HASH_CHARS}}})-a([2-9])$")
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def loop_name(event_id: str, policy_version: str) -> str:
    """The human loop name for an event under a policy version."""
    digest = hashlib.sha256(f"\x1f{event_id}\x1f{policy_version}".encode()).hexdigest()
    prefix = _NOT_ALLOWED.sub("-", event_id.lower()).strip("-")[:_PREFIX_CHARS].strip("-")
    tail = digest[:_HASH_CHARS]
    return f"{prefix}-{tail}" if prefix else tail


def attempt_name(first_name: str, attempt: int) -> str:
    """The name of an escalation attempt (``<first>-a2``); attempt 1 is the first name."""
    if not 1 <= attempt <= 9:
        raise ValueError(f"attempt must be 1-9, got {attempt}")
    return first_name if attempt == 1 else f"{first_name}-a{attempt}"


def first_name_of(name: str) -> str:
    """The first attempt's name of any attempt's name (the key the review path files it under)."""
    match = _ATTEMPT_RE.match(name)
    return match.group(1) if match else name


def is_valid_loop_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_LENGTH and NAME_RE.match(name) is not None
