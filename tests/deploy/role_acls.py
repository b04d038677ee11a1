"""The Kafka ACLs of each role, from its configuration: one statement that three things follow.

The Strimzi KafkaUsers (``deploy/k8s/kafka-users``) and the table in ``deploy/README.md`` must
say exactly this (``tests/deploy/test_kubernetes.py``), and a broker that enforces it runs both
roles, each as its own user, and refuses what a role must not do
(``tests/integration/test_kafka_role_acls.py``).

Operations are Kafka's, spelt as Strimzi spells them. Read and Write imply Describe in Kafka;
Describe is listed anyway, as Strimzi's and Kafka's examples do. Every pattern is literal.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_router.settings import Settings

ROLES = ("ingest", "review")


@dataclass(frozen=True, order=True)
class Acl:
    """Allow ``operations`` on one resource (``topic`` or ``group``), named literally."""

    resource: str
    name: str
    operations: tuple[str, ...]


def leader_topic(settings: Settings) -> str:
    """faust's leader topic of the review application (``stream_router/topics.py``)."""
    return f"{settings.review.app_id}-__assignor-__leader"


def role_acls(settings: Settings, role: str) -> set[Acl]:
    """What ``role`` (ingest or review) is allowed on the cluster; nothing else."""
    names = settings.topic_names()
    produce = ("Write", "Describe")
    if role == "ingest":
        return {
            *(Acl("topic", topic, ("Read", "Describe")) for topic in names.inputs),
            Acl("topic", names.output, produce),
            Acl("topic", names.review_requests, produce),
            Acl("topic", names.dead_letter, produce),
            Acl("group", settings.ingest.group_id, ("Read", "Describe")),
        }
    if role == "review":
        return {
            Acl("topic", names.review_requests, ("Read", "Describe", "DescribeConfigs")),
            Acl("topic", names.loop_events, ("Read", "Write", "Describe")),
            Acl("topic", names.output, produce),
            Acl("topic", names.dead_letter, produce),
            Acl("topic", names.ledger, ("Read", "Write", "Create", "Describe")),
            Acl("topic", leader_topic(settings), ("Read", "Create", "Describe")),
            Acl("group", settings.review.app_id, ("Read", "Describe")),
        }
    raise ValueError(f"no role {role!r}")


def readme_row(role: str, user: str, acl: Acl) -> str:
    """The row of deploy/README.md's ACL table that states ``acl``."""
    return f"| {role} (`{user}`) | {acl.resource} | `{acl.name}` | {', '.join(acl.operations)} |"
