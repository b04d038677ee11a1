"""Errors of stream_router, grouped by what the caller should do.

::

    StreamRouterError                 root: catch this to catch everything of ours
    ├── ConfigError                   fatal at start-up: fix the configuration (names the field)
    │   └── PolicyLoadError           a policy type is unknown or its parameters are invalid
    ├── PoisonEvent                   this event can never be processed: dead-letter it, move on
    ├── UndecodableRecords            fatal while running: the Kafka client cannot read a
    │                                 partition past an offset (the message names it)
    ├── MalformedMessage              an SQS message a watcher cannot parse: deleted, counted
    │                                 (stream_router.aws.messages)
    ├── MalformedRequest              a review-requests record that is not a review request:
    │                                 dead-lettered (stream_router.review.request)
    ├── UnconfiguredRequest           a review request naming a route or flow the configuration
    │                                 does not review: dead-lettered, never started
    │                                 (stream_router.review.request: UnknownRoute, UnknownFlow)
    ├── CorruptLedger                 fatal: a ledger record does not decode
    │   │                             (stream_router.review.ledger)
    │   └── IllegalMove               fatal: a move the ledger's TRANSITIONS table does not
    │                                 have (a bug; nothing is written; review.ledger)
    └── UpstreamError                 a dependency failed; retriable unless said otherwise
        │                             (``retry_after_s`` hints when to try again)
        ├── ReviewThrottled           the review backend asks us to slow down: retry later
        ├── ReviewCapacityExceeded    too many reviews open: pause starting until some end
        ├── ReviewRejected            the backend refuses this request for good: dead-letter
        └── ReviewNameConflict        the name belongs to another review: never retry blindly

Raise with ``from exc`` and put the offending value in the message.
"""

from __future__ import annotations


class StreamRouterError(Exception):
    """Root of every error stream_router raises on purpose."""


class ConfigError(StreamRouterError):
    """The configuration is invalid; the process must not start."""


class PolicyLoadError(ConfigError):
    """A configured policy cannot be loaded or its parameters are invalid."""


class PoisonEvent(StreamRouterError):
    """An input event that cannot be processed; it goes to the dead-letter topic.

    ``reason_class`` is a short, low-cardinality label for metrics (``not_json``,
    ``not_object``, ``missing_field``, ``bad_type``, ``bad_value``, ``tombstone``, ...); the
    message is for people.
    """

    def __init__(self, reason_class: str, message: str) -> None:
        super().__init__(message)
        self.reason_class = reason_class


class UndecodableRecords(StreamRouterError):
    """Records of a partition the Kafka client cannot decode and ingest cannot step past.

    The process exits (the message names the topic, partition and offset): fix the cause (a
    missing codec library) or, to give those records up, move the group's offset past them.
    """


class OutputTopicGone(StreamRouterError):
    """A topic ingest writes to no longer exists: its writes would wait forever. The role
    exits; at the restart, start-up names the missing topic."""


class UpstreamError(StreamRouterError):
    """A dependency (Kafka, AWS) failed."""

    def __init__(self, message: str, *, retriable: bool = True, retry_after_s: float | None = None):
        super().__init__(message)
        self.retriable = retriable
        self.retry_after_s = retry_after_s


class ReviewThrottled(UpstreamError):
    """The review backend throttled us (or failed transiently); retry after a pause.

    ``maybe_started``: the backend may have done the work before failing (a 5xx), so a start
    that met it may have created the review; a 429 refused it for sure.
    """

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, maybe_started: bool = False
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.maybe_started = maybe_started


class ReviewCapacityExceeded(UpstreamError):
    """The backend's quota of open reviews is reached; start again once reviews end."""


class ReviewRejected(UpstreamError):
    """The backend refused the request as invalid; retrying cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)


class ReviewNameConflict(UpstreamError):
    """A review with this name exists with another input or flow."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)
