"""Schema v3 of ``avatar.speech``: one speech segment (enveloped metadata + PCM16 mono bytes; v1 and v2 still read).

v2 (issue 5) appends the same audio at 16 kHz for lip-sync after the playback-rate audio; v1 segments carry
only the playback audio. Both parse; `lipsync_pcm16` is empty for v1.

v3 (issue 10) adds the optional ``phonemes``: what the TTS said and when, as (start offset in samples at
``sample_rate`` from the segment's first sample, IPA name), ending with a ``"_"`` mark where the speech stops.
A backend that knows no timings (OpenAI) leaves the field out. v3 also names the ``voice`` a segment was spoken
with: espeak-ng in-process does not repeat its audio byte for byte (its generator keeps state between calls),
so the voice is told, not inferred from the samples. Consumers must be upgraded before producers:
a v2 reader refuses ``schema_version`` 3.

v4 (issue 12) adds a second kind of message, ``SpeechError`` (``"kind": "error"``, no payload): the TTS could
not speak a request, or stopped it (interrupted). The lip-sync processor passes it on to the session topic,
so a session topic has one writer kind and a client hears one error per request, never a second
``interrupted`` for segments the lip-sync was already dropping. Read both kinds with ``parse_speech``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas import envelope
from schemas.common import AvatarId, Language, RequestId, SessionId

PAUSE = "_"  # the phoneme name of the silence after the speech (the lip-sync's rest shape)
MAX_PHONEME_NAME_CHARS = 16
# A fast speaker says ~20 phonemes a second and a segment is one piece of text (at most TTS_PIECE_CHARS); the cap
# only stops a hostile message from making a consumer build an enormous timeline.
MAX_PHONEMES = 16_384

PhonemeMark = tuple[int, str]
"""(start offset in samples, IPA name or PAUSE): one phoneme as a TTS spoke it."""

PhonemeName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PHONEME_NAME_CHARS, pattern=r"^\S+$")]


class SpeechSegmentMeta(BaseModel):
    """Where a segment sits in its request and what its audio is."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1, 2, 3] = 3
    request_id: RequestId
    session_id: SessionId
    avatar_id: AvatarId
    segment_index: int = Field(ge=0)
    is_last: bool
    text: str = Field(description="the text of this segment as written, for subtitles")
    spoken: str = Field(description="what was actually spoken (numbers as words, ...)")
    language: Language
    sample_rate: int = Field(ge=8000, le=48000)
    sample_count: int = Field(ge=0)
    start_ms: int = Field(ge=0, description="media time of the segment's first sample within the request")
    start_sample: int | None = Field(default=None, ge=0, description="the same, exactly: samples before this "
                                     "segment in the request (lets a restarted lip-sync worker resume)")
    created_at_ms: int | None = None
    # v2: the same audio at the lip-sync rate follows the playback audio in the payload
    lipsync_sample_rate: int | None = Field(default=None, ge=8000, le=48000)
    lipsync_sample_count: int = Field(default=0, ge=0)
    speech_ms: int | None = Field(default=None, ge=0, description="speech before the trailing pause (subtitle)")
    engine: str | None = Field(default=None, description="the TTS backend that spoke this segment")
    voice: str | None = Field(default=None, max_length=64, description="the voice the backend spoke it with, "
                              "when one was asked for or the backend chose it (piper: the catalog voice; absent: "
                              "the backend's configured voice)")
    # v3: the TTS's own phoneme timings (absent when the backend knows none)
    phonemes: list[tuple[Annotated[int, Field(ge=0, strict=True)], PhonemeName]] | None = Field(
        default=None, max_length=MAX_PHONEMES,
        description="(start offset in samples at sample_rate from the segment's first sample, IPA phoneme or "
                    "'_' for the pause after the speech), offsets non-decreasing and within sample_count")

    @model_validator(mode="after")
    def _rate_fits_the_video_clock(self) -> SpeechSegmentMeta:
        if self.sample_rate % 25:
            raise ValueError(f"sample_rate {self.sample_rate} is not a multiple of 25 (one video frame)")
        if self.lipsync_sample_count and (self.schema_version < 2 or self.lipsync_sample_rate is None):
            raise ValueError("lipsync_sample_count needs schema_version 2 and lipsync_sample_rate")
        if self.phonemes is not None:
            self._check_phonemes(self.phonemes)
        return self

    def _check_phonemes(self, marks: list[tuple[int, str]]) -> None:
        if self.schema_version < 3:
            raise ValueError(f"phonemes need schema_version 3, not {self.schema_version}")
        previous = 0
        for index, (offset, name) in enumerate(marks):
            if offset < previous:
                raise ValueError(f"phonemes[{index}] ({name!r}) starts at sample {offset}, before the previous "
                                 f"mark at {previous}: offsets must not decrease")
            if offset > self.sample_count:
                raise ValueError(f"phonemes[{index}] ({name!r}) starts at sample {offset}, past the segment's "
                                 f"{self.sample_count} samples")
            previous = offset


@dataclass(frozen=True)
class SpeechSegment:
    meta: SpeechSegmentMeta
    pcm16: bytes  # little-endian int16 mono at meta.sample_rate
    lipsync_pcm16: bytes = b""  # v2: the same audio, little-endian int16 mono at meta.lipsync_sample_rate

    def to_kafka(self) -> bytes:
        return envelope.pack(self.meta.model_dump_json(exclude_none=True).encode(), self.pcm16 + self.lipsync_pcm16)

    @classmethod
    def from_kafka(cls, value: bytes) -> SpeechSegment:
        meta_json, payload = envelope.unpack(value)
        meta = SpeechSegmentMeta.model_validate_json(meta_json)
        expected = 2 * (meta.sample_count + meta.lipsync_sample_count)
        if len(payload) != expected:
            raise ValueError(f"payload holds {len(payload)} bytes, expected {expected} for "
                             f"{meta.sample_count} + {meta.lipsync_sample_count} PCM16 samples")
        split = 2 * meta.sample_count
        return cls(meta, payload[:split], payload[split:])


class SpeechError(BaseModel):
    """v4: the TTS could not speak (the rest of) a request; the lip-sync passes it on to the session once."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[4] = 4
    kind: Literal["error"] = "error"
    request_id: RequestId
    session_id: SessionId
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="as in the session topic's errors")
    message: str = Field(max_length=2000)

    def to_kafka(self) -> bytes:
        return envelope.pack(self.model_dump_json().encode(), b"")


def parse_speech(value: bytes) -> SpeechSegment | SpeechError:
    """An ``avatar.speech`` message of either kind; ValueError (pydantic's included) when it is neither."""
    meta_json, payload = envelope.unpack(value)
    try:
        kind = json.loads(meta_json).get("kind")
    except (ValueError, AttributeError):
        kind = None  # not a JSON object: SpeechSegmentMeta says what is wrong with it
    if kind != "error":
        return SpeechSegment.from_kafka(value)
    if payload:
        raise ValueError(f"a speech error carries no payload, this one has {len(payload)} bytes")
    return SpeechError.model_validate_json(meta_json)
