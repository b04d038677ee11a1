"""Gateways to AWS: the only package that imports aioboto3.

``clients``: aioboto3 clients built from explicit endpoints, region and credentials, so the same
code talks to AWS or to the local sandbox.
"""
