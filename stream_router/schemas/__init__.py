"""JSON Schemas of what the router writes: result envelopes (``envelope-v1``), dead letters
(``dead-letter-v1``), review outcomes (``review-v1``) and backtest reports
(``backtest-report-v1``). They ship as package data beside this file for consumers to validate
against; the tests validate every record the router produces with them. No Python lives here.
"""
