"""Every topic the services create carries the configured replication, in-sync minimum and message size."""

from __future__ import annotations

from infra.kafka import topic_specs
from infra.settings import Settings


def test_topics_are_created_with_the_configured_replication_for_a_cluster() -> None:
    settings = Settings(_env_file=None, kafka_replication_factor=3, kafka_min_insync_replicas=2,
                        kafka_max_message_bytes=8 * 1024 * 1024)
    specs = topic_specs(settings, [("avatar.requests", 6), ("avatar.session.abc", 1)])
    assert [(s.topic, s.num_partitions, s.replication_factor) for s in specs] == [
        ("avatar.requests", 6, 3), ("avatar.session.abc", 1, 3)]
    assert all(s.config == {"max.message.bytes": str(8 * 1024 * 1024), "min.insync.replicas": "2"}
               for s in specs)


def test_a_single_node_gets_one_replica_by_default() -> None:
    (spec,) = topic_specs(Settings(_env_file=None), [("avatar.dlq", 1)])
    assert spec.replication_factor == 1 and (spec.config or {}).get("min.insync.replicas") == "1"
