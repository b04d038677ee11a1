"""stream_router: a human-in-the-loop router for real-time ML predictions.

Predictions arrive on Kafka; confident ones pass straight through, the rest go to human
review through Amazon Augmented AI (A2I); reviewed results come back out on Kafka.

The names below are the public API, for people who write policies or catch the router's
errors; everything else is internal and may change. Write a policy against :class:`Policy` or
:class:`EventPolicy` (contract in their docstrings), test it with :mod:`stream_router.testing`.
Importing this package is cheap: no Kafka, AWS or analysis library is loaded
(``tests/unit/test_public_api.py`` keeps it so, and keeps ``__all__`` complete).
"""

from stream_router.errors import (
    ConfigError,
    OutputTopicGone,
    PoisonEvent,
    PolicyLoadError,
    ReviewCapacityExceeded,
    ReviewNameConflict,
    ReviewRejected,
    ReviewThrottled,
    StreamRouterError,
    UndecodableRecords,
    UpstreamError,
)
from stream_router.models import Prediction, SourceRef
from stream_router.policies.base import Builder, EventPolicy, Policy, PolicyParams, Verdict

__version__ = "0.1.0"

__all__ = [
    "Builder",
    "ConfigError",
    "EventPolicy",
    "OutputTopicGone",
    "PoisonEvent",
    "Policy",
    "PolicyLoadError",
    "PolicyParams",
    "Prediction",
    "ReviewCapacityExceeded",
    "ReviewNameConflict",
    "ReviewRejected",
    "ReviewThrottled",
    "SourceRef",
    "StreamRouterError",
    "UndecodableRecords",
    "UpstreamError",
    "Verdict",
    "__version__",
]
