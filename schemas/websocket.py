"""Schema v1 of the WebSocket protocol at ``/ws/stream``: every client and server message, and binary audio frames.

A binary frame from the client carries audio: an 8-byte header, ``b"PCM1"`` then the sample rate as uint32
little-endian, then PCM16LE mono samples. It is an ``audio_input`` without base64 (a third fewer bytes, no
JSON parsing); the utterance's language and subtitle, if any, go in a JSON ``audio_input`` before it.
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.common import AvatarId, Language, RequestId, SessionId
from schemas.requests import MAX_RATE, MIN_RATE, TtsEngineName, VoiceName


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# client → server
class AvatarSelection(_Message):
    type: Literal["avatar_selection"]
    avatar_id: AvatarId


class TextInput(_Message):
    type: Literal["text_input"]
    text: str
    language: str | None = Field(default=None, description="'fa', 'en', or absent for auto-detect")
    tts: TtsEngineName | None = Field(default=None, description="TTS backend; absent = the default")
    voice: VoiceName | None = Field(default=None, description="a voice of that backend")
    rate: float | None = Field(default=None, allow_inf_nan=False,
                               description=f"speaking rate {MIN_RATE:g}-{MAX_RATE:g}, 1 = normal (else invalid_rate)")


class AudioInput(_Message):
    """A chunk of the agent's own speech; the first of an utterance is answered with ``request_accepted``."""

    type: Literal["audio_input"]
    sample_rate: int = Field(description="16000, 22050, 24000 or 48000; the same for every chunk of an utterance")
    data: str = Field(description="base64 of PCM16LE mono samples (any number of them)")
    format: str = Field(default="pcm_s16le", description="the sample format: only pcm_s16le")
    channels: int = Field(default=1, description="only 1 (mono)")
    language: Language | None = Field(default=None, description="what the speech is in (a label; first chunk)")
    text: str | None = Field(default=None, description="what is said, shown as the subtitle (first chunk)")


class AudioEnd(_Message):
    """The utterance's audio is complete: its video ends with the last audio sent."""

    type: Literal["audio_end"]


class Interrupt(_Message):
    """Barge-in: stop the session's requests in flight; no further chunk of them is sent."""

    type: Literal["interrupt"]
    request_id: RequestId | None = Field(default=None, description="only this request; all in flight if absent")


class Resume(_Message):
    """Re-attach to a session after a dropped connection or on another gateway; nothing is sent twice."""

    type: Literal["resume"]
    session_id: SessionId
    cursor: int | None = Field(default=None, ge=-1, le=2**62, description="the `cursor` of the last event received")
    request_id: RequestId | None = Field(default=None, description="with `seq`: the last chunk received")
    seq: int | None = Field(default=None, ge=0)


class Ping(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[AvatarSelection | TextInput | AudioInput | AudioEnd | Interrupt | Resume | Ping,
                          Field(discriminator="type")]
CLIENT_MESSAGE = TypeAdapter(ClientMessage)
CLIENT_TYPES = ("avatar_selection", "text_input", "audio_input", "audio_end", "interrupt", "resume", "ping")

# client → server binary frames: audio
AUDIO_FRAME_MAGIC = b"PCM1"
AUDIO_FRAME_HEADER = struct.Struct("<4sI")  # magic, sample rate


class AudioFrameError(ValueError):
    """A binary frame that does not start with the audio header."""


def pack_audio_frame(sample_rate: int, pcm16: bytes) -> bytes:
    """A binary WebSocket frame carrying ``pcm16`` (PCM16LE mono at ``sample_rate``)."""
    return AUDIO_FRAME_HEADER.pack(AUDIO_FRAME_MAGIC, sample_rate) + pcm16


def unpack_audio_frame(frame: bytes) -> tuple[int, bytes]:
    """(sample rate, PCM16LE bytes) of a binary frame."""
    if len(frame) < AUDIO_FRAME_HEADER.size or frame[:4] != AUDIO_FRAME_MAGIC:
        raise AudioFrameError(f"a binary frame must start with {AUDIO_FRAME_MAGIC!r} and the sample rate as "
                              f"uint32 little-endian ({AUDIO_FRAME_HEADER.size} bytes), then PCM16LE mono")
    _magic, sample_rate = AUDIO_FRAME_HEADER.unpack_from(frame)
    return int(sample_rate), frame[AUDIO_FRAME_HEADER.size :]


# server → client
class SessionReady(_Message):
    type: Literal["session_ready"] = "session_ready"
    session_id: str
    avatar_id: AvatarId
    resumed: bool = False
    idle_clip_url: str | None = Field(
        default=None,
        description="path (on this server, same token) of the avatar's idle loop: an MP4 of a few seconds, mouth "
                    "closed, whose last frame joins its first; play it muted and looped between utterances",
        examples=["/avatar/sample/idle.mp4"])


class RequestAccepted(_Message):
    type: Literal["request_accepted"] = "request_accepted"
    request_id: RequestId
    language: Language | None = None
    queued_behind: int = Field(default=0, description="requests of this session still playing before this one")


class VideoChunk(_Message):
    type: Literal["video_chunk"] = "video_chunk"
    request_id: RequestId
    seq: int
    pts_ms: int
    duration_ms: int
    data: str = Field(description="base64 of the fragmented-MP4 bytes")
    mime: str
    is_last: bool
    text: str | None = None
    cursor: int = Field(description="position in the session's stream; send it back in `resume`")


class Error(_Message):
    type: Literal["error"] = "error"
    code: str
    message: str
    request_id: RequestId | None = None
    cursor: int | None = None


class Interrupted(_Message):
    type: Literal["interrupted"] = "interrupted"
    request_ids: list[RequestId]


class Pong(_Message):
    type: Literal["pong"] = "pong"
    ts_ms: int


ServerMessage = Annotated[SessionReady | RequestAccepted | VideoChunk | Error | Interrupted | Pong,
                          Field(discriminator="type")]
