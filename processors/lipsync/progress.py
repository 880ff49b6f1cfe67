"""Reads back what already reached a session's topic for a request, for a worker taking over after a crash."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.kafka import consumer_config
from infra.settings import Settings
from processors.lipsync.core import EmittedProgress
from schemas.envelope import EnvelopeError
from schemas.session import SessionEvent, VideoChunkMeta


class SessionTopicProgress:
    """Scans ``avatar.session.<id>`` from the start (rare: only after a takeover) for a request's last chunk.

    The end of the topic is found by silence, not by the high watermark: the embedded broker reports
    wrong watermarks (docs/design.md).
    """

    def __init__(self, settings: Settings, *, first_wait_s: float = 1.5, quiet_s: float = 0.3) -> None:
        self.settings = settings
        self.first_wait_s = first_wait_s
        self.quiet_s = quiet_s

    def __call__(self, session_id: str, request_id: str) -> EmittedProgress | None:
        topic = self.settings.session_topic(session_id)
        consumer = Consumer(consumer_config(self.settings, group_id=None))
        try:
            if topic not in consumer.list_topics(topic, timeout=5).topics:
                return None
            consumer.assign([TopicPartition(topic, 0, 0)])
            return self._scan(consumer, request_id)
        except KafkaException:
            return None
        finally:
            consumer.close()

    def _scan(self, consumer: Consumer, request_id: str) -> EmittedProgress | None:
        last: VideoChunkMeta | None = None
        deadline = time.monotonic() + self.first_wait_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is None or message.error():
                continue
            deadline = time.monotonic() + self.quiet_s
            try:
                meta = SessionEvent.from_kafka(message.value() or b"").meta
            except (EnvelopeError, ValueError):
                continue
            if isinstance(meta, VideoChunkMeta) and meta.request_id == request_id:
                last = meta
        if last is None:
            return None
        frames_end = round((last.pts_ms + last.duration_ms) * self.settings.video_fps / 1000)
        return EmittedProgress(last_seq=last.seq, frames_end=frames_end, finished=last.is_last)
