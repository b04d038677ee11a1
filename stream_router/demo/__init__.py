"""``stream-router demo``: the router on the local sandbox with a synthetic model.

settings (what runs), producer (the synthetic model), router (its config and child process),
tracker (outcomes from the topics, figures from /metrics, ``stream-router tail``), console
(live progress), summary (the verdict and figures), runner (the whole run).
"""
