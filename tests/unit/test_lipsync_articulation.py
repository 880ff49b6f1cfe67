"""The lip-sync core articulates each segment from the TTS's phoneme timings, or from its audio when it has none."""

from __future__ import annotations

import numpy as np
import pytest

from processors.lipsync.core import LipSyncCore, UnknownAvatar
from processors.lipsync.engines.base import RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.visemes import UnknownPhonemes, Viseme, viseme_onsets
from producers.audio import Utterance, UtteranceTarget
from schemas.avatar import AvatarFaceData, RgbFrame
from schemas.speech import SpeechSegment, SpeechSegmentMeta
from tests.unit.face_fixtures import astronaut_photo

RATE = 22050
FRAME = RATE // 25


class RecordingEngine(EmbeddedEngine):
    """The real embedded engine, keeping every job it renders so a test can read what reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[RenderJob] = []

    def render(self, job: RenderJob) -> list[RgbFrame]:
        self.jobs.append(job)
        return super().render(job)


@pytest.fixture(scope="module")
def avatar() -> AvatarFaceData:
    return astronaut_photo()


def core_with(engine: EmbeddedEngine, avatar: AvatarFaceData, **options: object) -> LipSyncCore:
    def provide(avatar_id: str) -> AvatarFaceData:
        if avatar_id != avatar.avatar_id:
            raise UnknownAvatar(avatar_id)
        return avatar
    return LipSyncCore(engine, provide, chunk_frames=12, first_chunk_frames=6, **options)  # type: ignore[arg-type]


def segment(avatar_id: str, frames: int, phonemes: list[tuple[int, str]] | None, *, index: int = 0,
            start_sample: int = 0, is_last: bool = True) -> SpeechSegment:
    samples = frames * FRAME
    t = np.arange(samples) / RATE
    pcm = (6000 * np.sin(2 * np.pi * 200 * t)).astype("<i2")
    meta = SpeechSegmentMeta(request_id="req-a", session_id="s1", avatar_id=avatar_id, segment_index=index,
                             is_last=is_last, text="Bob", spoken="Bob", language="en", sample_rate=RATE,
                             sample_count=samples, start_ms=start_sample * 1000 // RATE, start_sample=start_sample,
                             phonemes=phonemes)
    return SpeechSegment(meta, pcm.tobytes())


BOB = [(0, "b"), (900, "ɑː"), (4400, "b"), (5600, "æ"), (7400, "n"), (9000, "d"), (9800, "m"), (11500, "ɑː"),
       (14000, "m"), (16000, "uː"), (20600, "v"), (22800, "d"), (26000, "_")]


def test_the_tts_timings_reach_the_engine_as_viseme_onsets_on_each_jobs_clock(avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    list(core_with(engine, avatar).handle(segment(avatar.avatar_id, 50, BOB)))
    first, second = engine.jobs[0], engine.jobs[1]
    assert first.visemes is not None and second.visemes is not None
    assert first.visemes[:2] == ((0.0, Viseme.CLOSED), (pytest.approx(900 / RATE), Viseme.OPEN))
    # the second job starts at frame 6 (0.24 s): the same onsets, 0.24 s earlier on its clock
    assert (pytest.approx(4400 / RATE - 0.24), Viseme.CLOSED) in second.visemes


def test_a_segment_rendered_in_chunks_gets_the_poses_of_one_whole_job(avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    list(core_with(engine, avatar).handle(segment(avatar.avatar_id, 50, BOB)))
    assert [job.n_frames for job in engine.jobs] == [6, 12, 12, 12, 8]
    audio = np.concatenate([job.audio[: job.n_frames * 640] for job in engine.jobs])
    whole = engine.track(RenderJob(avatar, audio, 0, 50, viseme_onsets([(o / RATE, n) for o, n in BOB])))
    for channel in ("opening", "width", "press", "tuck"):
        chunked = np.concatenate([getattr(engine.track(job), channel) for job in engine.jobs])
        np.testing.assert_array_equal(chunked, getattr(whole, channel))


def test_onsets_of_an_earlier_segment_carry_into_the_next(avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    core = core_with(engine, avatar)
    list(core.handle(segment(avatar.avatar_id, 10, [(0, "ɑ"), (8 * FRAME, "m")], is_last=False)))
    list(core.handle(segment(avatar.avatar_id, 10, [(0, "ɑ"), (5 * FRAME, "_")], index=1, start_sample=10 * FRAME)))
    last = engine.jobs[-1]
    assert last.visemes is not None
    assert (pytest.approx(-2 * FRAME / RATE), Viseme.CLOSED) in last.visemes, "the m still going on at the join"


def test_speech_without_timings_is_articulated_from_its_audio(avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    heard: list[np.ndarray] = []

    def estimate(audio: np.ndarray) -> list[tuple[float, Viseme]]:
        heard.append(audio)
        return [(0.0, Viseme.OPEN), (0.3, Viseme.CLOSED), (0.4, Viseme.REST)]

    sources: list[str] = []
    list(core_with(engine, avatar, estimate_onsets=estimate, observe_source=sources.append)
         .handle(segment(avatar.avatar_id, 20, None)))
    assert sources == ["estimated"]
    assert len(heard[0]) == 20 * 640, "the estimator hears the segment at 16 kHz"
    assert engine.jobs[0].visemes == ((0.0, Viseme.OPEN), (0.3, Viseme.CLOSED), (0.4, Viseme.REST))


def test_without_timings_or_estimator_the_mouth_follows_the_loudness(avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    sources: list[str] = []
    list(core_with(engine, avatar, observe_source=sources.append).handle(segment(avatar.avatar_id, 8, None)))
    assert sources == ["none"]
    assert engine.jobs[0].visemes is None


def test_an_unknown_phoneme_is_rest_and_counted_and_the_request_still_renders(avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    unknown = UnknownPhonemes()
    events = list(core_with(engine, avatar, unknown=unknown).handle(
        segment(avatar.avatar_id, 8, [(0, "ɑ"), (2 * FRAME, "☃"), (6 * FRAME, "_")])))
    assert unknown.snapshot() == {"☃": 1}
    assert events and events[-1].meta.is_last  # type: ignore[union-attr]
    visemes = engine.jobs[0].visemes
    assert visemes is not None and (pytest.approx(2 * FRAME / RATE), Viseme.REST) in visemes


def test_speech_without_timings_in_small_segments_is_estimated_with_the_audio_before_it(
        avatar: AvatarFaceData) -> None:
    heard: list[int] = []

    def estimate(audio: np.ndarray) -> list[tuple[float, Viseme]]:
        heard.append(len(audio))
        return [(0.0, Viseme.OPEN)]

    core = core_with(RecordingEngine(), avatar, estimate_onsets=estimate)
    for index in range(4):  # 80 ms segments, as the gateway cuts a client's audio
        list(core.handle(segment(avatar.avatar_id, 2, None, index=index, start_sample=index * 2 * FRAME,
                                 is_last=index == 3)))
    assert heard == [1280, 2560, 3840, 5120], "each segment heard after the request's audio before it (16 kHz)"


def test_audio_input_at_48_khz_reaches_the_engine_as_its_own_16_khz_copy_sample_for_sample(
        avatar: AvatarFaceData) -> None:
    engine = RecordingEngine()
    core = core_with(engine, avatar, estimate_onsets=lambda _audio: [(0.0, Viseme.OPEN)])
    utterance = Utterance(UtteranceTarget("req-b", "s1", avatar.avatar_id, 48_000), max_samples=10**9)
    t = np.arange(48_000) / 48_000
    segments = [s for start in range(0, 48_000, 4800)
                for s in utterance.add((7000 * np.sin(2 * np.pi * 150 * t[start : start + 4800])).astype(np.int16))]
    for seg in segments:
        list(core.handle(seg))
    heard = np.concatenate([job.audio[: job.n_frames * 640] for job in engine.jobs])
    copies = np.concatenate([np.frombuffer(s.lipsync_pcm16, "<i2") for s in segments]).astype(np.float32) / 32768
    assert np.array_equal(heard, copies[: len(heard)]) and len(heard) == len(copies), "not re-interpolated"
