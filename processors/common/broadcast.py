"""Hears a one-partition topic on every processor instance (assigned, no consumer group), from now on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from pydantic import ValidationError

from infra.kafka import consumer_config
from infra.settings import Settings

log = logging.getLogger(__name__)


class BroadcastListener:
    """A small consumer thread calling ``on_message`` with each new message's value.

    Unlike a consumer group, where each message reaches one instance, every instance hears everything:
    what interrupts and invalidations need. Messages from before start() don't matter to a fresh instance.
    """

    def __init__(self, settings: Settings, topic: str, on_message: Callable[[bytes], None], *, name: str,
                 background: bool = False) -> None:
        self.topic = topic
        self.on_message = on_message
        self.name = name
        self.heard = 0
        self.consumer = Consumer(consumer_config(settings, group_id=None, background=background))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self.consumer.list_topics(self.topic, timeout=10)
        self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_END)])
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.05)
            if message is None or message.error():
                continue
            try:
                self.on_message(message.value() or b"")
                self.heard += 1
            except ValidationError as error:
                log.warning("ignored an invalid message", extra={"topic": self.topic, "error": str(error)[:300]})
