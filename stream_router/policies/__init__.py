"""Policies: the gates that decide, per prediction, whether a person should look at it.

``base`` is the interface and its contract (:class:`~stream_router.policies.base.Policy`,
``EventPolicy``, ``PolicyParams``, ``Verdict``; re-exported by :mod:`stream_router`); the
built-ins (``confidence``, ``scores``, ``required``, ``sampling``, ``field``, ``composite``)
are registered under the entry-point group ``stream_router.policies`` like any plugin, and
``registry`` loads only the types a configuration names; ``routes`` turns the configured routes
into one decision per prediction, ``propensity`` gives each its review probability, ``shadow``
counts what a shadow policy would have reviewed and ``fields`` resolves field names. Nothing is
imported here, so loading one policy does not load the others.
"""
