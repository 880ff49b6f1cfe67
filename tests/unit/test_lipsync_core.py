"""The lip-sync core turns a request's speech segments into one continuous, chunked fragmented MP4."""

from __future__ import annotations

import numpy as np
import pytest

from processors.lipsync.core import EmittedProgress, LipSyncCore, UnknownAvatar
from processors.lipsync.engines.embedded import EmbeddedEngine
from producers.audio import Utterance, UtteranceTarget
from schemas.avatar import AvatarFaceData
from schemas.session import SessionError, SessionEvent, VideoChunkMeta
from schemas.speech import SpeechError, SpeechSegment, SpeechSegmentMeta
from tests.media import decode_mp4
from tests.unit.face_fixtures import astronaut_photo

RATE = 22050
SAMPLES_PER_FRAME = RATE // 25


@pytest.fixture(scope="module")
def avatar() -> AvatarFaceData:
    return astronaut_photo()


def make_core(avatar: AvatarFaceData) -> LipSyncCore:
    def provide(avatar_id: str) -> AvatarFaceData:
        if avatar_id != avatar.avatar_id:
            raise UnknownAvatar(avatar_id)
        return avatar
    return LipSyncCore(EmbeddedEngine(), provide, chunk_frames=12, first_chunk_frames=6)


def speech(samples: int, index: int, is_last: bool, avatar_id: str, text: str = "سلام",
           start_sample: int = 0) -> SpeechSegment:
    t = (start_sample + np.arange(samples)) / RATE
    pcm = (8000 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype("<i2")
    meta = SpeechSegmentMeta(request_id="req-1", session_id="s1", avatar_id=avatar_id, segment_index=index,
                             is_last=is_last, text=text, spoken=text, language="fa", sample_rate=RATE,
                             sample_count=samples, start_ms=start_sample * 1000 // RATE, start_sample=start_sample)
    return SpeechSegment(meta, pcm.tobytes())


def chunks_of(events: list[SessionEvent]) -> list[VideoChunkMeta]:
    return [e.meta for e in events if isinstance(e.meta, VideoChunkMeta)]


def test_segments_become_seq_ordered_chunks_that_tile_the_timeline(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    first = list(core.handle(speech(10 * SAMPLES_PER_FRAME + 100, 0, False, avatar.avatar_id, "سلام،")))
    second = list(core.handle(speech(30 * SAMPLES_PER_FRAME + 50, 1, True, avatar.avatar_id, "حال شما چطور است؟")))
    metas = chunks_of(first + second)
    assert [m.seq for m in metas] == list(range(len(metas)))
    assert metas[0].duration_ms == 240, "the first chunk of a request is small, for latency"
    assert all(m.duration_ms <= 480 for m in metas)
    assert [m.pts_ms for m in metas[1:]] == [m.pts_ms + m.duration_ms for m in metas[:-1]]
    assert [m.is_last for m in metas] == [False] * (len(metas) - 1) + [True]
    assert [m.text for m in metas if m.text] == ["سلام،", "حال شما چطور است؟"]
    total_frames = -(-(40 * SAMPLES_PER_FRAME + 150) // SAMPLES_PER_FRAME)
    assert sum(m.duration_ms for m in metas) == total_frames * 40
    assert core.open_requests == 0, "a finished request frees its encoder"


def test_chunks_concatenate_to_one_decodable_mp4(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    events = list(core.handle(speech(20 * SAMPLES_PER_FRAME, 0, False, avatar.avatar_id)))
    events += list(core.handle(speech(25 * SAMPLES_PER_FRAME, 1, True, avatar.avatar_id)))
    data = b"".join(e.payload for e in events)
    decoded = decode_mp4(data)
    assert (decoded.video_codec, decoded.audio_codec) == ("h264", "aac")
    assert decoded.video_frames == 45


def test_a_redelivered_segment_produces_nothing_again(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    segment = speech(10 * SAMPLES_PER_FRAME, 0, False, avatar.avatar_id)
    assert list(core.handle(segment))
    assert list(core.handle(segment)) == []


def test_unknown_avatar_gives_one_error_for_the_whole_request(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    events = list(core.handle(speech(SAMPLES_PER_FRAME, 0, False, "ghost")))
    events += list(core.handle(speech(SAMPLES_PER_FRAME, 1, True, "ghost")))
    assert len(events) == 1 and isinstance(events[0].meta, SessionError)
    assert events[0].meta.code == "unknown_avatar" and "ghost" in events[0].meta.message


def test_an_empty_last_segment_still_closes_the_request(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    list(core.handle(speech(12 * SAMPLES_PER_FRAME, 0, False, avatar.avatar_id)))
    final = chunks_of(list(core.handle(speech(0, 1, True, avatar.avatar_id))))
    assert len(final) == 1 and final[0].is_last and final[0].duration_ms == 0


def test_a_request_with_no_audio_at_all_shows_one_frame(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    events = list(core.handle(speech(0, 0, True, avatar.avatar_id)))
    assert chunks_of(events)[0].is_last and chunks_of(events)[0].duration_ms == 40
    assert decode_mp4(b"".join(e.payload for e in events)).video_frames == 1


def test_an_interrupted_request_stops_within_one_chunk_and_says_so_once(avatar: AvatarFaceData) -> None:
    stopped: set[str] = set()
    core = make_core(avatar)
    core.is_interrupted = lambda _session, request, _created: request in stopped
    events = core.handle(speech(60 * SAMPLES_PER_FRAME, 0, False, avatar.avatar_id))
    first = next(events)
    assert isinstance(first.meta, VideoChunkMeta)
    stopped.add("req-1")
    rest = list(events)
    assert len(rest) == 1 and isinstance(rest[0].meta, SessionError) and rest[0].meta.code == "interrupted"
    assert list(core.handle(speech(SAMPLES_PER_FRAME, 1, True, avatar.avatar_id))) == []
    assert core.open_requests == 0


def test_the_tts_error_of_a_request_reaches_its_session_once(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    list(core.handle(speech(30 * SAMPLES_PER_FRAME, 0, False, avatar.avatar_id)))
    failed = SpeechError(request_id="req-1", session_id="s1", code="tts_failed", message="openai: timed out")
    events = list(core.fail(failed))
    assert [(e.meta.code, e.meta.message) for e in events if isinstance(e.meta, SessionError)] == [
        ("tts_failed", "openai: timed out")]
    assert list(core.fail(failed)) == [] and core.open_requests == 0


def test_the_tts_saying_interrupted_after_the_lip_sync_dropped_the_request_adds_no_second_interrupted(
        avatar: AvatarFaceData) -> None:
    stopped: set[str] = set()
    core = make_core(avatar)
    core.is_interrupted = lambda _session, request, _created: request in stopped
    events = core.handle(speech(60 * SAMPLES_PER_FRAME, 0, False, avatar.avatar_id))
    next(events)
    stopped.add("req-1")
    assert [e.meta.code for e in events if isinstance(e.meta, SessionError)] == ["interrupted"]
    stop = SpeechError(request_id="req-1", session_id="s1", code="interrupted", message="the request was interrupted")
    assert list(core.fail(stop)) == []


def progress_of(events: list[SessionEvent]) -> EmittedProgress | None:
    """What a session topic holding ``events`` tells a worker taking over."""
    chunks = chunks_of(events)
    if not chunks:
        return None
    last = chunks[-1]
    return EmittedProgress(last_seq=last.seq, frames_end=(last.pts_ms + last.duration_ms) // 40,
                           finished=last.is_last)


def test_a_worker_taking_over_mid_segment_continues_without_gap_or_duplicate(avatar: AvatarFaceData) -> None:
    lengths = [20 * SAMPLES_PER_FRAME, 40 * SAMPLES_PER_FRAME, 15 * SAMPLES_PER_FRAME]
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    segments = [speech(n, i, i == 2, avatar.avatar_id, f"part {i}", start_sample=s)
                for i, (n, s) in enumerate(zip(lengths, starts, strict=True))]
    crashed = make_core(avatar)
    topic = list(crashed.handle(segments[0]))
    partial = crashed.handle(segments[1])
    topic += [next(partial), next(partial)]  # the worker dies after two chunks of segment 1

    successor = make_core(avatar)
    successor.progress = lambda _session, _request: progress_of(topic)
    topic += list(successor.handle(segments[1], recovering=True))
    topic += list(successor.handle(segments[2]))

    metas = chunks_of(topic)
    assert [m.seq for m in metas] == list(range(len(metas)))
    assert [m.pts_ms for m in metas[1:]] == [m.pts_ms + m.duration_ms for m in metas[:-1]]
    assert metas[-1].is_last and sum(m.duration_ms for m in metas) == 75 * 40
    decoded = decode_mp4(b"".join(e.payload for e in topic))
    assert decoded.video_frames == 75
    assert decoded.audio_duration_s == pytest.approx(3.0, abs=0.1)


def test_a_successor_emits_nothing_for_a_request_already_finished(avatar: AvatarFaceData) -> None:
    done = list(make_core(avatar).handle(speech(10 * SAMPLES_PER_FRAME, 0, True, avatar.avatar_id)))
    successor = make_core(avatar)
    successor.progress = lambda _session, _request: progress_of(done)
    assert list(successor.handle(speech(10 * SAMPLES_PER_FRAME, 0, True, avatar.avatar_id), recovering=True)) == []


def test_a_request_replayed_after_it_finished_here_is_not_rendered_twice(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    segment = speech(10 * SAMPLES_PER_FRAME, 0, True, avatar.avatar_id)
    assert list(core.handle(segment))
    assert list(core.handle(segment)) == [], "e.g. the TTS processor restarted and spoke it again"


def test_audio_input_segments_are_each_rendered_at_once_into_one_continuous_video(avatar: AvatarFaceData) -> None:
    core = make_core(avatar)
    utterance = Utterance(UtteranceTarget("req-a", "s1", avatar.avatar_id, 16_000), max_samples=10**9)
    t = np.arange(16_000) / 16_000
    pcm = (8000 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    chunks: list[VideoChunkMeta] = []
    for start in range(0, len(pcm), 1600):  # 100 ms at a time, as an agent streams it
        for segment in utterance.add(pcm[start : start + 1600]):
            rendered = chunks_of(list(core.handle(segment)))
            assert sum(c.duration_ms for c in rendered) == segment.meta.sample_count // 16, "nothing waits"
            chunks += rendered
    for segment in utterance.end():
        chunks += chunks_of(list(core.handle(segment)))
    assert [c.pts_ms for c in chunks[1:]] == [c.pts_ms + c.duration_ms for c in chunks[:-1]]
    assert chunks[-1].is_last and chunks[-1].pts_ms + chunks[-1].duration_ms == 1000
