"""The review path: recording review requests, starting human reviews, publishing outcomes.

Start with ``scheduler`` (the one owner of review state and of the promise that every request
ends in exactly one outcome); the rest are its parts:

- ``request``: the review request, parsed once (``untrusted``: the checks every parser of a
  record anything can write starts with);
- ``ledger``: the typed entry of each request, its one wire format and the table of the moves
  it may make (the ledger topic and direct reads of Kafka are ``review_topics.py``'s);
  ``closed``: the names of closed reviews, kept compactly for a week;
- ``starter``: one start: budget, rate limit, one backend call; ``retry``: the one retry policy;
- ``budget`` and ``shares``: reviews per route per hour and day, split over partitions;
- ``limiter``: the shared token-bucket rate limiter;
- ``completion``, ``consolidate``, ``outcome``: an ended review → its result envelope;
- ``events``: loop events, what watchers report; ``reconciler``: asks the backend directly;
- ``backend``: the review-backend base class and its completion signals (A2I implements it in
  ``aws/a2i.py``, Label Studio in ``labelstudio/backend.py``); ``fake``: an in-memory backend
  for tests; ``content``: what reviewers see;
- ``steps``: when each step of an entry is due and whether it may begin (lanes, the in-flight
  gate);
- ``monitor``: backlog, ages, catch-up and stuck commits. Liveness and stalls of agents and
  tasks are the process's supervisor's, shared with the ingest role
  (``stream_router/supervision.py``).

No module here imports faust or a review backend's package: the faust application is the review
role's (``stream_router/review_role.py``), and backends are chosen by name from the table in
``stream_router/backends.py``.
"""
