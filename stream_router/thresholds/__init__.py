"""Certified per-label auto-accept thresholds (numpy and scipy; no Kafka).

The router auto-accepts a prediction whose confidence is at least its label's threshold and
sends the rest to human review. This package finds, from the decision history, the loosest
threshold whose selective error ``P(wrong | confidence >= t)`` is at most alpha with
probability 1 - delta, despite labels that exist mostly for low-confidence predictions:

- :mod:`.history`: the input (:class:`LabelHistory`, one label's arrays) and threshold grids;
- :mod:`.bounds`: exact Clopper-Pearson bounds, the stratified bound, label counts;
- :mod:`.table`: per-threshold counts, Horvitz-Thompson estimates and bounds;
- :mod:`.certify`: the Learn-then-Test fixed-sequence scan and its result;
- :mod:`.costs`: reviews and spend per threshold, Chow's expected-cost optimum.

Needs the ``analysis`` extra (numpy, scipy).
"""

from stream_router.thresholds.bounds import (
    clopper_pearson_upper,
    labels_needed_for_power,
    labels_needed_zero_errors,
)
from stream_router.thresholds.certify import (
    DEFAULT_START_FRACTION,
    Certification,
    LabelShortfall,
    Outcome,
    certify,
    certify_labels,
    scan,
)
from stream_router.thresholds.costs import ChowChoice, ReviewSpend, chow_threshold, review_spend
from stream_router.thresholds.history import LabelHistory, quantile_grid, uniform_grid
from stream_router.thresholds.table import ThresholdTable, evaluate, plug_in_threshold

__all__ = [
    "DEFAULT_START_FRACTION",
    "Certification",
    "ChowChoice",
    "LabelHistory",
    "LabelShortfall",
    "Outcome",
    "ReviewSpend",
    "ThresholdTable",
    "certify",
    "certify_labels",
    "chow_threshold",
    "clopper_pearson_upper",
    "evaluate",
    "labels_needed_for_power",
    "labels_needed_zero_errors",
    "plug_in_threshold",
    "quantile_grid",
    "review_spend",
    "scan",
    "uniform_grid",
]
