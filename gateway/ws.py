"""The WebSocket protocol at ``/ws/stream``: select, speak, interrupt, resume; the session's chunks out."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from consumers.session_reader import Chunk, FirstCopies, StreamError, StreamItem, decode_session_record
from consumers.session_stream import Record
from gateway import metrics
from gateway.auth import ADMIN, Principal
from gateway.idle_clips import idle_clip_url
from gateway.ratelimit import caller_key
from gateway.services import Services
from gateway.speak import Refusal, UsableAvatar, admit, send, usable_avatar
from schemas.avatar import VoiceChoice
from schemas.common import new_id
from schemas.websocket import (
    CLIENT_MESSAGE,
    CLIENT_TYPES,
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
ClientMessage = AvatarSelection | TextInput | Interrupt | Resume | Ping
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
    """One WebSocket connection: its session, the requests in flight, and the forwarding of their chunks."""

    def __init__(self, websocket: WebSocket, services: Services, principal: Principal = ADMIN) -> None:
        self.websocket = websocket
        self.services = services
        self.settings = services.settings
        self.principal = principal
        self.caller = caller_key(services.settings, websocket)
        self.session_id: str | None = None
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.in_flight: OrderedDict[str, None] = OrderedDict()  # accepted, final chunk not yet forwarded
        self.interrupted: set[str] = set()
        self.resume_after: tuple[str, int] | None = None  # (request_id, seq) already received by the client
        self.too_slow = False
        self.copies = FirstCopies()  # a redelivered chunk or error is never forwarded twice
        self.accepted_at: dict[str, float] = {}  # request → when accepted, until its first chunk
        self.playback_origin: dict[str, float] = {}  # request → when its first chunk went out
        # Read with the avatar's access check, so text inputs need no database (they go on through an outage).
        self.avatar: UsableAvatar | None = None

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
            self._detach()

    async def _on_frame(self, frame: Mapping[str, Any]) -> None:
        try:
            if frame.get("text") is None:
                raise Refusal("binary_not_supported", "send JSON text frames, not binary frames")
            await self._on_message(parse_client_message(frame["text"]))
        except psycopg.OperationalError:
            metrics.ERRORS.labels("database_unavailable").inc()
            await self.outbox.put(_dump(Error(code="database_unavailable", message=(
                "the database is unavailable: sessions already speaking go on; try this again shortly"))))
        except Refusal as error:
            metrics.ERRORS.labels(error.code).inc()
            await self.outbox.put(_dump(Error(code=error.code, message=error.message)))

    async def _on_message(self, message: ClientMessage) -> None:
        match message:
            case AvatarSelection():
                await self._select(message)
            case TextInput():
                await self._say(message)
            case Interrupt():
                await self._interrupt(message)
            case Resume():
                await self._resume(message)
            case Ping():
                await self.outbox.put(_dump(Pong(ts_ms=int(time.time() * 1000))))

    async def _select(self, message: AvatarSelection) -> None:
        self.avatar = await usable_avatar(self.services.store, self.principal, message.avatar_id)
        if self.session_id is None:
            self.session_id = new_id()
            topic = await asyncio.to_thread(self.services.admin.ensure_session_topic, self.session_id)
            self._attach(topic, OFFSET_BEGINNING)
        await asyncio.to_thread(self.services.sessions.open, self.session_id, message.avatar_id,
                                self.principal.user_id)
        await self.outbox.put(_dump(SessionReady(session_id=self.session_id, avatar_id=message.avatar_id,
                                                 idle_clip_url=idle_clip_url(message.avatar_id))))

    async def _say(self, message: TextInput) -> None:
        if self.session_id is None or self.avatar is None:
            raise Refusal("no_avatar_selected", "send an avatar_selection (or resume) before text_input")
        admitted = admit(self.settings, self.avatar, message.text, message.language,
                         VoiceChoice(tts=message.tts, voice=message.voice))
        limiter = self.websocket.app.state.limits.requests
        if not limiter.allow(self.caller):
            raise Refusal("rate_limited", f"too many requests; wait {limiter.retry_after_s()} s")
        request_id = new_id()
        self.in_flight[request_id] = None  # before producing: its first chunk may come back at once
        self.accepted_at[request_id] = time.perf_counter()
        try:
            await send(self.services.producer, admitted, session_id=self.session_id, request_id=request_id)
        except Refusal:
            self.in_flight.pop(request_id, None)
            self.accepted_at.pop(request_id, None)
            raise
        metrics.REQUESTS.labels(admitted.language or "auto").inc()
        await self.outbox.put(_dump(RequestAccepted(request_id=request_id, language=admitted.language,
                                                    queued_behind=len(self.in_flight) - 1)))

    async def _interrupt(self, message: Interrupt) -> None:
        if self.session_id is None:
            raise Refusal("no_session", "nothing to interrupt: no session selected")
        if message.request_id is not None and message.request_id not in self.in_flight:
            raise Refusal("unknown_request", f"request '{message.request_id}' is not in flight")
        stopped = [message.request_id] if message.request_id else list(self.in_flight)
        self.interrupted.update(stopped)  # from now on none of their chunks is forwarded
        for request_id in stopped:
            self.in_flight.pop(request_id, None)
        metrics.INTERRUPTS.inc(len(stopped))
        await self.outbox.put(_dump(Interrupted(request_ids=stopped)))
        if stopped:
            await asyncio.to_thread(self.services.producer.interrupt, self.session_id, stopped)

    async def _resume(self, message: Resume) -> None:
        record = await asyncio.to_thread(self.services.sessions.get, message.session_id)
        if record is None or not (self.principal.is_admin or record.user_id == self.principal.user_id):
            raise Refusal("unknown_session", f"no session '{message.session_id}' to resume")
        if record.ended:
            raise Refusal("session_ended", f"session '{message.session_id}' ended after being idle")
        self.avatar = await usable_avatar(self.services.store, self.principal, record.avatar_id)
        self._detach()
        self.session_id = record.session_id
        if message.cursor is not None:
            start = message.cursor + 1
        else:
            start = OFFSET_BEGINNING
            if message.request_id is not None and message.seq is not None:
                self.resume_after = (message.request_id, message.seq)
        self._attach(self.settings.session_topic(record.session_id), start)
        await asyncio.to_thread(self.services.sessions.touch, [record.session_id])
        await self.outbox.put(_dump(SessionReady(session_id=record.session_id, avatar_id=record.avatar_id,
                                                 resumed=True, idle_clip_url=idle_clip_url(record.avatar_id))))

    def _attach(self, topic: str, from_offset: int) -> None:
        self.services.stream.listen(topic, self._on_record, from_offset)
        self.services.connected.add(topic.removeprefix(self.settings.kafka_session_topic_prefix))

    def _detach(self) -> None:
        if self.session_id:
            self.services.stream.forget(self.settings.session_topic(self.session_id))
            self.services.connected.discard(self.session_id)

    def _on_record(self, record: Record) -> None:
        """Called on the consumer thread: decode, then hand over to the event loop."""
        item = decode_session_record(record.value, record.offset)
        if item is not None:
            self.loop.call_soon_threadsafe(self._forward, item)

    def _forward(self, item: StreamItem) -> None:
        """On the event loop: drop what the client must not see, then queue it (bounded)."""
        request_id = item.request_id
        if request_id in self.interrupted or self.too_slow:
            return
        if self.resume_after is not None:
            if isinstance(item, Chunk) and (request_id, item.seq) == self.resume_after:
                self.resume_after = None
            return
        if not self.copies.first(item):
            return  # a duplicate (e.g. redelivered after a processor restart)
        if isinstance(item, Chunk):
            self._observe_timing(item)
        else:
            metrics.ERRORS.labels(item.code).inc()
        if isinstance(item, StreamError) or item.is_last:
            self.in_flight.pop(request_id or "", None)
        if self.outbox.qsize() >= self.settings.ws_max_pending_messages:
            self._drop_slow_client()
            return
        self.outbox.put_nowait(session_item_to_message(item))

    def _observe_timing(self, chunk: Chunk) -> None:
        now = time.perf_counter()
        metrics.CHUNKS.inc()
        accepted = self.accepted_at.pop(chunk.request_id, None)
        if accepted is not None:
            metrics.FIRST_CHUNK_SECONDS.observe(now - accepted)
            self.playback_origin[chunk.request_id] = now
        origin = self.playback_origin.get(chunk.request_id)
        if origin is not None:
            metrics.CHUNK_MARGIN_SECONDS.observe(origin + chunk.pts_ms / 1000 - now)
        if chunk.is_last:
            self.playback_origin.pop(chunk.request_id, None)

    def _drop_slow_client(self) -> None:
        """Past the bound, stop buffering: tell the client (it can resume from its last cursor) and close."""
        self.too_slow = True
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
