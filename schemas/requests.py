"""Schema v1 of ``avatar.requests``: what the gateway and other systems produce (JSON, key = session id)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.common import AvatarId, Language, RequestId, SessionId, new_id

# Optional speech choices (issue 5): which TTS backend and which of its voices; absent = the processor's default.
TtsEngineName = Literal["espeak", "openai", "piper"]
VoiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_+.-]{1,64}$")]
# The speaking rate a request may ask for (1 = the voice's own). Out of range is the error `invalid_rate`, from
# the gateway, the SDK and the TTS processor alike, so the field itself takes any finite number.
MIN_RATE, MAX_RATE = 0.5, 2.0


def rate_problem(rate: float | None) -> str | None:
    """Why a speaking rate is refused (`invalid_rate`), or None when it may be spoken."""
    if rate is None or MIN_RATE <= rate <= MAX_RATE:
        return None
    return f"rate must be {MIN_RATE:g}-{MAX_RATE:g} (1 = normal speed); got {rate:g}"


class TextRequest(BaseModel):
    """Say ``text`` with avatar ``avatar_id``; the video goes to ``avatar.session.<session_id>``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["text"] = "text"
    request_id: RequestId = Field(default_factory=new_id)
    session_id: SessionId
    avatar_id: AvatarId
    text: str = Field(min_length=1, max_length=100_000)
    language: Language | None = None
    created_at_ms: int | None = Field(default=None, description="when the request entered the system (epoch ms)")
    tts: TtsEngineName | None = Field(default=None, description="TTS backend; absent = the processor's default")
    voice: VoiceName | None = Field(default=None, description="a voice of that backend (espeak: a variant like f3)")
    rate: float | None = Field(default=None, allow_inf_nan=False,
                               description=f"speaking rate, {MIN_RATE:g}-{MAX_RATE:g}; absent = 1 (normal)")

    def to_kafka(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
