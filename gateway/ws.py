"""The WebSocket protocol at ``/ws/stream``: select, speak, interrupt, resume; the session's chunks out."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from consumers.session_reader import Chunk, StreamItem, decode_session_record
from consumers.session_stream import Record
from gateway import metrics
from gateway.audio_input import AudioChunk, chunk_of_frame, chunk_of_message
from gateway.auth import ADMIN, Principal
from gateway.forwarding import Forwarder, Verdict
from gateway.idle_clips import idle_clip_url
from gateway.ratelimit import caller_key
from gateway.services import Services
from gateway.speak import Refusal, UsableAvatar, admit, admit_audio, send, send_segments, usable_avatar
from producers.audio import AudioError, Utterance, check_format
from schemas.avatar import VoiceChoice
from schemas.common import new_id
from schemas.speech import SpeechSegment
from schemas.websocket import (
    CLIENT_MESSAGE,
    CLIENT_TYPES,
    AudioEnd,
    AudioInput,
    AvatarSelection,
    Error,
    Interrupt,
    Interrupted,
    Ping,
    Pong,
    RequestAccepted,
    Resume,
    SessionReady,
    TextInput,
    VideoChunk,
)

log = logging.getLogger(__name__)
ClientMessage = AvatarSelection | TextInput | AudioInput | AudioEnd | Interrupt | Resume | Ping
CLOSE_TOO_SLOW = 4008


def parse_client_message(raw: str) -> ClientMessage:
    """Validate one client frame, or raise Refusal with a specific code."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise Refusal("invalid_json", f"message is not valid JSON: {error.msg} at position {error.pos}") from None
    except RecursionError:  # thousands of nested brackets (found by tests/fuzz): refused, not a crashed handler
        raise Refusal("invalid_json", "message is not valid JSON: nested too deeply") from None
    try:  # a "\ud800" escape decodes to text that can go nowhere (Kafka, PostgreSQL): refused here
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal("invalid_message", "message holds an unpaired UTF-16 surrogate escape") from None
    if not isinstance(data, dict):
        raise Refusal("invalid_message", "message must be a JSON object with a 'type' field")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise Refusal("unknown_type", f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}")
    try:
        return CLIENT_MESSAGE.validate_python(data)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"][1:]) or "message"
        raise Refusal("invalid_message", f"{kind}: field '{field}': {problem['msg']}") from None


def session_item_to_message(item: StreamItem) -> dict[str, Any]:
    """A session-topic item as the WebSocket message that carries it; its offset is the client's cursor."""
    if isinstance(item, Chunk):
        return VideoChunk(request_id=item.request_id, seq=item.seq, pts_ms=item.pts_ms, duration_ms=item.duration_ms,
                          data=base64.b64encode(item.data).decode(), mime=item.mime, is_last=item.is_last,
                          text=item.text, cursor=item.offset).model_dump(exclude_none=True)
    return Error(code=item.code, message=item.message, request_id=item.request_id,
                 cursor=item.offset).model_dump(exclude_none=True)


def _dump(message: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = message.model_dump(exclude_none=True)
    return dumped


class StreamSession:
    """One WebSocket connection: its frames parsed and dispatched, its session's items sent in order.

    What is forwarded is decided by a Forwarder (gateway/forwarding.py); sessions are opened, resumed and
    heard through the gateway's SessionRegistry (gateway/sessions.py).
    """

    def __init__(self, websocket: WebSocket, services: Services, principal: Principal = ADMIN) -> None:
        self.websocket = websocket
        self.services = services
        self.settings = services.settings
        self.registry = services.sessions
        self.principal = principal
        self.caller = caller_key(services.settings, websocket)
        self.session_id: str | None = None
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.forwarder = Forwarder(self.settings.ws_max_pending_messages)
        self.latency = metrics.LatencyWatch()
        # Read with the avatar's access check, so text inputs need no database (they go on through an outage).
        self.avatar: UsableAvatar | None = None
        self.utterance: Utterance | None = None  # the audio utterance being received, between audio_input and end

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        metrics.ACTIVE_CONNECTIONS.inc()
        try:
            while not sender.done():
                frame = await self.websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                await self._on_frame(frame)
        except WebSocketDisconnect:
            pass
        finally:
            metrics.ACTIVE_CONNECTIONS.dec()
            sender.cancel()
            self._detach()  # first: a client resuming at once on another connection must find no listener here
            await self._finish_utterance()

    async def _on_frame(self, frame: Mapping[str, Any]) -> None:
        try:
            if frame.get("text") is None:
                await self._hear(chunk_of_frame(self.settings, frame.get("bytes") or b""))
            else:
                await self._on_message(parse_client_message(frame["text"]))
        except psycopg.OperationalError:
            metrics.ERRORS.labels("database_unavailable").inc()
            await self.outbox.put(_dump(Error(code="database_unavailable", message=(
                "the database is unavailable: sessions already speaking go on; try this again shortly"))))
        except Refusal as error:
            metrics.ERRORS.labels(error.code).inc()
            await self.outbox.put(_dump(Error(code=error.code, message=error.message, request_id=error.request_id)))

    async def _on_message(self, message: ClientMessage) -> None:
        match message:
            case AvatarSelection():
                await self._select(message)
            case TextInput():
                await self._say(message)
            case AudioInput():
                await self._hear(chunk_of_message(self.settings, message))
            case AudioEnd():
                await self._audio_end()
            case Interrupt():
                await self._interrupt(message)
            case Resume():
                await self._resume(message)
            case Ping():
                await self.outbox.put(_dump(Pong(ts_ms=int(time.time() * 1000))))

    async def _select(self, message: AvatarSelection) -> None:
        self.avatar = await usable_avatar(self.services.store, self.principal, message.avatar_id)
        if self.session_id is None:
            self.session_id = await asyncio.to_thread(self.registry.open, message.avatar_id, self.principal.user_id,
                                                      self._on_record)
        else:
            await asyncio.to_thread(self.registry.select, self.session_id, message.avatar_id, self.principal.user_id)
        await self.outbox.put(_dump(SessionReady(session_id=self.session_id, avatar_id=message.avatar_id,
                                                 idle_clip_url=idle_clip_url(message.avatar_id))))

    async def _say(self, message: TextInput) -> None:
        if self.session_id is None or self.avatar is None:
            raise Refusal("no_avatar_selected", "send an avatar_selection (or resume) before text_input")
        admitted = admit(self.settings, self.avatar, message.text, message.language,
                         VoiceChoice(tts=message.tts, voice=message.voice), message.rate)
        limiter = self.websocket.app.state.limits.requests
        if not limiter.allow(self.caller):
            raise Refusal("rate_limited", f"too many requests; wait {limiter.retry_after_s()} s")
        request_id = new_id()
        self.forwarder.accept(request_id)  # before producing: its first chunk may come back at once
        self.latency.accepted(request_id)
        try:
            await send(self.services.producer, admitted, session_id=self.session_id, request_id=request_id)
        except Refusal:
            self.forwarder.withdraw(request_id)
            self.latency.withdrawn(request_id)
            raise
        metrics.REQUESTS.labels(admitted.language or "auto").inc()
        await self.outbox.put(_dump(RequestAccepted(request_id=request_id, language=admitted.language,
                                                    queued_behind=self.forwarder.queued_behind)))

    async def _hear(self, chunk: AudioChunk) -> None:
        """Audio of the utterance in progress (its first chunk opens it); complete segments go to Kafka at once."""
        if self.session_id is None or self.avatar is None:
            raise Refusal("no_avatar_selected", "send an avatar_selection (or resume) before audio_input")
        utterance = self.utterance or await self._open_utterance(chunk)
        request_id = utterance.target.request_id
        try:
            if chunk.sample_rate != utterance.target.sample_rate:
                raise AudioError("sample_rate_changed", f"this utterance is at {utterance.target.sample_rate} Hz; "
                                                        f"got {chunk.sample_rate} Hz (send audio_end first)")
            check_format(chunk.sample_rate, chunk.sample_format, chunk.channels)
            segments = utterance.add(chunk.pcm)
        except AudioError as error:  # this chunk is refused; the utterance goes on
            raise Refusal.of_audio(error, request_id) from None
        await self._send_audio(utterance, segments)

    async def _open_utterance(self, chunk: AudioChunk) -> Utterance:
        assert self.session_id is not None and self.avatar is not None
        admitted = admit_audio(self.settings, self.avatar, chunk.sample_rate, sample_format=chunk.sample_format,
                               channels=chunk.channels, language=chunk.language, text=chunk.text)
        limiter = self.websocket.app.state.limits.requests
        if not limiter.allow(self.caller):
            raise Refusal("rate_limited", f"too many requests; wait {limiter.retry_after_s()} s")
        request_id = new_id()
        self.utterance = Utterance(admitted.target(session_id=self.session_id, request_id=request_id),
                                   max_samples=int(self.settings.audio_max_utterance_s * chunk.sample_rate))
        self.forwarder.accept(request_id)
        self.latency.accepted(request_id)
        metrics.REQUESTS.labels(admitted.language).inc()
        # Accepted before any of its audio is produced, so the answer always comes before the first chunk.
        await self.outbox.put(_dump(RequestAccepted(request_id=request_id, language=admitted.language,
                                                    queued_behind=self.forwarder.queued_behind)))
        return self.utterance

    async def _audio_end(self) -> None:
        utterance, self.utterance = self.utterance, None
        if utterance is None:
            raise Refusal("no_audio", "audio_end without audio: send audio_input first")
        request_id = utterance.target.request_id
        try:
            segments = utterance.end()
        except AudioError as error:  # e.g. silent_audio: nothing was produced, the request is over
            self._withdraw(request_id)
            raise Refusal.of_audio(error, request_id) from None
        await self._send_audio(utterance, segments)

    async def _send_audio(self, utterance: Utterance, segments: list[SpeechSegment]) -> None:
        try:
            await send_segments(self.services.producer, segments)
        except Refusal:  # a lost segment would leave a hole in the video: the utterance ends here
            if self.utterance is utterance:
                self.utterance = None
            self._withdraw(utterance.target.request_id)
            raise

    def _withdraw(self, request_id: str) -> None:
        self.forwarder.withdraw(request_id)
        self.latency.withdrawn(request_id)

    async def _finish_utterance(self) -> None:
        """The connection ends mid-utterance: what was heard is finished, so a resumed client gets its video."""
        utterance, self.utterance = self.utterance, None
        if utterance is None or not utterance.audible:
            return
        try:
            await send_segments(self.services.producer, utterance.end())
        except (Refusal, AudioError):
            log.warning("an open utterance could not be finished", extra={"request_id": utterance.target.request_id})

    async def _interrupt(self, message: Interrupt) -> None:
        if self.session_id is None:
            raise Refusal("no_session", "nothing to interrupt: no session selected")
        stopped = self.forwarder.interrupt(message.request_id)
        if self.utterance is not None and self.utterance.target.request_id in stopped:
            self.utterance = None  # its remaining audio is not wanted: the next audio_input opens a new utterance
        metrics.INTERRUPTS.inc(len(stopped))
        await self.outbox.put(_dump(Interrupted(request_ids=stopped)))
        if stopped:
            await asyncio.to_thread(self.services.producer.interrupt, self.session_id, stopped)

    async def _resume(self, message: Resume) -> None:
        record = await asyncio.to_thread(self.registry.resumable, message.session_id, self.principal)
        self.avatar = await usable_avatar(self.services.store, self.principal, record.avatar_id)
        await self._finish_utterance()  # it belongs to the session being left
        self._detach()
        self.session_id = record.session_id
        if message.cursor is not None:
            start = message.cursor + 1
        else:
            start = OFFSET_BEGINNING
            if message.request_id is not None and message.seq is not None:
                self.forwarder.resume_from_chunk(message.request_id, message.seq)
        self.registry.attach(record.session_id, self._on_record, start)
        await asyncio.to_thread(self.registry.touch, record.session_id)
        await self.outbox.put(_dump(SessionReady(session_id=record.session_id, avatar_id=record.avatar_id,
                                                 resumed=True, idle_clip_url=idle_clip_url(record.avatar_id))))

    def _detach(self) -> None:
        if self.session_id:
            self.registry.detach(self.session_id)

    def _on_record(self, record: Record) -> None:
        """Called on the consumer thread: decode, then hand over to the event loop."""
        item = decode_session_record(record.value, record.offset)
        if item is not None:
            self.loop.call_soon_threadsafe(self._forward, item)

    def _forward(self, item: StreamItem) -> None:
        """On the event loop: queue what the forwarder lets through; past its bound, drop the client."""
        verdict = self.forwarder.offer(item, pending=self.outbox.qsize())
        if verdict is Verdict.TOO_SLOW:
            self._drop_slow_client()
        elif verdict is Verdict.FORWARD:
            if isinstance(item, Chunk):
                self.latency.chunk_sent(item)
            else:
                metrics.ERRORS.labels(item.code).inc()
            self.outbox.put_nowait(session_item_to_message(item))

    def _drop_slow_client(self) -> None:
        """Stop buffering: tell the client (it can resume from its last cursor) and close."""
        metrics.DROPPED_SLOW.inc()
        self._detach()
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(_dump(Error(code="client_too_slow", message=(
            f"more than {self.settings.ws_max_pending_messages} messages waiting: reconnect and resume "
            f"from your last cursor"))))
        self.outbox.put_nowait(None)  # then close

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                await self.websocket.close(code=CLOSE_TOO_SLOW, reason="client too slow")
                return
            await self.websocket.send_text(json.dumps(message, ensure_ascii=False))
