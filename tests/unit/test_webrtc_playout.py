"""The WebRTC playout (gateway/webrtc/playout.py): chunk timeline to one clock, pacing decisions, flushing."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.webrtc.playout import AUDIO_BLOCK, AUDIO_RATE, VIDEO_CLOCK, Playout


def tone(seconds: float, value: int = 1000) -> np.ndarray:
    return np.full(round(seconds * AUDIO_RATE), value, np.int16)


def send_audio(playout: Playout[str], blocks: int, now: float = 0.0) -> list[tuple[int, bool]]:
    """The next ``blocks`` blocks the audio track sends, as (start sample, silent)."""
    sent = []
    for _ in range(blocks):
        block = playout.next_audio(now)
        assert len(block.pcm) == AUDIO_BLOCK
        playout.take_audio(block)
        sent.append((block.start, block.silent))
    return sent


def test_a_request_starts_lead_after_its_first_media_and_its_frames_follow_the_chunk_timeline() -> None:
    playout: Playout[str] = Playout(lead_s=0.04)
    for index in range(3):
        playout.add_video("r1", index * 0.04, f"f{index}", now=10.0)
    assert playout.next_video_at() == pytest.approx(10.04)
    assert playout.due_video(10.03) is None, "not yet"
    due = playout.due_video(10.04)
    assert due is not None and due.frame == "f0" and due.pts == round(10.04 * VIDEO_CLOCK)
    assert playout.next_video_at() == pytest.approx(10.08)


def test_video_and_audio_of_a_request_share_its_base_so_they_start_together() -> None:
    playout: Playout[str] = Playout(lead_s=0.1)
    assert send_audio(playout, 1, now=1.0) == [(AUDIO_RATE, True)], "the audio clock runs from the first block"
    playout.add_audio("r1", tone(0.2), now=1.0)
    playout.add_video("r1", 0.0, "f0", now=1.05)  # decoded a little later: still on the request's base
    assert playout.next_video_at() == pytest.approx(1.1)
    sent = send_audio(playout, 6, now=1.0)
    assert [silent for _, silent in sent] == [True] * 4 + [False] * 2
    assert sent[4][0] == round(1.1 * AUDIO_RATE), "speech starts at the request's base, with its first frame"
    assert playout.next_audio(1.0).release_s == pytest.approx(1.14)


def test_the_next_request_starts_where_the_previous_ends_not_on_top_of_it() -> None:
    playout: Playout[str] = Playout(lead_s=0.0)
    playout.add_video("r1", 0.0, "a", now=0.0)
    playout.add_video("r1", 0.96, "b", now=0.0)
    playout.add_audio("r1", tone(1.0), now=0.0)
    playout.add_video("r2", 0.0, "c", now=0.5)
    frames = []
    while (at := playout.next_video_at()) is not None:
        due = playout.due_video(at)
        assert due is not None
        frames.append((due.frame, round(due.at_s, 3)))
    assert frames == [("a", 0.0), ("b", 0.96), ("c", 1.0)]


def test_late_audio_moves_the_rest_of_its_request_later_audio_and_video_together() -> None:
    playout: Playout[str] = Playout(lead_s=0.0)
    playout.add_audio("r1", tone(0.48), now=0.0)
    playout.add_video("r1", 0.0, "f0", now=0.0)
    playout.add_audio("r1", tone(0.48), now=0.8)  # the second chunk's audio arrived 0.32 s after its place
    playout.add_video("r1", 0.48, "f12", now=0.8)
    playout.add_video("r1", 0.52, "f13", now=0.8)
    assert playout.due_video(0.0) is not None
    due = playout.due_video(0.8)
    assert due is not None and due.frame == "f12" and due.at_s == pytest.approx(0.8)
    assert playout.next_video_at() == pytest.approx(0.84), "the rest keeps its spacing"


def test_a_late_frame_goes_at_once_and_the_next_keep_their_time() -> None:
    playout: Playout[str] = Playout(lead_s=0.0)
    playout.add_audio("r1", tone(1.0), now=0.0)
    playout.add_video("r1", 0.0, "f0", now=0.05)  # decoded after its place: not moved, so audio stays in sync
    playout.add_video("r1", 0.04, "f1", now=0.05)
    due = playout.due_video(0.05)
    assert due is not None and due.frame == "f1" and due.skipped == 1
    playout.add_video("r1", 0.08, "f2", now=0.05)
    assert playout.next_video_at() == pytest.approx(0.08)


def test_frames_that_came_due_together_send_only_the_newest() -> None:
    playout: Playout[str] = Playout()
    for index in range(4):
        playout.add_video("r1", index * 0.04, f"f{index}", now=0.0)
    due = playout.due_video(0.13)
    assert due is not None and due.frame == "f3" and due.skipped == 3
    assert playout.next_video_at() is None


def test_passed_through_h264_sends_every_late_frame_in_order_since_each_refers_to_the_one_before() -> None:
    playout: Playout[str] = Playout(skip_late=False)
    for index in range(4):
        playout.add_video("r1", index * 0.04, f"f{index}", now=0.0)
    sent = []
    while (due := playout.due_video(0.13)) is not None:
        sent.append(due.frame)
        assert due.skipped == 0
    assert sent == ["f0", "f1", "f2", "f3"]


def test_audio_never_pauses_speech_then_silence_on_one_continuous_clock() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.05), now=0.0)  # 2.5 blocks
    sent = send_audio(playout, 6)
    assert [start for start, _ in sent] == [i * AUDIO_BLOCK for i in range(6)], "no gap in the timestamps"
    assert [silent for _, silent in sent] == [False, False, False, True, True, True]


def test_audio_added_while_playing_continues_the_run_without_a_gap() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.04), now=0.0)
    send_audio(playout, 1)
    playout.add_audio("r1", tone(0.04, value=2000), now=0.01)
    sent = send_audio(playout, 4)
    assert sent == [(AUDIO_BLOCK, False), (2 * AUDIO_BLOCK, False), (3 * AUDIO_BLOCK, False), (4 * AUDIO_BLOCK, True)]


def test_a_block_holds_the_queued_samples_and_silence_where_there_are_none() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.01, value=500), now=0.0)  # half a block
    block = playout.next_audio(0.0)
    assert not block.silent and (block.pcm[:480] == 500).all() and (block.pcm[480:] == 0).all()


def test_audio_of_a_request_placed_after_a_pause_plays_when_the_clock_reaches_it() -> None:
    playout: Playout[str] = Playout()
    send_audio(playout, 2)
    playout.add_audio("r2", tone(0.02), now=5.0)
    assert playout.next_audio(0.04).silent, "until then: silence"
    playout.take_audio(playout.next_audio(0.04))
    for _ in range(round(5.0 * AUDIO_RATE / AUDIO_BLOCK) - 3):
        playout.take_audio(playout.next_audio(5.0))
    block = playout.next_audio(5.0)
    assert block.start == 5 * AUDIO_RATE and not block.silent


def test_flush_drops_a_requests_queued_media_refuses_its_later_chunks_and_lets_the_next_start_now() -> None:
    playout: Playout[str] = Playout(lead_s=0.0)
    for index in range(50):
        playout.add_video("r1", index * 0.04, f"f{index}", now=0.0)
    playout.add_audio("r1", tone(2.0), now=0.0)
    assert send_audio(playout, 1) == [(0, False)]
    assert playout.flush(["r1"]) == 51
    assert playout.next_video_at() is None
    assert [silent for _, silent in send_audio(playout, 3)] == [True] * 3, "silence from the next block on"
    assert playout.add_video("r1", 2.0, "late", now=0.1) is False and playout.is_stopped("r1")
    assert playout.add_audio("r1", tone(0.1), now=0.1) is False
    playout.add_video("r2", 0.0, "next", now=0.2)
    assert playout.next_video_at() == pytest.approx(0.2), "not after the flushed request's end (2 s)"


def test_flush_of_everything_stops_every_request_seen_and_leaves_others_to_come() -> None:
    playout: Playout[str] = Playout()
    playout.add_video("r1", 0.0, "a", now=0.0)
    playout.add_video("r2", 0.0, "b", now=0.0)
    assert playout.flush(None) == 2
    assert playout.is_stopped("r1") and playout.is_stopped("r2") and not playout.is_stopped("r3")
    assert playout.add_video("r3", 0.0, "c", now=1.0) is True
