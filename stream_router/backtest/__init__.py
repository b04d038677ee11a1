"""Policies against history: ``stream-router policies test`` and ``policies backtest``.

- :mod:`~stream_router.backtest.replay`: a configuration's routing mix and review spend over a
  file of events, exactly as ingest would decide (``policies test``; no labels needed).
- :mod:`~stream_router.backtest.history`: a history of result envelopes (a JSONL file or the
  output topic) loaded into columns: confidence, label, decision, review probability, and for
  the reviewed, whether people corrected the model.
- :mod:`~stream_router.backtest.certified`: per-label thresholds certified on that history
  (``stream_router/thresholds``: Learn-then-Test, exact bounds, selection corrected by the
  logged review probabilities), priced, and written as a table, JSON, CSV, a plot and a
  configuration snippet (``policies backtest``).
"""

from stream_router.backtest.replay import BacktestReport, backtest

__all__ = ["BacktestReport", "backtest"]
