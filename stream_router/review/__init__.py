"""The review path: starting human reviews, watching them end, publishing reviewed results.

- ``backend``: the review-backend interface (A2I is one implementation, in ``aws/a2i.py``);
- ``events``: loop events, what watchers report about a review's end;
- the faust application, starter, ledger and completion arrive in later steps.
"""
