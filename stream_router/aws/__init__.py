"""Gateways to AWS: the only package that imports aioboto3.

``clients``: aioboto3 clients built from explicit endpoints, region and credentials, so the same
code talks to AWS or to the local sandbox.
``a2i``: the A2I review backend; ``a2i_output``: its output.json; ``flows``: the start-up check
that every configured flow definition exists and is Active.
"""
