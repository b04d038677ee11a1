"""The review path: recording review requests, starting human reviews, publishing outcomes.

Start with ``scheduler`` (the one owner of review state and of the promise that every request
ends in exactly one outcome); the rest are its parts:

- ``request``: the review request, parsed once;
- ``ledger``: the typed entry of each request and its one wire format; the ledger topic;
- ``reader``: direct reads of partitions (the ledger, gaps in review-requests, offsets);
- ``starter``: one start: budget, rate limit, one backend call; ``retry``: the one retry policy;
- ``budget`` and ``shares``: reviews per route per hour and day, split over partitions;
- ``limiter``: the shared token-bucket rate limiter;
- ``completion``, ``consolidate``, ``outcome``: an ended review → its result envelope;
- ``events``: loop events, what watchers report; ``reconciler``: asks the backend directly;
- ``backend``: the review-backend interface (A2I implements it in ``aws/a2i.py``); ``fake``: an
  in-memory backend for tests; ``content``: what reviewers see;
- ``supervision``: liveness and stalls of agents and tasks; ``app``: the faust wiring.
"""
