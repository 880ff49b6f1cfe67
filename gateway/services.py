"""What the gateway holds while it runs: Kafka producer and consumer, PostgreSQL, processor status."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import OFFSET_END

from consumers.session_stream import SessionStreamConsumer
from gateway import metrics
from gateway.sessions import SessionRegistry
from gateway.status import ProcessorStatus
from infra.avatar_store import AvatarStore
from infra.crypto import face_keyring
from infra.database import ensure_database, open_pool
from infra.kafka import TopicAdmin
from infra.migrations import migrate
from infra.session_store import SessionStore
from infra.settings import Settings
from producers.client import AvatarProducer


@dataclass
class Services:
    settings: Settings
    admin: TopicAdmin
    producer: AvatarProducer
    stream: SessionStreamConsumer
    store: AvatarStore
    status: ProcessorStatus
    sessions: SessionRegistry
    open_streams: int = 0  # WebSocket connections now open on this gateway (MAX_CONCURRENT_USERS)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Connect to everything or fail loudly now, not on the first request."""
        ensure_database(settings.database_url)
        migrate(settings.database_url)
        pool = open_pool(settings.database_url, settings.database_pool_size, name="gateway",
                         acquire_timeout_s=settings.database_acquire_timeout_s)
        admin = TopicAdmin(settings)
        admin.ensure_pipeline_topics()
        producer = AvatarProducer(settings)
        producer.warm_up()
        status = ProcessorStatus(stale_after_s=max(10.0, 5 * settings.heartbeat_interval_s))
        stream = SessionStreamConsumer(settings).start()
        stream.listen(settings.kafka_status_topic, lambda record: status.record(record.value), OFFSET_END)
        sessions = SessionRegistry(settings, admin, SessionStore(pool), stream)
        services = cls(settings, admin, producer, stream, AvatarStore(pool, face_keyring(settings)), status,
                       sessions)
        metrics.PROCESSOR_METRICS.source = status
        metrics.REGISTRATION_TIMES.pool = pool
        sessions.start_housekeeping()
        return services

    def database_ok(self) -> bool:
        try:
            with self.store.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        self.sessions.stop()
        self.stream.stop()
        self.producer.close()
        self.store.pool.close()
