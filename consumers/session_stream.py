"""Streams session topics to their listeners: one Kafka consumer per process, partitions assigned, no group."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.kafka import consumer_config
from infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    topic: str
    offset: int
    value: bytes


Listener = Callable[[Record], None]


class SessionStreamConsumer:
    """Assigns (never subscribes) the one partition of each session topic a listener wants.

    docs/design.md: a consumer per session would cost librdkafka threads each, and a consumer group would add
    rebalance delays; one assigned consumer dispatching by topic has neither. Listeners are called on the
    consumer's thread and must hand work off quickly (e.g. ``loop.call_soon_threadsafe``).

    Assignment changes are queued and applied by the polling thread itself: librdkafka's assign calls
    block while another thread is inside poll(), and a busy poll loop would starve them. A listener hears its
    topic only once its own assignment is applied: until then a record the consumer returns is from the topic's
    previous assignment (another connection's position, say, when a session is resumed right after its
    connection dropped) and would reach the new listener out of order.
    """

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(consumer_config(settings, group_id=None))
        self._listeners: dict[str, Listener] = {}
        self._unapplied: dict[str, int] = {}  # topic → listen() calls whose assignment is still queued
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changes: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def start(self) -> SessionStreamConsumer:
        self._thread = threading.Thread(target=self._run, name="session-stream", daemon=True)
        self._thread.start()
        return self

    def listen(self, topic: str, listener: Listener, from_offset: int = OFFSET_BEGINNING) -> None:
        """Deliver every record of ``topic`` from ``from_offset`` on to ``listener`` (replacing any before)."""
        with self._lock:
            had = topic in self._listeners
            self._listeners[topic] = listener
            self._unapplied[topic] = self._unapplied.get(topic, 0) + 1

        def assign() -> None:
            try:
                if had:
                    self._unassign(topic)
                # Fetch the new topic's metadata now: left to itself librdkafka learns the leader of a
                # just-created topic only on its next periodic refresh, ~0.8 s later (measured on Tansu).
                try:
                    self.consumer.list_topics(topic, timeout=5)
                except KafkaException:  # the broker is away: assign anyway, librdkafka catches up when it is back
                    log.warning("no metadata for a session topic yet", extra={"topic": topic})
                self.consumer.incremental_assign([TopicPartition(topic, 0, from_offset)])
            finally:
                with self._lock:
                    left = self._unapplied.pop(topic, 1) - 1
                    if left:
                        self._unapplied[topic] = left

        self._changes.put(assign)

    def forget(self, topic: str) -> threading.Event:
        """Stop delivering ``topic``; the returned event is set once the consumer has really let it go.

        Wait for it before deleting the topic: librdkafka crashes the process (SIGSEGV, measured against the
        embedded broker) when a topic it is still assigned is deleted.
        """
        released = threading.Event()
        with self._lock:
            if self._listeners.pop(topic, None) is None:
                released.set()
                return released

        def unassign() -> None:
            try:
                self._unassign(topic)
            finally:
                released.set()

        self._changes.put(unassign)
        return released

    def _unassign(self, topic: str) -> None:
        if any(tp.topic == topic for tp in self.consumer.assignment()):
            self.consumer.incremental_unassign([TopicPartition(topic, 0)])

    @property
    def topics(self) -> list[str]:
        with self._lock:
            return list(self._listeners)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._apply_changes()
            message = self.consumer.poll(0.02)
            if message is None:
                continue
            if message.error():
                self._on_error(message)
                continue
            self._dispatch(message)

    def _apply_changes(self) -> None:
        while True:
            try:
                change = self._changes.get_nowait()
            except queue.Empty:
                return
            try:
                change()
            except Exception:
                log.exception("session stream assignment change failed")

    def _dispatch(self, message: Message) -> None:
        topic = message.topic() or ""
        with self._lock:
            listener = None if topic in self._unapplied else self._listeners.get(topic)
        if listener is None:
            return
        try:
            listener(Record(topic, message.offset() or 0, message.value() or b""))
        except Exception:
            log.exception("session listener failed", extra={"topic": topic})

    def _on_error(self, message: Message) -> None:
        error = message.error()
        if error is None or error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return
        log.warning("session stream consumer error", extra={"error": str(error)})
