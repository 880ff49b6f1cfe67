"""Kafka wiring: client configurations tuned for latency, topic creation, and the dead-letter producer."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from infra.settings import Settings

log = logging.getLogger(__name__)


# librdkafka's own log lines (a broker that cannot be reached, ...) go through Python logging, so they are
# structured like every other line instead of raw "%3|...|FAIL|" text on stderr.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def client_config(settings: Settings) -> dict[str, Any]:
    """What every client shares; librdkafka's own log lines only when debugging (syslog levels)."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers,
            "log_level": 7 if settings.log_level == "DEBUG" else 3, "logger": LIBRDKAFKA_LOG}


# The embedded broker (Tansu) holds an empty fetch to the end of its wait and answers data late when the wait is
# long (a 500 ms wait: hops of ~180 ms), so its consumers poll briskly; Apache Kafka answers a fetch as soon as data
# arrives, so there Kafka's own long poll costs no latency and spares the cluster (scripts/benchmark_broker_polling.py).
EMBEDDED_FETCH_WAIT_MS = 10
KAFKA_FETCH_WAIT_MS = 500
# Each consumer polling the embedded broker every 10 ms costs it ~3% of a core while idle: the consumers of
# background work poll less often (on the embedded broker a 200 ms wait gives hops of ~45 ms).
BACKGROUND_FETCH_WAIT_MS = 200
TANSU_CLUSTER_ID = "tansu_cluster"
_BROKER_PROBE_TIMEOUT_S = 2.0


def fetch_wait_ms(settings: Settings) -> int:
    """KAFKA_FETCH_WAIT_MS if set, else the wait that suits the broker the bootstrap servers lead to."""
    if settings.kafka_fetch_wait_ms is not None:
        return settings.kafka_fetch_wait_ms
    return _wait_for_broker_kind(settings.kafka_bootstrap_servers)


@functools.cache
def _wait_for_broker_kind(bootstrap: str) -> int:
    """Asks the cluster its id once per process: the embedded broker names itself ``tansu_cluster``. A broker that
    does not answer yet gets the embedded broker's brisk wait: it costs an idle cluster CPU, never latency."""
    try:
        probe: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG, "log_level": 3}
        cluster_id = AdminClient(probe).list_topics(timeout=_BROKER_PROBE_TIMEOUT_S).cluster_id
    except KafkaException:
        log.warning("broker kind unknown (not reachable yet): fetch wait of the embedded broker",
                    extra={"bootstrap": bootstrap, "fetch_wait_ms": EMBEDDED_FETCH_WAIT_MS})
        return EMBEDDED_FETCH_WAIT_MS
    wait = fetch_wait_for_cluster(cluster_id)
    log.info("fetch wait chosen for the broker", extra={"cluster_id": cluster_id, "fetch_wait_ms": wait})
    return wait


def fetch_wait_for_cluster(cluster_id: str | None) -> int:
    return EMBEDDED_FETCH_WAIT_MS if cluster_id == TANSU_CLUSTER_ID else KAFKA_FETCH_WAIT_MS


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        **client_config(settings),
        "linger.ms": 0,  # a chunk is latency-critical: never wait to batch
        "enable.idempotence": True,
        "acks": "all",
        "message.max.bytes": settings.kafka_max_message_bytes,
        "compression.type": "none",  # media is already compressed
    }
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str | None, *, background: bool = False,
                    **overrides: Any) -> dict[str, Any]:
    """``background``: a consumer whose messages can wait a fifth of a second (cache invalidations, idle clips,
    registration jobs) polls at least BACKGROUND_FETCH_WAIT_MS apart, sparing the embedded broker's CPU."""
    wait = fetch_wait_ms(settings)
    config: dict[str, Any] = {
        **client_config(settings),
        "fetch.wait.max.ms": max(wait, BACKGROUND_FETCH_WAIT_MS) if background else wait,
        "fetch.max.bytes": max(settings.kafka_max_message_bytes, 52_428_800),
        "max.partition.fetch.bytes": settings.kafka_max_message_bytes,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 3),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    }
    config["group.id"] = group_id or "avatar-unassigned"  # librdkafka wants one even for assign()
    config.update(overrides)
    return config


class BrokerUnavailable(RuntimeError):
    """The broker did not answer within the start-up wait."""


class TopicConfigError(RuntimeError):
    """The broker refused the topic settings (e.g. more replicas than brokers): a misconfiguration."""


def topic_specs(settings: Settings, topics: Iterable[tuple[str, int]]) -> list[NewTopic]:
    """How every topic of ours is created: (name, partitions) with the configured replication."""
    config = {"max.message.bytes": str(settings.kafka_max_message_bytes),
              "min.insync.replicas": str(settings.kafka_min_insync_replicas)}
    return [NewTopic(name, num_partitions=parts, replication_factor=settings.kafka_replication_factor,
                     config=config) for name, parts in topics]


class TopicAdmin:
    """Creates topics once and remembers which exist, so hot paths don't ask the broker again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = AdminClient(client_config(settings))
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, topics: Iterable[tuple[str, int]], timeout_s: float = 10.0) -> None:
        """Create each (name, partitions) topic that does not exist yet."""
        wanted = [(name, parts) for name, parts in topics if name not in self._known]
        if not wanted:
            return
        futures = self.client.create_topics(topic_specs(self.settings, wanted),
                                            operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as error:
                code = error.args[0].code()
                if code == KafkaError.INVALID_REPLICATION_FACTOR:
                    raise TopicConfigError(
                        f"cannot create topic {name!r} with KAFKA_REPLICATION_FACTOR="
                        f"{self.settings.kafka_replication_factor}: the cluster has fewer brokers "
                        f"({error.args[0].str()})") from error
                if code != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            with self._lock:
                self._known.add(name)

    def ensure_pipeline_topics(self) -> None:
        """Every topic but the sessions': each service calls this at start-up, whichever starts first."""
        self.wait_for_broker()
        s = self.settings
        self.ensure([(s.kafka_requests_topic, s.kafka_partitions), (s.kafka_speech_topic, s.kafka_partitions),
                     (s.kafka_dlq_topic, 1), (s.kafka_status_topic, 1), (s.kafka_control_topic, 1),
                     (s.kafka_avatar_invalidation_topic, 1), (s.kafka_registration_topic, s.kafka_partitions),
                     (s.kafka_idle_clip_topic, s.kafka_partitions)])

    def ensure_session_topic(self, session_id: str) -> str:
        topic = self.settings.session_topic(session_id)
        self.ensure([(topic, 1)])
        return topic

    def delete(self, topics: list[str], timeout_s: float = 10.0) -> None:
        for future in self.client.delete_topics(topics, operation_timeout=timeout_s).values():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as error:
                log.warning("topic deletion failed", extra={"error": str(error)})
        with self._lock:
            self._known.difference_update(topics)

    def wait_for_broker(self) -> None:
        """Block until the broker answers (services may start before it), or fail loudly after the wait."""
        deadline = time.monotonic() + self.settings.startup_wait_s
        announced = False
        while not self.broker_reachable(timeout_s=2.0):
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"no Kafka broker at {self.settings.kafka_bootstrap_servers} after "
                                        f"{self.settings.startup_wait_s:.0f} s (KAFKA_BOOTSTRAP_SERVERS)")
            if not announced:
                log.warning("waiting for the Kafka broker", extra={"bootstrap": self.settings.kafka_bootstrap_servers})
                announced = True
            time.sleep(0.5)

    def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        try:
            self.client.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return True


def new_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))
