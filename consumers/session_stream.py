"""Streams session topics to their listeners: one Kafka consumer per process, partitions assigned, no group."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.kafka import consumer_config
from infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    topic: str
    offset: int
    value: bytes


Listener = Callable[[Record], None]


class Listeners:
    """Who hears each topic: one main listener (it sets where reading starts) and any taps beside it.

    A tap is a second reader of a live topic (the WebRTC output of a session whose WebSocket reads it too):
    it hears records from whatever position the topic is read at, and adding or removing it never moves
    that position. Pure bookkeeping; the consumer asks it whether a change needs a (re)assignment.
    """

    def __init__(self) -> None:
        self.main: dict[str, Listener] = {}
        self.taps: dict[str, list[Listener]] = {}

    def heard(self, topic: str) -> bool:
        return topic in self.main or bool(self.taps.get(topic))

    def set_main(self, topic: str, listener: Listener) -> bool:
        """Make ``listener`` the topic's main one; True if the topic was already assigned (reassign it)."""
        was_heard = self.heard(topic)
        self.main[topic] = listener
        return was_heard

    def drop_main(self, topic: str) -> tuple[bool, bool]:
        """(had a main listener, the topic is still heard by a tap)."""
        had = self.main.pop(topic, None) is not None
        return had, self.heard(topic)

    def add_tap(self, topic: str, listener: Listener) -> bool:
        """Add a tap; True if the topic was not heard before (assign it)."""
        was_heard = self.heard(topic)
        self.taps.setdefault(topic, []).append(listener)
        return not was_heard

    def drop_tap(self, topic: str, listener: Listener) -> bool:
        """Remove a tap; True if nobody hears the topic any more (unassign it)."""
        taps = self.taps.get(topic, [])
        if listener in taps:
            taps.remove(listener)
        if not taps:
            self.taps.pop(topic, None)
        return not self.heard(topic)

    def of(self, topic: str) -> list[Listener]:
        """Everyone who hears ``topic``: the main listener first."""
        main = self.main.get(topic)
        return ([main] if main is not None else []) + list(self.taps.get(topic, []))


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
        self._listeners = Listeners()
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
            had = self._listeners.set_main(topic, listener)
            self._unapplied[topic] = self._unapplied.get(topic, 0) + 1

        def assign() -> None:
            try:
                if had:
                    self._unassign(topic)
                self._assign(topic, from_offset)
            finally:
                with self._lock:
                    left = self._unapplied.pop(topic, 1) - 1
                    if left:
                        self._unapplied[topic] = left

        self._changes.put(assign)

    def _assign(self, topic: str, from_offset: int) -> None:
        # Fetch the new topic's metadata now: left to itself librdkafka learns the leader of a
        # just-created topic only on its next periodic refresh, ~0.8 s later (measured on Tansu).
        try:
            self.consumer.list_topics(topic, timeout=5)
        except KafkaException:  # the broker is away: assign anyway, librdkafka catches up when it is back
            log.warning("no metadata for a session topic yet", extra={"topic": topic})
        self.consumer.incremental_assign([TopicPartition(topic, 0, from_offset)])

    def forget(self, topic: str) -> threading.Event:
        """Stop delivering ``topic``; the returned event is set once the consumer has really let it go.

        Wait for it before deleting the topic: librdkafka crashes the process (SIGSEGV, measured against the
        embedded broker) when a topic it is still assigned is deleted.
        """
        released = threading.Event()
        with self._lock:
            had, tapped = self._listeners.drop_main(topic)
        if not had or tapped:  # a tap still reads the topic from where it is: keep it assigned
            released.set()
            return released
        self._changes.put(self._unassigner(topic, released))
        return released

    def tap(self, topic: str, listener: Listener) -> None:
        """Also deliver ``topic``'s records to ``listener``, from wherever the topic is read now.

        A topic nobody heard yet is read from its end (new records only). Records the main listener
        re-reads after a resume reach the taps again: they pass each (request, seq) once themselves.
        """
        with self._lock:
            first = self._listeners.add_tap(topic, listener)
        if first:
            self._changes.put(lambda: self._assign(topic, OFFSET_END))

    def untap(self, topic: str, listener: Listener) -> threading.Event:
        """Stop delivering to a tap; the event is set once the topic is let go (or still heard by others)."""
        released = threading.Event()
        with self._lock:
            unheard = self._listeners.drop_tap(topic, listener)
        if not unheard:
            released.set()
            return released
        self._changes.put(self._unassigner(topic, released))
        return released

    def _unassigner(self, topic: str, released: threading.Event) -> Callable[[], None]:
        # Unconditional: a listen or tap that came after queued its own assignment behind this change.
        def unassign() -> None:
            try:
                self._unassign(topic)
            finally:
                released.set()

        return unassign

    def _unassign(self, topic: str) -> None:
        if any(tp.topic == topic for tp in self.consumer.assignment()):
            self.consumer.incremental_unassign([TopicPartition(topic, 0)])

    @property
    def topics(self) -> list[str]:
        with self._lock:
            return list(self._listeners.main)

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
            listeners = [] if topic in self._unapplied else self._listeners.of(topic)
        if not listeners:
            return
        record = Record(topic, message.offset() or 0, message.value() or b"")
        for listener in listeners:
            try:
                listener(record)
            except Exception:
                log.exception("session listener failed", extra={"topic": topic})

    def _on_error(self, message: Message) -> None:
        error = message.error()
        if error is None or error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return
        log.warning("session stream consumer error", extra={"error": str(error)})
