"""When a lip-sync session's next chunk is due: the end of what its client has been sent, on its clock."""

from __future__ import annotations

import pytest

from processors.lipsync.pacing import PlaybackDeadlines
from schemas.session import SessionError, VideoChunkMeta


def chunk(seq: int, pts_ms: int, duration_ms: int, *, is_last: bool = False, request_id: str = "r1") -> VideoChunkMeta:
    return VideoChunkMeta(request_id=request_id, seq=seq, pts_ms=pts_ms, duration_ms=duration_ms,
                          mime="video/mp4", is_last=is_last)


def test_the_next_chunk_is_due_when_the_ones_sent_have_played_from_the_first_ones_send_time() -> None:
    deadlines = PlaybackDeadlines()
    assert deadlines.next_due(chunk(0, 0, 400), now=10.0) == pytest.approx(10.4)
    assert deadlines.next_due(chunk(1, 400, 480), now=10.1) == pytest.approx(10.88)


def test_a_request_taken_over_mid_way_counts_its_playback_from_the_chunk_seen_first() -> None:
    deadlines = PlaybackDeadlines()
    assert deadlines.next_due(chunk(3, 1360, 480), now=50.0) == pytest.approx(50.48)


def test_nothing_is_due_after_a_requests_last_chunk_or_its_error_and_it_is_forgotten() -> None:
    deadlines = PlaybackDeadlines()
    deadlines.next_due(chunk(0, 0, 400), now=1.0)
    assert deadlines.next_due(chunk(1, 400, 80, is_last=True), now=1.2) is None
    assert deadlines.next_due(chunk(0, 0, 400), now=5.0) == pytest.approx(5.4), "a new start"
    assert deadlines.next_due(SessionError(request_id="r1", code="interrupted", message="stopped"), now=5.1) is None


def test_abandoned_requests_are_forgotten_oldest_first() -> None:
    deadlines = PlaybackDeadlines(max_requests=2)
    for index in range(3):
        deadlines.next_due(chunk(0, 0, 400, request_id=f"r{index}"), now=float(index))
    assert deadlines.next_due(chunk(1, 400, 480, request_id="r0"), now=9.0) == pytest.approx(9.48)
