"""Label Studio in the sandbox: the server in its own environment, and simulated annotators.

- ``server.py``: installs and runs a real Label Studio on loopback, makes its projects and users;
- ``annotators.py``: people of the A2I emulator's reviewer model (``sandbox/a2i/reviewers.py``)
  who annotate the tasks the router creates, through Label Studio's API.
"""
