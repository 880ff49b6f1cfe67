"""The VideoGenerator seam: pushed speech comes back as lip-synced frames with their audio; clear drops it all."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from processors.lipsync.engines.base import RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.generator import AudioSegmentEnd, AvatarFrame, BatchRenderer, VideoGenerator
from schemas.avatar import RgbFrame
from tests.support.envelope_measure import mouth_envelope_correlation
from tests.unit.face_fixtures import astronaut_photo, astronaut_video, espeak_speech

RATE = 16_000
SPF = RATE // 25


def pcm16(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def tone(n_samples: int, value: int) -> npt.NDArray[np.int16]:
    """Audio whose every sample says which utterance it belongs to."""
    return np.full(n_samples, value, np.int16)


async def take(stream: AsyncIterator[AvatarFrame | AudioSegmentEnd], count: int,
               timeout: float = 10.0) -> list[AvatarFrame | AudioSegmentEnd]:
    return [await asyncio.wait_for(anext(stream), timeout) for _ in range(count)]


async def until_end(stream: AsyncIterator[AvatarFrame | AudioSegmentEnd]) -> tuple[list[AvatarFrame], AudioSegmentEnd]:
    frames: list[AvatarFrame] = []
    while True:
        item = await asyncio.wait_for(anext(stream), 10.0)
        if isinstance(item, AudioSegmentEnd):
            return frames, item
        frames.append(item)


class RecordingEngine(EmbeddedEngine):
    """The embedded engine, noting how many jobs each batched call carried."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def render_many(self, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
        self.calls.append([job.avatar.avatar_id for job in jobs])
        return super().render_many(jobs)


class GatedEngine(EmbeddedEngine):
    """The embedded engine, holding each render until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.gate = threading.Event()

    def render(self, job: RenderJob) -> list[RgbFrame]:
        self.started.set()
        self.gate.wait(10)
        return super().render(job)


async def test_speech_comes_back_as_frames_carrying_exactly_its_audio_then_the_segment_end() -> None:
    speech = pcm16(espeak_speech("Good morning, everyone.", "en-us"))
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo(), frames_per_render=6)
    await generator.push_audio(speech)
    await generator.push_audio(AudioSegmentEnd())
    frames, end = await until_end(aiter(generator))
    assert end == AudioSegmentEnd(interrupted=False)
    assert len(frames) == -(-len(speech) // SPF)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.pts_ms for f in frames[:3]] == [0, 40, 80]
    audio = np.concatenate([f.audio for f in frames])
    np.testing.assert_array_equal(audio[: len(speech)], speech)
    assert not audio[len(speech):].any()  # the last frame is completed with silence
    assert all(f.image.shape == (512, 512, 3) for f in frames)


async def test_mouth_in_the_frames_follows_the_speech_pushed_in_pieces() -> None:
    speech = espeak_speech("سلام، حال شما چطور است؟ امروز هوا خوب است.", "fa")
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo())
    stream = aiter(generator)
    pieces = np.array_split(pcm16(speech), 7)  # as a TTS or a network would deliver it
    for piece in pieces:
        await generator.push_audio(piece)
    await generator.push_audio(AudioSegmentEnd())
    frames, _ = await until_end(stream)
    result = mouth_envelope_correlation([f.image for f in frames], speech)
    assert result.correlation >= 0.5 and abs(result.best_lag_frames) <= 1


async def test_frames_render_as_soon_as_a_job_of_audio_is_buffered_without_waiting_for_the_end() -> None:
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo(), frames_per_render=4)
    stream = aiter(generator)
    await generator.push_audio(tone(5 * SPF + 100, 300))
    items = await take(stream, 4)
    assert all(isinstance(i, AvatarFrame) for i in items)
    assert generator.pending_frames == 2  # a whole frame and a partial one wait for more audio or the end
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 0.2)


async def test_clear_buffer_drops_queued_and_rendered_frames_at_once() -> None:
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo(), frames_per_render=6)
    stream = aiter(generator)
    await generator.push_audio(tone(75 * SPF, 111))  # 3 s of the first utterance
    await generator.push_audio(AudioSegmentEnd())
    first = await take(stream, 3)  # one job rendered: three frames handed out, three waiting
    assert generator.pending_frames == 72
    generator.clear_buffer()
    assert generator.pending_frames == 0
    await generator.push_audio(tone(8 * SPF, 222))
    await generator.push_audio(AudioSegmentEnd())
    assert await anext(stream) == AudioSegmentEnd(interrupted=True)
    frames, end = await until_end(stream)
    assert not end.interrupted
    assert len(frames) == 8 and all(np.all(f.audio == 222) for f in frames)
    assert [f.index for f in frames] == list(range(6, 14))  # the clock goes on: no index is reused
    assert all(np.all(f.audio == 111) for f in first if isinstance(f, AvatarFrame))


async def test_clear_during_a_render_discards_that_render() -> None:
    engine = GatedEngine()
    generator = VideoGenerator(engine, astronaut_photo(), frames_per_render=6)
    stream = aiter(generator)
    await generator.push_audio(tone(12 * SPF, 111))
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.to_thread(engine.started.wait, 10)
    generator.clear_buffer()  # the engine is mid-render with the old audio
    await generator.push_audio(tone(6 * SPF, 222))
    engine.gate.set()
    assert await asyncio.wait_for(pending, 10) == AudioSegmentEnd(interrupted=True)
    frames = await take(stream, 6)
    assert all(isinstance(f, AvatarFrame) and np.all(f.audio == 222) for f in frames)


async def test_utterances_keep_their_own_audio_and_each_gets_its_end() -> None:
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo(), frames_per_render=6)
    stream = aiter(generator)
    for value, samples in ((1, 3 * SPF + 200), (2, 2 * SPF), (3, 100)):
        await generator.push_audio(tone(samples, value))
        await generator.push_audio(AudioSegmentEnd())
    for value, frame_count in ((1, 4), (2, 2), (3, 1)):
        frames, end = await until_end(stream)
        assert len(frames) == frame_count and not end.interrupted
        audio = np.concatenate([f.audio for f in frames])
        assert set(np.unique(audio)) <= {0, value} and np.count_nonzero(audio) > 0


async def test_sessions_sharing_a_renderer_are_rendered_in_one_batch() -> None:
    engine = RecordingEngine()
    renderer = BatchRenderer(engine)
    photo, video = astronaut_photo("photo"), astronaut_video(3, "video")
    sessions = [VideoGenerator(renderer, avatar, frames_per_render=5) for avatar in (photo, video)]
    for session in sessions:
        await session.push_audio(pcm16(espeak_speech("one two three", "en-us"))[: 10 * SPF])
    streams = [aiter(session) for session in sessions]
    firsts = await asyncio.gather(*(take(stream, 5) for stream in streams))
    assert engine.calls[0] == ["photo", "video"]  # both sessions' first jobs in one render_many
    assert all(isinstance(f, AvatarFrame) for items in firsts for f in items)
    await renderer.aclose()


async def test_idle_generator_shows_silent_frames_until_speech_arrives() -> None:
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo(), idle_frames=True)
    stream = aiter(generator)
    idle = await take(stream, 3)
    assert all(isinstance(f, AvatarFrame) and f.idle and not f.audio.any() for f in idle)
    await generator.push_audio(tone(6 * SPF, 50))
    speaking = await take(stream, 6)
    assert all(isinstance(f, AvatarFrame) and not f.idle and np.all(f.audio == 50) for f in speaking)


async def test_bad_audio_is_refused_with_a_clear_error() -> None:
    generator = VideoGenerator(EmbeddedEngine(), astronaut_photo())
    with pytest.raises(ValueError, match="1-D int16 PCM"):
        await generator.push_audio(np.zeros(640, np.float32))
    with pytest.raises(ValueError, match="whole number of samples per frame"):
        VideoGenerator(EmbeddedEngine(), astronaut_photo(), sample_rate=16_000, fps=30)


class TrackingEngine(EmbeddedEngine):
    """The embedded engine, keeping each job's mouth poses in the order rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.presses: list[float] = []

    def render(self, job: RenderJob) -> list[RgbFrame]:
        self.presses += [float(p) for p in self.track(job).press]
        return super().render(job)


def bilabial_middles_s(text: str) -> tuple[npt.NDArray[np.int16], list[float]]:
    """espeak-ng's speech of ``text`` at 16 kHz and the middle (s) of each p/b/m it says it spoke."""
    from processors.tts.engines.espeak import EspeakEngine

    speech = EspeakEngine().synthesize(text, "en")
    marks = [(start / speech.sample_rate, name) for start, name in speech.phonemes]
    middles = [(start + end) / 2 for (start, name), (end, _) in itertools.pairwise(marks)
               if name in ("p", "b", "m")]
    count = round(len(speech.pcm) * RATE / speech.sample_rate)
    resampled = np.interp(np.arange(count) * speech.sample_rate / RATE, np.arange(len(speech.pcm)), speech.pcm)
    return resampled.astype(np.int16), middles


@pytest.mark.parametrize("estimated", [True, False], ids=["with-estimator", "loudness-only"])
async def test_pushed_speech_closes_the_lips_on_bilabials_with_the_estimator(estimated: bool) -> None:
    """Pushed audio has no phoneme timings; with the estimator the mouth still says them (p b m pressed shut),
    without it the mouth only follows the loudness and never presses."""
    from processors.lipsync.viseme_estimator import VisemeEstimator

    speech, middles = bilabial_middles_s("Bob and Mom moved the blue boots. My baby picks purple plums.")
    engine = TrackingEngine()
    estimate = VisemeEstimator.load().estimate if estimated else None
    generator = VideoGenerator(engine, astronaut_photo(), estimate_onsets=estimate)
    stream = aiter(generator)
    for piece in np.array_split(speech, 12):  # 100-200 ms pieces, as an agent's TTS sends them
        await generator.push_audio(piece)
    await generator.push_audio(AudioSegmentEnd())
    await until_end(stream)
    pressed = [max(engine.presses[max(0, round(t * 25) - 1) : round(t * 25) + 2]) > 0.5 for t in middles]
    assert len(middles) >= 12
    if estimated:
        assert sum(pressed) / len(pressed) >= 0.8, pressed
    else:
        assert not any(pressed)
