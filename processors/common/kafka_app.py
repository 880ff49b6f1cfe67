"""The thin Kafka adapter every processor runs in: consume, call the pure core, produce, dead-letter, commit."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer

from infra.kafka import TopicAdmin, consumer_config, new_producer
from infra.logging import TRACE_FIELDS, log_context, log_scope
from infra.settings import Settings
from processors.common import metrics
from processors.common.broadcast import BroadcastListener
from schemas.dlq import DeadLetter
from schemas.status import ServiceStatus

log = logging.getLogger(__name__)


class InvalidMessage(ValueError):
    """The message can never be processed (bad JSON, wrong schema): it goes to the dead-letter topic."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)


Handler = Callable[[bytes | None, bytes], Iterable[Outgoing]]
# Extra ServiceStatus fields a processor reports in each heartbeat (e.g. its avatar cache's statistics).
StatusFields = Callable[[], dict[str, Any]]


class KafkaApp:
    """Runs one handler over one input topic in a consumer group, at-least-once.

    Outputs are produced as the handler yields them (so a chunk leaves as soon as it is rendered); the
    input offset is committed only once every output of that message is acknowledged by the broker.
    """

    def __init__(self, settings: Settings, *, name: str, input_topic: str, handler: Handler,
                 admin: TopicAdmin | None = None, engine: str | None = None,
                 status_fields: StatusFields | None = None) -> None:
        self.settings = settings
        self.name = name
        self.input_topic = input_topic
        self.handler = handler
        self.admin = admin or TopicAdmin(settings)
        self.producer: Producer = new_producer(settings)
        self.consumer = Consumer(consumer_config(settings, group_id=f"avatar-{name}"))
        self._stop = threading.Event()
        self.assigned = threading.Event()
        self.recovering = False  # true while handling a message a previous owner may have half-handled
        self._taken_over: dict[int, int] = {}  # partition → when this worker got it (epoch ms)
        self.processed = 0
        self.dead_lettered = 0
        self.engine = engine
        self.status_fields = status_fields
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._last_heartbeat = 0.0

    def run(self) -> None:
        """Consume until stop() is called."""
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign)
        try:
            while not self._stop.is_set():
                self._heartbeat()
                message = self.consumer.poll(0.1)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    self._log_consumer_error(error)
                    continue
                self._handle(message)
        finally:
            self._announce(ready=False)
            self.producer.flush(10)
            self.consumer.close()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"kafka-app-{self.name}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _on_assign(self, consumer: Consumer, partitions: list) -> None:
        now_ms = int(time.time() * 1000)
        self._taken_over = {p.partition: now_ms for p in partitions}
        self.assigned.set()
        log.info("partitions assigned", extra={"processor": self.name, "partitions": [p.partition for p in partitions]})

    def _heartbeat(self) -> None:
        """Tell the gateways this processor serves, once its partitions are assigned."""
        if self.assigned.is_set() and time.monotonic() - self._last_heartbeat >= self.settings.heartbeat_interval_s:
            self._last_heartbeat = time.monotonic()
            self._announce(ready=True)

    def _announce(self, ready: bool) -> None:
        extra = self.status_fields() if self.status_fields is not None else {}
        status = ServiceStatus(service=self.name, instance=self.instance, engine=self.engine, ready=ready,
                               ts_ms=int(time.time() * 1000), metrics=metrics.snapshot(), **extra)
        self._produce(Outgoing(self.settings.kafka_status_topic, self.name.encode(),
                               status.model_dump_json().encode()))

    def _is_possibly_half_handled(self, message: Message) -> bool:
        """Only the first message of a partition after a takeover can be: processing is sequential and
        each offset is committed once handled. A message produced after the takeover cannot be."""
        taken_over = self._taken_over.pop(message.partition() or 0, None)
        _kind, produced_ms = message.timestamp()
        return taken_over is not None and produced_ms < taken_over

    def _handle(self, message: Message) -> None:
        key, value = message.key(), message.value() or b""
        self.recovering = self._is_possibly_half_handled(message)
        started = time.perf_counter()
        _kind, produced_ms = message.timestamp()
        if produced_ms > 0:
            metrics.QUEUE_LAG_SECONDS.labels(self.name).observe(max(0.0, time.time() - produced_ms / 1000))
        headers = message.headers() or []
        pairs = headers.items() if isinstance(headers, dict) else headers
        incoming = {name: raw.decode(errors="replace") for name, raw in pairs
                    if name in TRACE_FIELDS and isinstance(raw, bytes)}
        with log_scope(**incoming):
            outcome = self._run_handler(message, key, value)
        metrics.MESSAGES.labels(self.name, outcome).inc()
        metrics.HANDLE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        self.producer.flush(30)
        self.consumer.commit(message=message, asynchronous=True)
        self.processed += 1

    def _run_handler(self, message: Message, key: bytes | None, value: bytes) -> str:
        """Produce everything the handler yields; dead-letter the message if it cannot be handled."""
        outcome = "ok"
        try:
            for out in self.handler(key, value):
                self._produce(out)
        except InvalidMessage as error:
            outcome = "dead_letter"
            self._dead_letter(message, str(error))
        except Exception as error:  # a bug or an engine failure must not stop the other sessions
            outcome = "failed"
            log.exception("processing failed", extra={"processor": self.name, "offset": message.offset()})
            self._dead_letter(message, f"processing failed: {type(error).__name__}: {error}")
        return outcome

    def _produce(self, out: Outgoing) -> None:
        headers = list(out.headers) + [(name, value.encode()) for name, value in log_context().items()
                                       if name in TRACE_FIELDS and all(name != h for h, _ in out.headers)]
        while True:
            try:
                self.producer.produce(out.topic, out.value, key=out.key, headers=headers or None)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)
        self.producer.poll(0)

    def _dead_letter(self, message: Message, reason: str) -> None:
        letter = DeadLetter(reason=reason, processor=self.name, source_topic=message.topic() or "",
                            source_partition=message.partition() or 0, source_offset=message.offset() or 0,
                            key=message.key(), value=message.value() or b"")
        self.producer.produce(self.settings.kafka_dlq_topic, letter.value, key=letter.key,
                              headers=list(letter.headers()))
        self.dead_lettered += 1
        log.warning("message dead-lettered", extra={"processor": self.name, "reason": reason[:500]})

    def _log_consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        log.warning("consumer error", extra={"processor": self.name, "error": str(error)})
        if error.fatal():
            raise RuntimeError(f"fatal Kafka error in {self.name}: {error}")
        time.sleep(0.1)


def run_until_stopped(app: KafkaApp, listeners: Iterable[BroadcastListener | None] = ()) -> None:
    """Serve until SIGTERM or Ctrl-C; the message in hand is finished first, then the listeners stop."""
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    try:
        app.run()
    except KeyboardInterrupt:
        app.stop()
    finally:
        for listener in listeners:
            if listener is not None:
                listener.stop()
