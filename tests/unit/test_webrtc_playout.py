"""The WebRTC playout (gateway/webrtc/playout.py): chunk timeline to one clock, pacing decisions, flushing."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.webrtc.playout import AUDIO_BLOCK, AUDIO_RATE, TAIL_BLOCKS, VIDEO_CLOCK, Playout


def tone(seconds: float, value: int = 1000) -> np.ndarray:
    return np.full(round(seconds * AUDIO_RATE), value, np.int16)


def drain_audio(playout: Playout[str]) -> list[tuple[int, bool]]:
    """Every block the audio track would send, as (start sample, silent tail)."""
    sent = []
    while (block := playout.next_audio()) is not None:
        playout.take_audio(block)
        sent.append((block.start, block.silent_tail))
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
    playout.add_audio("r1", tone(0.2), now=1.0)
    playout.add_video("r1", 0.0, "f0", now=1.05)  # decoded a little later: still on the request's base
    block = playout.next_audio()
    assert block is not None and block.start == round(1.1 * AUDIO_RATE)
    assert playout.next_video_at() == pytest.approx(1.1)
    assert block.release_s == pytest.approx(1.1 - AUDIO_BLOCK / AUDIO_RATE), "one block early: aiortc's hold"


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


def test_late_media_moves_the_rest_of_its_request_later_audio_and_video_together() -> None:
    playout: Playout[str] = Playout(lead_s=0.0)
    playout.add_video("r1", 0.0, "f0", now=0.0)
    playout.add_video("r1", 0.48, "f12", now=0.8)  # arrived 0.32 s after its place
    playout.add_video("r1", 0.52, "f13", now=0.8)
    assert playout.due_video(0.0) is not None
    due = playout.due_video(0.8)
    assert due is not None and due.frame == "f12" and due.at_s == pytest.approx(0.8)
    assert playout.next_video_at() == pytest.approx(0.84), "the rest keeps its spacing"


def test_frames_that_came_due_together_send_only_the_newest() -> None:
    playout: Playout[str] = Playout()
    for index in range(4):
        playout.add_video("r1", index * 0.04, f"f{index}", now=0.0)
    due = playout.due_video(0.13)
    assert due is not None and due.frame == "f3" and due.skipped == 3
    assert playout.next_video_at() is None


def test_audio_runs_on_in_blocks_then_a_silent_tail_pushes_the_last_block_out_then_nothing() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.05), now=0.0)  # 2.5 blocks
    sent = drain_audio(playout)
    assert sent[:3] == [(0, False), (AUDIO_BLOCK, False), (2 * AUDIO_BLOCK, False)]
    assert sent[3:] == [(3 * AUDIO_BLOCK + i * AUDIO_BLOCK, True) for i in range(TAIL_BLOCKS)]
    assert playout.next_audio() is None, "idle: no packets"


def test_audio_added_while_playing_continues_the_run_without_a_gap() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.04), now=0.0)
    first = playout.next_audio()
    assert first is not None
    playout.take_audio(first)
    playout.add_audio("r1", tone(0.04, value=2000), now=0.01)
    starts = [start for start, silent in drain_audio(playout) if not silent]
    assert starts == [AUDIO_BLOCK, 2 * AUDIO_BLOCK, 3 * AUDIO_BLOCK]


def test_a_block_of_the_queued_audio_holds_its_samples_and_silence_where_there_are_none() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.01, value=500), now=0.0)  # half a block
    block = playout.next_audio()
    assert block is not None and len(block.pcm) == AUDIO_BLOCK
    assert (block.pcm[:480] == 500).all() and (block.pcm[480:] == 0).all()


def test_after_a_pause_the_audio_jumps_to_the_next_request_and_its_timestamps_say_so() -> None:
    playout: Playout[str] = Playout()
    playout.add_audio("r1", tone(0.02), now=0.0)
    drain_audio(playout)
    playout.add_audio("r2", tone(0.02), now=5.0)
    block = playout.next_audio()
    assert block is not None and block.start == 5 * AUDIO_RATE and not block.silent_tail


def test_flush_drops_a_requests_queued_media_refuses_its_later_chunks_and_lets_the_next_start_now() -> None:
    playout: Playout[str] = Playout(lead_s=0.0)
    for index in range(50):
        playout.add_video("r1", index * 0.04, f"f{index}", now=0.0)
    playout.add_audio("r1", tone(2.0), now=0.0)
    first = playout.next_audio()
    assert first is not None
    playout.take_audio(first)
    assert playout.flush(["r1"]) == 51
    assert playout.next_video_at() is None
    assert [silent for _, silent in drain_audio(playout)] == [True] * TAIL_BLOCKS, "only the tail"
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
