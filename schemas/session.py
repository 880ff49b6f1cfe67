"""Schema v1 of ``avatar.session.<session_id>``: the events a session's client receives, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas import envelope
from schemas.common import RequestId


class VideoChunkMeta(BaseModel):
    """One piece of a request's fragmented MP4; the payload is the MP4 bytes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    kind: Literal["video_chunk"] = "video_chunk"
    request_id: RequestId
    seq: int = Field(ge=0, description="counts from 0 within a request")
    pts_ms: int = Field(ge=0, description="media time of the chunk's start within the request")
    duration_ms: int = Field(ge=0, description="media time the chunk holds")
    mime: str
    is_last: bool
    text: str | None = Field(default=None, description="subtitle: the segment being spoken, on its first chunk")
    created_at_ms: int | None = None


class SessionError(BaseModel):
    """A request of this session failed; other requests are unaffected."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    kind: Literal["error"] = "error"
    request_id: RequestId | None = None
    code: str
    message: str


SessionEventMeta = Annotated[VideoChunkMeta | SessionError, Field(discriminator="kind")]
_META = TypeAdapter(SessionEventMeta)


@dataclass(frozen=True)
class SessionEvent:
    meta: VideoChunkMeta | SessionError
    payload: bytes = b""

    def to_kafka(self) -> bytes:
        return envelope.pack(self.meta.model_dump_json(exclude_none=True).encode(), self.payload)

    @classmethod
    def from_kafka(cls, value: bytes) -> SessionEvent:
        meta_json, payload = envelope.unpack(value)
        return cls(_META.validate_json(meta_json), payload)
