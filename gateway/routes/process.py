"""``POST /avatar/process``: text or a whole audio file in, the finished MP4 out, through a transient session."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from consumers.session_reader import RequestAssembler, StreamItem, decode_session_record
from consumers.session_stream import Record
from gateway.auth import Principal
from gateway.deps import principal, services
from gateway.services import Services
from gateway.speak import Refusal, admit, admit_audio, send, send_segments, usable_avatar
from gateway.upload import UploadError, read_upload
from producers.audio import AudioError, check_utterance, whole_utterance
from producers.audio_file import DecodedAudio, decode_audio_file
from schemas.avatar import VoiceChoice
from schemas.common import AvatarId, Language, new_id
from schemas.requests import MAX_RATE, MIN_RATE, TtsEngineName, VoiceName

log = logging.getLogger(__name__)
router = APIRouter(tags=["processing"])
TOPIC_RELEASE_WAIT_S = 5.0  # longest wait for the consumer to unassign the topic (it takes ~20 ms)
TOPIC_DELETE_DELAY_S = 2.0  # then librdkafka still needs a moment before the topic may vanish (measured)
_topic_deletions: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to its tasks

# The HTTP status of each error code, the gateway's refusals and the pipeline's (README's protocol table) alike;
# any other pipeline failure is a 502.
STATUS_OF_CODE = {"unknown_avatar": 404, "nothing_to_say": 422, "text_too_long": 422, "empty_text": 422,
                  "unsupported_language": 422, "unknown_voice": 422, "invalid_rate": 422, "tts_unavailable": 422,
                  "unavailable": 503,
                  "unreadable_audio": 422, "silent_audio": 422, "audio_too_long": 422, "missing_field": 422}
AUDIO_FIELDS = frozenset({"avatar_id", "language", "text"})


class ProcessRequest(BaseModel):
    """What to say, with which avatar."""

    text: str = Field(min_length=1, description="what the avatar says (Persian or English); at most MAX_TEXT_CHARS",
                      examples=["سلام، حال شما چطور است؟"])
    avatar_id: AvatarId = Field(description="a registered avatar (GET /avatar/list)", examples=["sample"])
    language: Language | None = Field(default=None, description="'fa' or 'en'; absent: detected from the text")
    tts: TtsEngineName | None = Field(default=None, description="TTS backend; absent: the avatar's default voice, "
                                      "else TTS_ENGINE")
    voice: VoiceName | None = Field(default=None, description="a voice of that backend (espeak: a variant like f3); "
                                    "absent: the avatar's default voice, else the backend's")
    # Not bounded here: out of range is the specific `invalid_rate` (422), not a generic invalid_request.
    rate: float | None = Field(default=None, allow_inf_nan=False, examples=[1.25],
                               description=f"speaking rate, {MIN_RATE:g}-{MAX_RATE:g} (1 = normal); absent: 1")


class ErrorBody(BaseModel):
    """Every error response: a stable machine-readable code and a sentence for people."""

    code: str = Field(examples=["unknown_avatar"])
    message: str = Field(examples=["no registered avatar with id 'ghost'"])


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
          "description": "the whole lip-synced video: fragmented MP4 (H.264 + AAC). Headers: X-Request-Id, "
                         "X-Session-Id (the transient session, deleted afterwards), X-First-Chunk-Ms (text accepted → "
                         "first chunk), X-Video-Duration-Ms."},
    401: _error("a bearer token is required outside dev mode, or the token is invalid (`unauthorized`)"),
    404: _error("the avatar does not exist or is not yours (`unknown_avatar`)"),
    413: _error("the audio file is larger than AUDIO_MAX_UPLOAD_BYTES (`file_too_large`)"),
    422: _error("bad input: `invalid_request` (malformed body, unsupported language), `empty_text`, "
                     "`text_too_long`, `nothing_to_say` (the text holds nothing speakable), `tts_unavailable` (a "
                     "backend not enabled here), `unknown_voice`, `invalid_rate` (rate outside 0.5-2.0); audio: "
                     "`missing_field` (no file or avatar_id), "
                     "`unreadable_audio` (not audio FFmpeg decodes), `silent_audio`, `audio_too_long` (over "
                     "AUDIO_MAX_UTTERANCE_S)"),
    429: _error("REST_MAX_CONCURRENT renders are already running (`busy`); retry shortly"),
    502: _error("the pipeline failed the request (`tts_failed` or another pipeline code)"),
    503: _error("the broker did not take the request (`unavailable`)"),
    504: _error("the video was not finished within REST_PROCESS_TIMEOUT_S (`timeout`)"),
}


def problem(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message": message})


def refused(refusal: Refusal) -> HTTPException:
    return problem(STATUS_OF_CODE.get(refusal.code, 502), refusal.code, refusal.message)


class RenderSlots:
    """Bounds the REST renders running at once (each holds a whole MP4 in memory); lives on app.state."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    @classmethod
    def of(cls, request: Request, limit: int) -> RenderSlots:
        slots: RenderSlots | None = getattr(request.app.state, "render_slots", None)
        if slots is None:
            slots = request.app.state.render_slots = cls(limit)
        return slots

    def take(self) -> None:
        # Only the event loop's thread touches the counter, and nothing awaits between test and increment.
        if self.running >= self.limit:
            raise problem(429, "busy", f"{self.limit} videos are being rendered already; retry shortly")
        self.running += 1

    def give_back(self) -> None:
        self.running -= 1


class TransientRender:
    """One request's chunks, gathered from its own session topic through the gateway's shared consumer."""

    def __init__(self, running: Services, request_id: str) -> None:
        self.running = running
        self.session_id = f"rest-{new_id()}"
        self.topic = running.settings.session_topic(self.session_id)
        self.assembler = RequestAssembler(request_id)
        self.first_chunk_at: float | None = None
        self.finished = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def on_record(self, record: Record) -> None:
        """On the consumer's thread: decode here, gather on the event loop."""
        item = decode_session_record(record.value, record.offset)
        if item is not None:
            self.loop.call_soon_threadsafe(self._gather, item)

    def _gather(self, item: StreamItem) -> None:
        if self.first_chunk_at is None and item.request_id == self.assembler.request_id:
            self.first_chunk_at = time.perf_counter()
        self.assembler.add(item)
        if self.assembler.finished:
            self.finished.set()

    def end(self) -> None:
        """Stop listening now; drop the topic (nobody reads this session again) once that took effect."""
        self.released = self.running.stream.forget(self.topic)
        task = self.loop.create_task(self._delete_topic_later())
        _topic_deletions.add(task)
        task.add_done_callback(_topic_deletions.discard)

    async def _delete_topic_later(self) -> None:
        # librdkafka crashes the whole process (SIGSEGV, measured against the embedded broker) when a topic it
        # is still assigned is deleted: delete only once the consumer has let it go (else leave it to expire).
        if await asyncio.to_thread(self.released.wait, TOPIC_RELEASE_WAIT_S):
            await asyncio.sleep(TOPIC_DELETE_DELAY_S)
            await asyncio.to_thread(self.running.admin.delete, [self.topic])


# Two bodies on one path: FastAPI types one per route, so the body is read by content type and both are
# documented here.
REQUEST_BODY = {"required": True, "content": {
    "application/json": {"schema": ProcessRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file", "avatar_id"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "WAV, MP3, OGG/Opus or any audio FFmpeg "
                 "decodes; at most AUDIO_MAX_UPLOAD_BYTES and AUDIO_MAX_UTTERANCE_S"},
        "avatar_id": {"type": "string", "examples": ["sample"]},
        "language": {"type": "string", "enum": ["fa", "en"], "description": "a label (the lip-sync reads the sound)"},
        "text": {"type": "string", "description": "what is said: the first chunk's subtitle"}}}}}}
Sender = Callable[[TransientRender, str], Awaitable[None]]  # (the render, its request id) → queued


@router.post("/avatar/process", summary="Render text or an audio file to a finished MP4 (through Kafka)",
             response_class=Response, responses=RESPONSES, openapi_extra={"requestBody": REQUEST_BODY},
             description="A JSON body is said by the TTS; a multipart form with an audio `file` is lip-synced as "
                         "it is (no TTS). Either goes through the same pipeline as the WebSocket and the "
                         "concatenated fragmented-MP4 chunks come back once the last one arrived. For live "
                         "playback use `/ws/stream`.")
async def process(request: Request, running: Annotated[Services, Depends(services)],
                  who: Annotated[Principal, Depends(principal)]) -> Response:
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        sender = await _audio_sender(request, running, who)
    else:
        sender = await _text_sender(request, running, who)
    slots = RenderSlots.of(request, running.settings.rest_max_concurrent)
    slots.take()
    render = TransientRender(running, new_id())
    try:
        return await render_to_mp4(render, sender, running.settings.rest_process_timeout_s)
    finally:
        slots.give_back()
        render.end()


async def _text_sender(request: Request, running: Services, who: Principal) -> Sender:
    try:
        body = ProcessRequest.model_validate_json(await request.body())
    except ValidationError as error:  # the app's handler answers 422 invalid_request, as for any route
        raise RequestValidationError(error.errors()) from None
    try:
        avatar = await usable_avatar(running.store, who, body.avatar_id)
        admitted = admit(running.settings, avatar, body.text, body.language,
                         VoiceChoice(tts=body.tts, voice=body.voice), body.rate)
    except Refusal as refusal:
        raise refused(refusal) from None

    async def send_text(render: TransientRender, request_id: str) -> None:
        await send(running.producer, admitted, session_id=render.session_id, request_id=request_id)
    return send_text


async def _audio_sender(request: Request, running: Services, who: Principal) -> Sender:
    """The form's audio file, decoded and checked before anything is queued."""
    settings = running.settings
    try:
        upload = await read_upload(request, max_file_bytes=settings.audio_max_upload_bytes, text_fields=AUDIO_FIELDS)
    except UploadError as error:
        raise problem(error.status, error.code, error.message) from None
    try:
        if not upload.has_file or "avatar_id" not in upload.fields:
            raise Refusal("missing_field", "send the audio as the form field 'file' and the avatar as 'avatar_id'")
        avatar = await usable_avatar(running.store, who, upload.fields["avatar_id"])
        decoded = await asyncio.to_thread(_decode, bytes(upload.file), settings.audio_max_utterance_s)
        admitted = admit_audio(settings, avatar, decoded.sample_rate, language=upload.fields.get("language"),
                               text=upload.fields.get("text"))
    except Refusal as refusal:
        raise refused(refusal) from None

    async def send_audio(render: TransientRender, request_id: str) -> None:
        target = admitted.target(session_id=render.session_id, request_id=request_id)
        segments = await asyncio.to_thread(whole_utterance, target, decoded.pcm, max_samples=len(decoded.pcm))
        await send_segments(running.producer, segments)
    return send_audio


def _decode(data: bytes, max_seconds: float) -> DecodedAudio:
    """The file's audio, refused here if it is unreadable, too long or silent (before any Kafka work)."""
    try:
        decoded = decode_audio_file(data, max_seconds=max_seconds)
        check_utterance(decoded.pcm, decoded.sample_rate, max_samples=len(decoded.pcm))
    except AudioError as error:
        raise Refusal.of_audio(error) from None
    return decoded


async def render_to_mp4(render: TransientRender, sender: Sender, timeout_s: float) -> Response:
    running, request_id = render.running, render.assembler.request_id
    await asyncio.to_thread(running.admin.ensure_session_topic, render.session_id)
    running.stream.listen(render.topic, render.on_record)
    sent_at = time.perf_counter()
    try:
        await sender(render, request_id)
    except Refusal as refusal:
        raise refused(refusal) from None
    try:
        await asyncio.wait_for(render.finished.wait(), timeout_s)
    except TimeoutError:
        await asyncio.to_thread(running.producer.interrupt, render.session_id, [request_id])  # stop the work
        raise problem(504, "timeout", f"the video was not finished within {timeout_s:g} s "
                                      f"({len(render.assembler.chunks)} chunks so far)") from None
    failure = render.assembler.error
    if failure is not None:
        raise refused(Refusal(failure.code, failure.message))
    first_ms = ((render.first_chunk_at or sent_at) - sent_at) * 1000
    return Response(render.assembler.mp4(), media_type="video/mp4", headers={
        "X-Request-Id": request_id, "X-Session-Id": render.session_id, "X-First-Chunk-Ms": f"{first_ms:.0f}",
        "X-Video-Duration-Ms": str(render.assembler.duration_ms),
        "Content-Disposition": f'inline; filename="avatar-{request_id}.mp4"'})
