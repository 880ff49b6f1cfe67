"""The session reader's pure pieces: records decoded, copies passed once, a request's chunks assembled once."""

from __future__ import annotations

import pytest

from consumers.session_reader import (
    Chunk,
    FirstCopies,
    PipelineError,
    RequestAssembler,
    StreamError,
    decode_session_record,
)
from schemas.session import SessionError, SessionEvent, VideoChunkMeta

MIME = 'video/mp4; codecs="avc1.42C01E, mp4a.40.2"'


def chunk(seq: int, *, last: bool = False, request_id: str = "r1", data: bytes | None = None) -> Chunk:
    return Chunk(request_id=request_id, seq=seq, pts_ms=seq * 480, duration_ms=480, mime=MIME, is_last=last,
                 text=None, data=data if data is not None else f"<{seq}>".encode(), offset=seq)


def test_chunks_arriving_out_of_order_assemble_in_seq_order() -> None:
    assembler = RequestAssembler("r1")
    for item in (chunk(2, last=True), chunk(0), chunk(1)):
        assembler.add(item)
    assert assembler.complete and assembler.mp4() == b"<0><1><2>"
    assert assembler.duration_ms == 3 * 480


def test_a_redelivered_chunk_is_used_once_and_the_first_copy_wins() -> None:
    assembler = RequestAssembler("r1")
    for item in (chunk(0), chunk(0, data=b"dup"), chunk(1, last=True)):
        assembler.add(item)
    assert assembler.mp4() == b"<0><1>"


def test_the_last_chunk_alone_does_not_complete_a_request_with_a_gap() -> None:
    assembler = RequestAssembler("r1")
    assembler.add(chunk(0))
    assembler.add(chunk(2, last=True))
    assert not assembler.complete and not assembler.finished
    with pytest.raises(PipelineError) as raised:
        assembler.mp4()
    assert raised.value.code == "incomplete"


def test_other_requests_chunks_are_ignored() -> None:
    assembler = RequestAssembler("r1")
    assembler.add(chunk(0, last=True, request_id="r2"))
    assert not assembler.finished and assembler.chunks == {}


def test_a_pipeline_error_for_the_request_finishes_it_and_is_raised_with_its_code() -> None:
    assembler = RequestAssembler("r1")
    assembler.add(chunk(0))
    assembler.add(StreamError(request_id="r1", code="tts_failed", message="espeak-ng crashed", offset=1))
    assert assembler.finished
    with pytest.raises(PipelineError) as raised:
        assembler.mp4()
    assert (raised.value.code, raised.value.request_id) == ("tts_failed", "r1")


def test_session_records_decode_to_chunks_and_errors_with_their_offsets() -> None:
    meta = VideoChunkMeta(request_id="r1", seq=3, pts_ms=1440, duration_ms=480, mime=MIME, is_last=True,
                          text="سلام")
    decoded = decode_session_record(SessionEvent(meta, b"\x00mp4").to_kafka(), offset=17)
    assert decoded == Chunk(request_id="r1", seq=3, pts_ms=1440, duration_ms=480, mime=MIME, is_last=True,
                            text="سلام", data=b"\x00mp4", offset=17)
    error = SessionEvent(SessionError(request_id="r1", code="unknown_avatar", message="no avatar 'x'")).to_kafka()
    assert decode_session_record(error, offset=18) == StreamError(request_id="r1", code="unknown_avatar",
                                                                  message="no avatar 'x'", offset=18)


def test_records_that_are_not_session_events_are_skipped() -> None:
    assert decode_session_record(b"not an envelope", offset=0) is None
    assert decode_session_record(b"AVS1\x00\x00\x00\x02{}", offset=1) is None


def test_a_redelivered_chunk_or_error_is_passed_once_per_request() -> None:
    copies = FirstCopies()
    failed = StreamError(request_id="r2", code="tts_failed", message="crashed", offset=9)
    passed = [copies.first(item) for item in (chunk(0), chunk(1), chunk(0), chunk(0, request_id="r2"), failed,
                                              StreamError(request_id="r2", code="tts_failed", message="again",
                                                          offset=10), chunk(1))]
    assert passed == [True, True, False, True, True, False, False]


def test_only_the_latest_requests_are_remembered() -> None:
    copies = FirstCopies(max_requests=2)
    assert copies.first(chunk(0, request_id="old"))
    assert copies.first(chunk(0, request_id="a")) and copies.first(chunk(0, request_id="b"))
    assert not copies.first(chunk(0, request_id="b"))
    assert copies.first(chunk(0, request_id="old")), "forgotten after two newer requests: memory stays bounded"
