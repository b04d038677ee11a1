"""``topics create`` and the start-up check against a real Apache Kafka.

The broker here allows automatic topic creation (Kafka's own default), so a check that named a
missing topic in a metadata request would create it: the check must not.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from stream_router.errors import ConfigError
from stream_router.sandbox.kafka import KafkaBroker
from stream_router.settings import Settings
from stream_router.topics import check_topics, create_topics
from tests.integration.test_kafka_broker import topic_config

pytestmark = pytest.mark.integration


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_create_then_check_and_what_start_up_refuses(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    async with KafkaBroker(
        state_dir=tmp_path / "kafka", extra_config={"auto.create.topics.enable": "true"}
    ) as broker:
        settings = Settings(
            kafka={"bootstrap_servers": broker.bootstrap_servers},  # type: ignore[arg-type]
            ingest={"input_topics": [f"in-{tag}"], "output_topic": f"out-{tag}",  # type: ignore[arg-type]
                    "review_requests_topic": f"rr-{tag}", "dead_letter_topic": f"dlq-{tag}"},
            review={"app_id": f"app-{tag}", "loop_events_topic": f"le-{tag}",  # type: ignore[arg-type]
                    "topic_partitions": 3, "ledger_retention_s": 7200},
            topics={"partitions": 2, "review_requests_retention_s": 3600},  # type: ignore[arg-type]
        )  # fmt: skip
        with pytest.raises(ConfigError, match=rf"topic 'in-{tag}' \(ingest.input_topics\) does"):
            await check_topics(settings, "all")
        assert not {n for n in await topic_names(broker.bootstrap_servers) if tag in n}

        assert set((await create_topics(settings)).values()) == {"created"}
        assert set((await create_topics(settings)).values()) == {"exists"}
        await check_topics(settings, "all")
        bootstrap = broker.bootstrap_servers
        assert await topic_config(bootstrap, f"rr-{tag}", "retention.ms") == "3600000"
        assert await topic_config(bootstrap, f"app-{tag}-ledger", "cleanup.policy") == ("compact")
        # Compaction cleans closed segments only: the ledger closes one an hour.
        assert await topic_config(bootstrap, f"app-{tag}-ledger", "segment.ms") == "3600000"

        # Another deployment of the same review app with other partitions is refused.
        other = settings.model_copy(update={"review": settings.review.model_copy(
            update={"topic_partitions": 4})})  # fmt: skip
        with pytest.raises(ConfigError, match=rf"'rr-{tag}' .* has 3 partitions but "):
            await check_topics(other, "review")
        # A topic kept longer than the ledger is refused for the review role.
        longer = settings.model_copy(update={"review": settings.review.model_copy(
            update={"ledger_retention_s": 60.0})})  # fmt: skip
        with pytest.raises(ConfigError, match=r"keeps records 3600 s but .* is 60 s"):
            await check_topics(longer, "review")
        await check_topics(longer, "ingest")  # ingest does not care
