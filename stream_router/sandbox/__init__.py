"""The local sandbox: everything the router talks to in production, run on one machine.

``stack`` composes it in one context manager: a Kafka-protocol broker (``broker``, ``kafka``:
Apache Kafka or Tansu), AWS emulated by moto (``aws``), the A2I emulator (``a2i``) and, when
asked, Label Studio (``labelstudio``), each a child process that ``process`` never leaves
behind; ``settings`` configures it, ``tokens`` draws its secrets and ``pytest_plugin`` offers it
as pytest fixtures. It needs the ``sandbox`` extra; nothing is imported here, so importing this
package loads none of it.
"""
