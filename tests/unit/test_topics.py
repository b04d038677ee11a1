"""The router's topic list, and what start-up makes of a cluster's topics (no broker here)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream_router.settings import Settings
from stream_router.topics import _problems, router_topics


def settings(**sections: dict[str, object]) -> Settings:
    return Settings(**sections)  # type: ignore[arg-type]


def test_every_topic_the_router_uses_is_listed_with_what_matters() -> None:
    specs = {s.name: s for s in router_topics(settings(
        ingest={"input_topics": ["a", "b"]},
        review={"topic_partitions": 6, "app_id": "rv"},
        topics={"partitions": 3, "review_requests_retention_s": 3600},
    ))}  # fmt: skip
    assert list(specs) == [
        "a", "b", "predictions-routed", "predictions-dead-letter",
        "stream-router-review-requests", "stream-router-loop-events",
        "rv-ledger", "rv-__assignor-__leader",
    ]  # fmt: skip
    assert specs["a"].foreign
    assert specs["predictions-routed"].partitions == 3
    requests = specs["stream-router-review-requests"]
    assert (requests.partitions, requests.exact) == (6, True)
    assert requests.configs == {"retention.ms": "3600000"}
    assert specs["rv-ledger"].configs == {"cleanup.policy": "compact"}
    assert (specs["rv-ledger"].partitions, specs["rv-ledger"].exact) == (6, True)


def test_start_up_names_missing_topics_and_broken_co_partitioning() -> None:
    specs = router_topics(settings(review={"topic_partitions": 4}))
    found = {
        "predictions": 8,  # inputs may have any partition count
        "predictions-routed": 1,
        "stream-router-review-requests": 4,
        "stream-router-loop-events": 2,
        "stream-router-review-ledger": 3,
    }
    problems = _problems(specs, found, {"ingest", "review"})
    assert len(problems) == 3, problems
    missing, loop_events, ledger = problems
    assert "'predictions-dead-letter' (ingest.dead_letter_topic) does not exist" in missing
    assert "stream-router topics create" in missing
    assert "'stream-router-loop-events' (review.loop_events_topic) has 2 partitions" in loop_events
    assert "review.topic_partitions is 4" in loop_events
    assert "'stream-router-review-ledger' (review.app_id (the review ledger))" in ledger
    # A ledger the review role has not created yet is no problem; ingest alone needs no loop events.
    assert _problems(specs, {**found, "stream-router-loop-events": 4,
                             "stream-router-review-ledger": 4,
                             "predictions-dead-letter": 1}, {"ingest"}) == []  # fmt: skip


def test_review_requests_may_not_outlive_their_ledger_entries() -> None:
    with pytest.raises(ValidationError, match=r"review_requests_retention_s .* exceeds"):
        settings(topics={"review_requests_retention_s": 8 * 86_400})
    with pytest.raises(ValidationError, match=r"review\.ledger_retention_s"):
        settings(review={"ledger_retention_s": 3600})
    settings(review={"ledger_retention_s": 3600}, topics={"review_requests_retention_s": 3600})


def test_replication_and_session_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="min_insync_replicas"):
        settings(topics={"replication_factor": 1, "min_insync_replicas": 2})
    with pytest.raises(ValidationError, match="must not exceed request_timeout_s"):
        settings(kafka={"session_timeout_s": 45, "request_timeout_s": 40})
