"""avatar.speech v3: optional phoneme timings round-trip, v1 and v2 still parse, malformed timings are refused."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import envelope
from schemas.speech import MAX_PHONEMES, PAUSE, SpeechError, SpeechSegment, SpeechSegmentMeta, parse_speech

SAMPLES = 4410


def meta(**changes: object) -> SpeechSegmentMeta:
    fields: dict[str, object] = dict(request_id="r1", session_id="s1", avatar_id="sample", segment_index=0,
                                     is_last=True, text="Bob.", spoken="Bob.", language="en", sample_rate=22050,
                                     sample_count=SAMPLES, start_ms=0)
    return SpeechSegmentMeta.model_validate(fields | changes)


def test_a_v3_segment_with_timings_round_trips_through_kafka_bytes() -> None:
    marks = [(0, "b"), (700, "ɑː"), (2900, "b"), (3600, PAUSE)]
    segment = SpeechSegment(meta(phonemes=marks), b"\x00\x00" * SAMPLES)
    parsed = SpeechSegment.from_kafka(segment.to_kafka())
    assert parsed == segment and parsed.meta.schema_version == 3 and parsed.meta.phonemes == marks


def test_timings_travel_as_json_pairs_and_are_left_out_when_absent() -> None:
    with_marks = json.loads(meta(phonemes=[(0, "m"), (SAMPLES, PAUSE)]).model_dump_json(exclude_none=True))
    without = json.loads(meta().model_dump_json(exclude_none=True))
    assert with_marks["phonemes"] == [[0, "m"], [SAMPLES, "_"]]
    assert "phonemes" not in without and without["schema_version"] == 3


@pytest.mark.parametrize("version", [1, 2])
def test_v1_and_v2_segments_from_older_producers_still_parse(version: int) -> None:
    fields = json.loads(meta().model_dump_json(exclude_none=True)) | {"schema_version": version}
    wire = envelope.pack(json.dumps(fields).encode(), b"\x00\x00" * SAMPLES)
    parsed = SpeechSegment.from_kafka(wire)
    assert parsed.meta.schema_version == version and parsed.meta.phonemes is None


def test_the_pause_mark_may_sit_on_the_last_sample_and_marks_may_share_an_offset() -> None:
    assert meta(phonemes=[(0, "ʔ"), (0, "a"), (SAMPLES, PAUSE)]).phonemes == [(0, "ʔ"), (0, "a"), (SAMPLES, "_")]


def test_an_empty_timing_list_is_allowed() -> None:
    assert meta(phonemes=[]).phonemes == []


@pytest.mark.parametrize(("marks", "reason"), [
    ([(10, "b"), (5, "a")], "must not decrease"),
    ([(SAMPLES + 1, PAUSE)], "past the segment"),
    ([(-1, "b")], "greater than or equal to 0"),
    ([(0, "")], "at least 1 character"),
    ([(0, "x" * 17)], "at most 16 characters"),
    ([(0, "a b")], "pattern"),
    ([(0, "b", 3)], "at most 2 items"),
    ([(0,)], "Field required"),
    ([("7", "b")], "valid integer"),
    ([(1.5, "b")], "valid integer"),
    ([(True, "b")], "valid integer"),
    ([(0, 5)], "valid string"),
    ("b", "valid list"),
    ([(0, "b")] * (MAX_PHONEMES + 1), f"at most {MAX_PHONEMES} items"),
])
def test_malformed_timings_are_refused(marks: object, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        meta(phonemes=marks)


def test_malformed_timings_in_json_from_the_wire_are_refused() -> None:
    fields = json.loads(meta().model_dump_json(exclude_none=True)) | {"phonemes": [[0, "b"], ["10", "a"]]}
    with pytest.raises(ValidationError, match="valid integer"):
        SpeechSegmentMeta.model_validate_json(json.dumps(fields))


@pytest.mark.parametrize("version", [1, 2])
def test_timings_need_schema_version_3(version: int) -> None:
    with pytest.raises(ValidationError, match="schema_version 3"):
        meta(schema_version=version, phonemes=[(0, "b")], lipsync_sample_count=0)


def test_the_speech_topic_carries_segments_and_errors_and_parse_speech_reads_both() -> None:
    segment = SpeechSegment(meta(), b"\x00\x00" * SAMPLES)
    error = SpeechError(request_id="r2", session_id="s1", code="nothing_to_say", message="only punctuation")
    assert parse_speech(segment.to_kafka()) == segment
    assert parse_speech(error.to_kafka()) == error and error.schema_version == 4


def test_a_speech_error_with_a_payload_or_a_bad_code_is_refused() -> None:
    error = SpeechError(request_id="r2", session_id="s1", code="tts_failed", message="boom")
    with pytest.raises(ValueError, match="no payload"):
        parse_speech(envelope.pack(error.model_dump_json().encode(), b"\x00\x00"))
    with pytest.raises(ValidationError):
        parse_speech(envelope.pack(json.dumps({"kind": "error", "schema_version": 4, "request_id": "r2",
                                               "session_id": "s1", "code": "Bad Code!", "message": ""}).encode(), b""))


def test_a_v3_reader_refuses_a_speech_error_rather_than_misreading_it() -> None:
    error = SpeechError(request_id="r2", session_id="s1", code="tts_failed", message="boom")
    with pytest.raises(ValidationError):
        SpeechSegment.from_kafka(error.to_kafka())
