"""Message schemas: versioned, validated where messages enter, media as raw bytes, JSON Schemas in sync."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import envelope
from schemas.export import SCHEMA_DIR, all_schemas, render
from schemas.requests import TextRequest
from schemas.session import SessionError, SessionEvent, VideoChunkMeta
from schemas.speech import SpeechSegment, SpeechSegmentMeta


def _speech_meta(**changes: object) -> SpeechSegmentMeta:
    fields: dict[str, object] = dict(request_id="r1", session_id="s1", avatar_id="sample", segment_index=0,
                                     is_last=True, text="سلام", spoken="سلام", language="fa", sample_rate=22050,
                                     sample_count=3, start_ms=0)
    fields.update(changes)
    return SpeechSegmentMeta.model_validate(fields)


def test_exported_json_schemas_match_the_models() -> None:
    for name, schema in all_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"schemas/json/{name} missing: run `make schemas`"
        assert path.read_text(encoding="utf-8") == render(schema), f"{name} is stale: run `make schemas`"


def test_text_request_from_another_system_needs_only_the_documented_fields() -> None:
    request = TextRequest.model_validate_json(json.dumps(
        {"session_id": "abc", "avatar_id": "sample", "text": "سلام", "language": "fa"}))
    assert request.schema_version == 1 and request.type == "text" and len(request.request_id) == 32


@pytest.mark.parametrize("bad", [
    {"avatar_id": "sample", "text": "hi"},                                   # no session
    {"session_id": "a/b", "avatar_id": "sample", "text": "hi"},              # not topic-safe
    {"session_id": "abc", "avatar_id": "sample", "text": ""},                # empty text
    {"session_id": "abc", "avatar_id": "sample", "text": "hi", "language": "de"},
    {"session_id": "abc", "avatar_id": "sample", "text": "hi", "schema_version": 2},
])
def test_invalid_requests_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TextRequest.model_validate(bad)


def test_speech_segment_round_trips_with_raw_pcm_bytes() -> None:
    segment = SpeechSegment(_speech_meta(), b"\x01\x00\x02\x00\x03\x00")
    wire = segment.to_kafka()
    assert wire.startswith(envelope.MAGIC) and wire.endswith(b"\x01\x00\x02\x00\x03\x00")
    assert SpeechSegment.from_kafka(wire) == segment


def test_speech_payload_of_the_wrong_length_is_rejected() -> None:
    wire = SpeechSegment(_speech_meta(sample_count=10), b"\x00\x00").to_kafka()
    with pytest.raises(ValueError, match="expected 20"):
        SpeechSegment.from_kafka(wire)


def test_sample_rate_must_fit_the_25_fps_video_clock() -> None:
    with pytest.raises(ValidationError, match="multiple of 25"):
        _speech_meta(sample_rate=22051)


def test_session_events_are_discriminated_by_kind() -> None:
    chunk = SessionEvent(VideoChunkMeta(request_id="r", seq=0, pts_ms=0, duration_ms=480, mime="video/mp4",
                                        is_last=False), b"\x00\x00\x00\x08moof")
    error = SessionEvent(SessionError(request_id="r", code="unknown_avatar", message="no such avatar"))
    assert SessionEvent.from_kafka(chunk.to_kafka()) == chunk
    assert SessionEvent.from_kafka(error.to_kafka()) == error


@pytest.mark.parametrize("wire", [b"", b"AVS1", b"XXXX\x00\x00\x00\x00", b"AVS1\x00\x00\x00\xff{}"])
def test_malformed_envelopes_raise_envelope_error(wire: bytes) -> None:
    with pytest.raises(envelope.EnvelopeError):
        envelope.unpack(wire)
