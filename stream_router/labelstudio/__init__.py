"""Label Studio as a review backend: for teams without Amazon A2I.

- ``client.py``: the REST API over aiohttp, errors mapped into the error tree;
- ``tasks.py``: the labeling configuration, the task of a review, answers as A2I-shaped content;
- ``backend.py``: :class:`~stream_router.labelstudio.backend.LabelStudioReviewBackend`, the
  ``ReviewBackend`` (start, describe, fetch_result, pending);
- ``webhook.py``: the endpoint receiving Label Studio's annotation webhooks (a completion signal
  beside the reconciler).
"""
