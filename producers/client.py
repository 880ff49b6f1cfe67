"""The typed client other systems (and the gateway) use: text or audio in, a session's video out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumers.session_reader import (
    Chunk,
    FirstCopies,
    PipelineError,
    RequestAssembler,
    StreamError,
    StreamItem,
    decode_session_record,
)
from infra.kafka import TopicAdmin, consumer_config, new_producer
from infra.settings import Settings
from producers.audio import Utterance, UtteranceTarget, check_utterance, pcm16_samples, whole_utterance
from schemas.common import Language, new_id
from schemas.control import Interrupt
from schemas.requests import TextRequest, TtsEngineName, rate_problem
from schemas.speech import SpeechSegment

# The SDK's names: what a session's stream yields and raises is read by consumers/session_reader.py.
__all__ = ["AvatarProducer", "Chunk", "PipelineError", "ProduceError", "RequestAssembler", "StreamError",
           "StreamItem", "StreamTimeout"]
log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """The request could not be handed to the broker."""


class StreamTimeout(TimeoutError):
    """Nothing (more) arrived on the session topic in time."""


class AvatarProducer:
    """Sends text requests and speech audio keyed by session id, so a session's requests stay in order."""

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self.producer = producer or new_producer(settings)
        self._admin: TopicAdmin | None = None  # only say() needs one, to create and delete its session topic

    def warm_up(self, timeout_s: float = 10.0) -> None:
        """Fetch metadata now, so the first real request does not pay for the connection."""
        try:
            self.producer.list_topics(self.settings.kafka_requests_topic, timeout=timeout_s)
        except KafkaException as error:
            raise ProduceError(f"broker unreachable: {error}") from error

    def send_text(self, *, session_id: str, avatar_id: str, text: str, language: Language | None = None,
                  request_id: str | None = None, wait: bool = True, tts: TtsEngineName | None = None,
                  voice: str | None = None, rate: float | None = None) -> TextRequest:
        """Produce one text request. A ``rate`` outside 0.5-2.0 raises PipelineError ``invalid_rate`` here, the
        error the TTS processor would give, before anything is sent."""
        problem = rate_problem(rate)
        if problem is not None:
            raise PipelineError("invalid_rate", problem, request_id)
        fields: dict[str, Any] = {"session_id": session_id, "avatar_id": avatar_id, "text": text,
                                  "language": language, "created_at_ms": int(time.time() * 1000), "tts": tts,
                                  "voice": voice, "rate": rate}
        if request_id:
            fields["request_id"] = request_id
        request = TextRequest(**fields)
        self.send(request, wait=wait)
        return request

    def send(self, request: TextRequest, *, wait: bool = True, timeout_s: float = 10.0) -> None:
        errors: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        self.producer.produce(self.settings.kafka_requests_topic, request.to_kafka(),
                              key=request.session_id.encode(), on_delivery=delivered)
        if wait:
            if self.producer.flush(timeout_s) > 0:
                raise ProduceError(f"request {request.request_id} not acknowledged within {timeout_s} s")
            if errors:
                raise ProduceError(f"request {request.request_id} rejected by the broker: {errors[0]}")
        else:
            self.producer.poll(0)

    def send_audio(self, *, session_id: str, avatar_id: str, pcm16: bytes, sample_rate: int,
                   language: Language = "fa", text: str = "", request_id: str | None = None) -> str:
        """Send a whole utterance of speech (PCM16LE mono) onto ``avatar.speech``, bypassing the TTS; its id.

        Raises producers.audio.AudioError for audio the service cannot take (its ``code`` says why), ProduceError
        when the broker does not take it. For audio that is still arriving use ``audio_stream``.
        """
        target = UtteranceTarget(request_id=request_id or new_id(), session_id=session_id, avatar_id=avatar_id,
                                 sample_rate=sample_rate, language=language, text=text)
        self.send_segments(whole_utterance(target, pcm16_samples(pcm16), max_samples=self._max_samples(sample_rate)))
        return target.request_id

    def audio_stream(self, *, session_id: str, avatar_id: str, sample_rate: int, language: Language = "fa",
                     text: str = "", request_id: str | None = None) -> AudioStream:
        """An utterance sent as its audio arrives: ``write(pcm16)`` any number of times, then ``end()``."""
        target = UtteranceTarget(request_id=request_id or new_id(), session_id=session_id, avatar_id=avatar_id,
                                 sample_rate=sample_rate, language=language, text=text)
        return AudioStream(self, Utterance(target, max_samples=self._max_samples(sample_rate)))

    def _max_samples(self, sample_rate: int) -> int:
        return int(self.settings.audio_max_utterance_s * sample_rate)

    def send_segments(self, segments: list[SpeechSegment], *, timeout_s: float = 10.0) -> None:
        """Produce speech segments (schema v3) onto the speech topic, keyed by session, and wait for the broker."""
        errors: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        for segment in segments:
            self.producer.produce(self.settings.kafka_speech_topic, segment.to_kafka(),
                                  key=segment.meta.session_id.encode(), on_delivery=delivered)
        if segments and self.producer.flush(timeout_s) > 0:
            raise ProduceError(f"audio of request {segments[0].meta.request_id} not acknowledged within {timeout_s} s")
        if errors:
            raise ProduceError(f"audio of request {segments[0].meta.request_id} rejected by the broker: {errors[0]}")

    def interrupt(self, session_id: str, request_ids: list[str] | None = None) -> Interrupt:
        """Stop the session's named requests (or all it has sent so far): processors drop their work."""
        message = Interrupt(session_id=session_id, request_ids=request_ids or [], ts_ms=int(time.time() * 1000))
        self.producer.produce(self.settings.kafka_control_topic, message.to_kafka(), key=session_id.encode())
        self.producer.flush(10)
        return message

    def stream(self, session_id: str, *, request_id: str | None = None, from_offset: int = OFFSET_BEGINNING,
               timeout_s: float | None = 60.0) -> Generator[StreamItem, None, None]:
        """The session's chunks and errors in order, each once, from ``from_offset`` (default: the start).

        With ``request_id`` only that request's items come, and the iterator ends after its last chunk or its
        error; without it the iterator follows the session until you stop iterating. ``timeout_s`` is the
        longest wait for the topic to appear and then for each next item (None: wait for ever); past it
        StreamTimeout is raised. Each call reads with its own short-lived consumer (no consumer group),
        closed when the iteration ends or the generator is closed (``close()``, or leaving a for loop early
        and dropping it).
        """
        topic = self.settings.session_topic(session_id)
        consumer = Consumer(consumer_config(self.settings, group_id=None))
        try:
            self._wait_for_topic(consumer, topic, timeout_s)
            consumer.assign([TopicPartition(topic, 0, from_offset)])
            copies = FirstCopies()
            for item in self._poll_items(consumer, topic, timeout_s):
                if request_id is not None and item.request_id not in (request_id, None):
                    continue
                if not copies.first(item):  # at-least-once delivery: a redelivered copy is not shown twice
                    continue
                yield item
                if request_id is not None and (isinstance(item, StreamError) or item.is_last):
                    return
        finally:
            consumer.close()

    def say(self, *, avatar_id: str, text: str, language: Language | None = None, session_id: str | None = None,
            timeout_s: float = 60.0, on_chunk: Callable[[Chunk], None] | None = None,
            on_sent: Callable[[TextRequest], None] | None = None, tts: TtsEngineName | None = None,
            voice: str | None = None, rate: float | None = None) -> bytes:
        """Send one text and wait for its whole MP4 (the concatenated chunks).

        ``tts`` and ``voice`` pick the backend and voice; absent, the TTS processor's settings decide (the
        avatar's default voice is applied by the gateway only: a producer names the voice it wants). ``rate``
        is the speaking rate, 0.5-2.0 (1 = normal).

        Without ``session_id`` a transient session is used and its topic deleted afterwards. Raises
        PipelineError when the pipeline reports an error (e.g. ``unknown_avatar``), StreamTimeout when the
        video is not finished within ``timeout_s``, ProduceError when the broker cannot take the request.
        """
        def send(session: str, request_id: str) -> None:
            request = self.send_text(session_id=session, avatar_id=avatar_id, text=text, language=language,
                                     request_id=request_id, tts=tts, voice=voice, rate=rate)
            if on_sent is not None:
                on_sent(request)

        return self._render(send, session_id, timeout_s, on_chunk)

    def say_audio(self, *, avatar_id: str, pcm16: bytes, sample_rate: int, language: Language = "fa",
                  text: str = "", session_id: str | None = None, timeout_s: float = 60.0,
                  on_chunk: Callable[[Chunk], None] | None = None,
                  on_sent: Callable[[str], None] | None = None) -> bytes:
        """Send one utterance of speech audio and wait for its whole MP4, as ``say`` does for text.

        Raises producers.audio.AudioError for audio the service cannot take, before anything is sent.
        """
        # refused here, before a session topic is made
        check_utterance(pcm16_samples(pcm16), sample_rate, max_samples=self._max_samples(sample_rate))

        def send(session: str, request_id: str) -> None:
            self.send_audio(session_id=session, avatar_id=avatar_id, pcm16=pcm16, sample_rate=sample_rate,
                            language=language, text=text, request_id=request_id)
            if on_sent is not None:
                on_sent(request_id)

        return self._render(send, session_id, timeout_s, on_chunk)

    def _render(self, send: Callable[[str, str], None], session_id: str | None, timeout_s: float,
                on_chunk: Callable[[Chunk], None] | None) -> bytes:
        """Send one request with ``send(session, request_id)`` and gather its MP4 from the session topic."""
        transient = session_id is None
        session = session_id or f"sdk-{new_id()}"
        request_id = new_id()
        topic = self._session_admin().ensure_session_topic(session)
        deadline = time.monotonic() + timeout_s
        assembler = RequestAssembler(request_id)
        items = self.stream(session, request_id=request_id, timeout_s=timeout_s)
        try:
            send(session, request_id)
            for item in items:
                assembler.add(item)
                if isinstance(item, Chunk) and on_chunk is not None:
                    on_chunk(item)
                if time.monotonic() > deadline and not assembler.finished:
                    raise StreamTimeout(f"request {request_id} not finished within {timeout_s:g} s")
            if not assembler.finished:
                raise StreamTimeout(f"request {request_id} not finished within {timeout_s:g} s")
            return assembler.mp4()
        finally:
            # The stream's consumer is closed before its topic is deleted, whatever happened: librdkafka
            # crashes the process (SIGSEGV) when a topic it is still assigned is deleted.
            items.close()
            if transient:
                self._session_admin().delete([topic])

    def _session_admin(self) -> TopicAdmin:
        if self._admin is None:
            self._admin = TopicAdmin(self.settings)
        return self._admin

    @staticmethod
    def _wait_for_topic(consumer: Consumer, topic: str, timeout_s: float | None) -> None:
        """Session topics are created on demand: assigning one that does not exist yet would only error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if topic in consumer.list_topics(timeout=5).topics:
                    return
            except KafkaException as error:
                raise ProduceError(f"broker unreachable: {error}") from error
            if deadline is not None and time.monotonic() > deadline:
                raise StreamTimeout(f"session topic {topic} did not appear within {timeout_s:g} s")
            time.sleep(0.05)

    @staticmethod
    def _poll_items(consumer: Consumer, topic: str, timeout_s: float | None) -> Iterator[StreamItem]:
        last_arrival = time.monotonic()
        while True:
            message: Message | None = consumer.poll(0.05)
            if message is None:
                if timeout_s is not None and time.monotonic() - last_arrival > timeout_s:
                    raise StreamTimeout(f"nothing arrived on {topic} for {timeout_s:g} s")
                continue
            error = message.error()
            if error is not None:
                if error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    log.warning("session stream error", extra={"topic": topic, "error": str(error)})
                continue
            last_arrival = time.monotonic()
            item = decode_session_record(message.value() or b"", message.offset() or 0)
            if item is not None:
                yield item

    def close(self, timeout_s: float = 10.0) -> None:
        self.producer.flush(timeout_s)


class AudioStream:
    """One utterance sent as its audio arrives (an agent's TTS): whole-frame segments leave as they fill."""

    def __init__(self, producer: AvatarProducer, utterance: Utterance) -> None:
        self.producer = producer
        self.utterance = utterance

    @property
    def request_id(self) -> str:
        return self.utterance.target.request_id

    def write(self, pcm16: bytes | np.ndarray) -> None:
        """More PCM16LE mono samples (bytes or an int16 array) at the stream's rate."""
        samples = pcm16_samples(pcm16) if isinstance(pcm16, bytes) else np.asarray(pcm16, dtype=np.int16)
        self.producer.send_segments(self.utterance.add(samples))

    def end(self) -> None:
        """The utterance is complete: its last segment is sent (AudioError ``silent_audio`` if it never sounded)."""
        self.producer.send_segments(self.utterance.end())
