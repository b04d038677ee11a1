"""``python -m stream_router.sandbox.kafka``: assemble the broker's jars now and say where."""

from __future__ import annotations

import logging
import sys

from stream_router.sandbox.kafka import KAFKA_VERSION, KafkaUnavailable, java_binary, kafka_lib


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        java = java_binary()
        lib = kafka_lib()
    except KafkaUnavailable as exc:
        print(f"stream-router: {exc}", file=sys.stderr)
        return 1
    jars = len(list(lib.glob("*.jar")))
    print(f"Apache Kafka {KAFKA_VERSION}: {jars} jars in {lib}; java: {java}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
