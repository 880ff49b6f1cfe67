"""What the gateway holds while it runs: Kafka producer and consumer, PostgreSQL, processor status."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_END

from consumers.session_stream import SessionStreamConsumer
from gateway import metrics
from gateway.status import ProcessorStatus
from infra.avatar_store import AvatarStore
from infra.crypto import face_keyring
from infra.database import ensure_database, open_pool
from infra.kafka import TopicAdmin
from infra.migrations import migrate
from infra.session_store import SessionStore
from infra.settings import Settings
from producers.client import AvatarProducer

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    admin: TopicAdmin
    producer: AvatarProducer
    stream: SessionStreamConsumer
    store: AvatarStore
    status: ProcessorStatus
    sessions: SessionStore
    connected: set[str] = field(default_factory=set)  # session ids with a client on this gateway
    open_streams: int = 0  # WebSocket connections now open on this gateway (MAX_CONCURRENT_USERS)
    _stop_housekeeping: threading.Event = field(default_factory=threading.Event)

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
        services = cls(settings, admin, producer, stream, AvatarStore(pool, face_keyring(settings)), status,
                       SessionStore(pool))
        metrics.PROCESSOR_METRICS.source = status
        services.start_housekeeping()
        return services

    def start_housekeeping(self) -> None:
        """Keep connected sessions alive and end idle ones (their topics are deleted), every few seconds."""
        interval = min(30.0, max(1.0, self.settings.session_idle_ttl_s / 5))
        self._housekeeper = threading.Thread(target=self._housekeep, args=(interval,), name="housekeeping",
                                             daemon=True)
        self._housekeeper.start()

    def _housekeep(self, interval_s: float) -> None:
        while not self._stop_housekeeping.wait(interval_s):
            try:
                self.end_idle_sessions()
            except Exception:  # the database may be down for a while: try again next round
                log.warning("session housekeeping failed", exc_info=True)

    def end_idle_sessions(self) -> list[str]:
        self.sessions.touch(sorted(self.connected))
        ended = self.sessions.end_idle(self.settings.session_idle_ttl_s)
        if ended:
            self.admin.delete([self.settings.session_topic(session_id) for session_id in ended])
            log.info("idle sessions ended", extra={"sessions": len(ended)})
        return ended

    def database_ok(self) -> bool:
        try:
            with self.store.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        self._stop_housekeeping.set()
        self.stream.stop()
        self.producer.close()
        self.store.pool.close()
