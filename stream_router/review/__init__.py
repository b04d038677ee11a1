"""The review path: starting human reviews, watching them end, publishing reviewed results.

Pure parts (no faust, no AWS SDK):

- ``backend``: the review-backend interface (A2I implements it in ``aws/a2i.py``);
- ``fake``: an in-memory backend for tests;
- ``content``: the InputContent reviewers see (projection + identity);
- ``limiter``: the shared token-bucket rate limiter;
- ``budget``: reviews per route per hour and per day;
- ``starter``: one review request → budget, rate limit, start, retries;
- ``consolidate``: several workers' answers → majority label and agreement;
- ``outcome``: reviewed and unreviewed result envelopes;
- ``events``: loop events, what watchers report about a review's end.

The faust application that wires them (ledger table, agents, timers) comes next.
"""
