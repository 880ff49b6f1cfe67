"""A request rendered chunk by chunk through the lip-sync core gives exactly the frames of one whole render.

The core renders 6 frames, then 12 at a time, segment after segment; the reference is one RenderJob of the
request's whole 16 kHz audio. Wav2Lip must be fed the very same inputs (mel windows on the request's
timeline, face crops) and give the same frames; the embedded engine must give the same poses and frames.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from processors.common.batching import Shared, run_shared
from processors.lipsync.articulation import (
    BLEND_HALF_S,
    CLOSE_LEAD_S,
    CLOSE_RAMP_S,
    LEAD_S,
    TUCK_LEAD_S,
    TUCK_RAMP_S,
)
from processors.lipsync.core import EmittedProgress, LipSyncCore, UnknownAvatar
from processors.lipsync.engines.base import SAMPLES_PER_FRAME, LipSyncEngine, RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.engines.wav2lip import Wav2LipEngine
from processors.lipsync.mel import mel_windows
from processors.lipsync.visemes import Viseme, viseme_onsets
from processors.tts.audio import LIPSYNC_RATE, PLAYBACK_RATE, LoudnessTarget, shape_speech, to_pcm16
from schemas.avatar import AvatarFaceData, RgbFrame
from schemas.session import SessionEvent, VideoChunkMeta
from schemas.speech import SpeechSegment, SpeechSegmentMeta
from scripts.wav2lip.graph import build_model, random_state_dict, wav2lip_architecture
from tests.unit.face_fixtures import astronaut_photo, astronaut_video, espeak_speech

FRAMES = 75  # a 3-second request
PLAYBACK_FRAME = PLAYBACK_RATE // 25
# Phonemes every ~70 ms, cycling through shapes with closures, rounding and tucks (what matters here is
# that the poses change all the time, not that they match the words).
PHONEME_CYCLE = ("b", "ɑ", "m", "i", "f", "u", "t", "o", "s", "æ", "p", "ə")
PHONEME_STEP = 1543  # playback samples (~70 ms), not a multiple of a frame


@dataclass(frozen=True)
class Request:
    segments: tuple[SpeechSegment, ...]
    audio: npt.NDArray[np.float32]  # the whole request's 16 kHz audio
    visemes: tuple[tuple[float, Viseme], ...]  # on the request's clock


@functools.cache
def make_request(split: tuple[int, ...]) -> Request:
    """Speech shaped by the TTS's own code, cut into v3 segments of ``split`` frames each."""
    raw = espeak_speech("The quick brown fox jumps over the lazy dog.", "en-us", rate=PLAYBACK_RATE)
    shaped = shape_speech(to_pcm16(raw), PLAYBACK_RATE, pause_ms=0, target=LoudnessTarget())
    playback = np.zeros(FRAMES * PLAYBACK_FRAME, np.int16)
    lipsync = np.zeros(FRAMES * SAMPLES_PER_FRAME, np.int16)
    playback[: min(len(shaped.playback), len(playback))] = shaped.playback[: len(playback)]
    lipsync[: min(len(shaped.lipsync), len(lipsync))] = shaped.lipsync[: len(lipsync)]
    assert sum(split) == FRAMES
    segments: list[SpeechSegment] = []
    visemes: list[tuple[float, Viseme]] = []
    start = 0
    for index, frames in enumerate(split):
        count = frames * PLAYBACK_FRAME
        marks = [(offset, PHONEME_CYCLE[(offset // PHONEME_STEP + index) % len(PHONEME_CYCLE)])
                 for offset in range(0, count - PLAYBACK_FRAME, PHONEME_STEP)] + [(count - PLAYBACK_FRAME, "_")]
        meta = SpeechSegmentMeta(
            request_id="req-exact", session_id="s1", avatar_id="astronaut", segment_index=index,
            is_last=index == len(split) - 1, text=f"part {index}", spoken=f"part {index}", language="en",
            sample_rate=PLAYBACK_RATE, sample_count=count, start_ms=start * 1000 // PLAYBACK_RATE,
            start_sample=start, lipsync_sample_rate=LIPSYNC_RATE, lipsync_sample_count=frames * SAMPLES_PER_FRAME,
            phonemes=marks)
        first = start // PLAYBACK_FRAME * SAMPLES_PER_FRAME
        segments.append(SpeechSegment(meta, playback[start : start + count].astype("<i2").tobytes(),
                                      lipsync[first : first + frames * SAMPLES_PER_FRAME].astype("<i2").tobytes()))
        # What the core puts on the request's timeline (LipSyncCore._add_onsets), for the whole job.
        onsets = viseme_onsets([(offset / PLAYBACK_RATE, name) for offset, name in marks])
        visemes += [(start / PLAYBACK_RATE + t, viseme) for t, viseme in onsets]
        start += count
    return Request(tuple(segments), lipsync.astype(np.float32) / 32768.0, tuple(visemes))


class Recorder:
    """Wraps an engine and keeps every job the core gives it and the frames it returned.

    ``lookahead``: the frames the engine is said to look ahead (None: what it declares itself).
    """

    def __init__(self, engine: LipSyncEngine, lookahead: int | None = None) -> None:
        self.engine = engine
        self.name = engine.name
        self.lookahead_frames = lookahead if lookahead is not None else int(getattr(engine, "lookahead_frames", 0))
        self.jobs: list[RenderJob] = []
        self.frames: list[RgbFrame] = []

    def render(self, job: RenderJob) -> list[RgbFrame]:
        frames = self.engine.render(job)
        self.jobs.append(job)
        self.frames += frames
        return list(frames)


class RecordingSession:
    """Stands in for the ONNX Runtime session and keeps a copy of every feed."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.feeds: list[dict[str, npt.NDArray[np.float32]]] = []

    def run(self, outputs: Any, feeds: dict[str, npt.NDArray[np.float32]]) -> Any:
        self.feeds.append({name: np.array(value) for name, value in feeds.items()})
        return self.session.run(outputs, feeds)

    def stacked(self, name: str) -> npt.NDArray[np.float32]:
        return np.concatenate([feed[name] for feed in self.feeds])


def render_chunked(engine: LipSyncEngine, avatar: AvatarFaceData, request: Request,
                   lookahead: int | None = None) -> Recorder:
    recorder = Recorder(engine, lookahead)

    def provide(avatar_id: str) -> AvatarFaceData:
        if avatar_id != "astronaut":
            raise UnknownAvatar(avatar_id)
        return avatar

    core = LipSyncCore(recorder, provide, chunk_frames=12, first_chunk_frames=6)
    for segment in request.segments:
        list(core.handle(segment))
    return recorder


def whole_job(avatar: AvatarFaceData, request: Request) -> RenderJob:
    return RenderJob(avatar, request.audio, 0, FRAMES, request.visemes)


def assert_same_frames(chunked: Sequence[RgbFrame], whole: Sequence[RgbFrame]) -> None:
    assert len(chunked) == len(whole) == FRAMES
    differing = [i for i, (a, b) in enumerate(zip(chunked, whole, strict=True)) if not np.array_equal(a, b)]
    assert differing == [], f"{len(differing)} frames differ"


SPLITS = [pytest.param((75,), id="one-segment"), pytest.param((40, 35), id="two-segments"),
          pytest.param((9, 31, 35), id="three-segments-short-first")]


@pytest.fixture(scope="module")
def slim_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    architecture = wav2lip_architecture(8)
    path = tmp_path_factory.mktemp("wav2lip") / "slim.onnx"
    onnx.save(build_model(random_state_dict(architecture, seed=5), architecture), str(path))
    return path


@pytest.fixture(scope="module")
def wav2lip(slim_model: Path) -> Wav2LipEngine:
    # One frame per inference: a frame's output then depends on its own inputs only, so equal inputs must
    # give equal frames (batch composition may move a float by an ulp in ONNX Runtime).
    engine = Wav2LipEngine(slim_model, batch_size=1, threads=1)
    engine.session = RecordingSession(engine.session)
    return engine


def recording(engine: Wav2LipEngine) -> RecordingSession:
    session = engine.session
    assert isinstance(session, RecordingSession)
    session.feeds.clear()
    return session


@pytest.mark.parametrize("split", SPLITS)
def test_wav2lip_gets_the_same_inputs_and_gives_the_same_frames_chunked_as_whole(
        wav2lip: Wav2LipEngine, split: tuple[int, ...]) -> None:
    avatar = astronaut_photo()
    request = make_request(split)
    session = recording(wav2lip)
    chunked = render_chunked(wav2lip, avatar, request)
    chunked_feeds = {name: session.stacked(name) for name in session.feeds[0]}
    session.feeds.clear()
    whole = wav2lip.render(whole_job(avatar, request))
    whole_feeds = {name: session.stacked(name) for name in session.feeds[0]}

    sizes = [job.n_frames for job in chunked.jobs]
    assert sizes[0] <= 6 and 12 in sizes, "rendered as the core streams: a small first chunk, then 12s"
    for name, value in whole_feeds.items():
        assert value.shape[0] == FRAMES
        np.testing.assert_array_equal(chunked_feeds[name], value, err_msg=f"input {name}")
    np.testing.assert_array_equal(whole_feeds[wav2lip.signature.mel_input], mel_windows(request.audio, FRAMES))
    assert_same_frames(chunked.frames, whole)


def test_each_job_alone_would_have_got_other_windows(wav2lip: Wav2LipEngine) -> None:
    """What the history and the request's timeline fix: the mel of each job's own audio differs."""
    request = make_request((40, 35))
    chunked = render_chunked(wav2lip, astronaut_photo(), request)
    reference = mel_windows(request.audio, FRAMES)
    alone = np.concatenate([mel_windows(job.audio, job.n_frames) for job in chunked.jobs])
    assert np.abs(alone - reference).max() > 0.5
    assert all(len(job.history) > 0 for job in chunked.jobs[1:]) and len(chunked.jobs[0].history) == 0


def test_wav2lip_holds_a_segments_last_frames_until_the_next_segment_brings_their_look_ahead(
        wav2lip: Wav2LipEngine) -> None:
    request = make_request((40, 35))
    chunked = render_chunked(wav2lip, astronaut_photo(), request)
    first_segment = sum(job.n_frames for job in chunked.jobs if job.first_frame < 40 - wav2lip.lookahead_frames)
    assert first_segment == 40 - wav2lip.lookahead_frames
    ahead = wav2lip.lookahead_frames
    assert all(len(job.audio) >= (job.n_frames + ahead) * SAMPLES_PER_FRAME
               for job in chunked.jobs if job.first_frame + job.n_frames <= FRAMES - ahead)


# How far ahead of a frame's middle the articulation looks (lead + the widest of blend window, closing
# and tucking ramps), in frames after the frame: a frame that close to a segment's end needs the onsets
# of the next segment.
ARTICULATION_REACH_S = LEAD_S + max(BLEND_HALF_S, CLOSE_LEAD_S + CLOSE_RAMP_S, TUCK_LEAD_S + TUCK_RAMP_S)
ARTICULATION_LOOKAHEAD = math.ceil(ARTICULATION_REACH_S * 25 - 0.5)


def embedded_renders(split: tuple[int, ...], video: bool, lookahead: int | None
                     ) -> tuple[EmbeddedEngine, Recorder, RenderJob]:
    avatar = astronaut_video(4, avatar_id="astronaut") if video else astronaut_photo()
    request = make_request(split)
    engine = EmbeddedEngine()
    chunked = render_chunked(engine, avatar, request, lookahead)
    assert len(chunked.jobs) > 1 and all(j.visemes for j in chunked.jobs)
    return engine, chunked, whole_job(avatar, request)


def differing_poses(engine: EmbeddedEngine, chunked: Recorder, job: RenderJob) -> list[int]:
    whole = engine.track(job)
    differing: set[int] = set()
    for part in ("opening", "width", "press", "tuck"):
        pieces = np.concatenate([getattr(engine.track(j), part) for j in chunked.jobs])
        differing |= set(np.flatnonzero(pieces != getattr(whole, part)).tolist())
    assert np.ptp(whole.opening) > 0.3, "the poses move: the comparison means something"
    return sorted(differing)


@pytest.mark.parametrize("video", [False, True], ids=["photo", "video"])
def test_embedded_poses_and_frames_are_the_same_chunked_as_whole(video: bool) -> None:
    engine, chunked, job = embedded_renders((75,), video, None)
    assert differing_poses(engine, chunked, job) == []
    assert_same_frames(chunked.frames, engine.render(job))


@pytest.mark.parametrize("split", SPLITS[1:])
@pytest.mark.parametrize("video", [False, True], ids=["photo", "video"])
def test_embedded_segments_are_exact_once_the_articulations_look_ahead_is_held_back(
        split: tuple[int, ...], video: bool) -> None:
    """Across segments the last frames before a join need the next segment's onsets: an engine that
    declares that look-ahead has them held back like Wav2Lip's, and renders exactly."""
    engine, chunked, job = embedded_renders(split, video, ARTICULATION_LOOKAHEAD)
    assert differing_poses(engine, chunked, job) == []
    assert_same_frames(chunked.frames, engine.render(job))


@pytest.mark.parametrize("split", SPLITS[1:])
def test_embedded_without_look_ahead_differs_only_just_before_a_join(split: tuple[int, ...]) -> None:
    engine, chunked, job = embedded_renders(split, False, None)
    joins = np.cumsum(split)[:-1]
    near_a_join = {j - k for j in joins for k in range(1, ARTICULATION_LOOKAHEAD + 1)}
    assert set(differing_poses(engine, chunked, job)) <= near_a_join


def test_the_jobs_audio_is_the_tts_copy_sample_for_sample() -> None:
    request = make_request((40, 35))
    chunked = render_chunked(EmbeddedEngine(), astronaut_photo(), request)
    for job in chunked.jobs:
        start = job.first_frame * SAMPLES_PER_FRAME
        np.testing.assert_array_equal(job.audio[: job.n_frames * SAMPLES_PER_FRAME],
                                      request.audio[start : start + job.n_frames * SAMPLES_PER_FRAME])
        np.testing.assert_array_equal(job.history, request.audio[max(0, start - 8000) : start])


def progress_of(events: Sequence[SessionEvent]) -> EmittedProgress | None:
    """What a session topic holding ``events`` tells a worker taking over."""
    chunks = [e.meta for e in events if isinstance(e.meta, VideoChunkMeta)]
    if not chunks:
        return None
    return EmittedProgress(last_seq=chunks[-1].seq, frames_end=(chunks[-1].pts_ms + chunks[-1].duration_ms) // 40,
                           finished=chunks[-1].is_last)


@pytest.mark.parametrize("crash_after", [0, 2], ids=["between-segments", "mid-segment"])
def test_held_back_frames_survive_a_worker_taking_over(crash_after: int) -> None:
    """With frames held for the look-ahead, a successor still continues without gap or duplicate."""
    avatar = astronaut_photo()
    request = make_request((9, 31, 35))

    def core() -> LipSyncCore:
        return LipSyncCore(Recorder(EmbeddedEngine(), lookahead=5), lambda _id: avatar,
                           chunk_frames=12, first_chunk_frames=6)

    crashed = core()
    topic = list(crashed.handle(request.segments[0]))
    partial = crashed.handle(request.segments[1])
    topic += [next(partial) for _ in range(crash_after)]
    successor = core()
    successor.progress = lambda _session, _request: progress_of(topic)
    topic += list(successor.handle(request.segments[1], recovering=True))
    topic += list(successor.handle(request.segments[2]))
    metas = [e.meta for e in topic if isinstance(e.meta, VideoChunkMeta)]
    assert [m.seq for m in metas] == list(range(len(metas)))
    assert metas[0].pts_ms == 0 and [m.pts_ms for m in metas[1:]] == [m.pts_ms + m.duration_ms for m in metas[:-1]]
    assert metas[-1].is_last and sum(m.duration_ms for m in metas) == FRAMES * 40


class BatchCounter:
    """An engine that renders jobs in batches through ``engine`` and keeps how many jobs each call served."""

    def __init__(self, engine: LipSyncEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.lookahead_frames = int(getattr(engine, "lookahead_frames", 0))
        self.calls: list[int] = []

    def render(self, job: RenderJob) -> list[RgbFrame]:
        return self.render_many([job])[0]

    def render_many(self, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
        self.calls.append(len(jobs))
        render_many = getattr(self.engine, "render_many", None)
        return render_many(jobs) if render_many else [self.engine.render(job) for job in jobs]


def as_session(request: Request, name: str) -> Request:
    """The same request said in another session (another request id)."""
    segments = tuple(SpeechSegment(s.meta.model_copy(update={"request_id": f"req-{name}", "session_id": name}),
                                   s.pcm16, s.lipsync_pcm16) for s in request.segments)
    return Request(segments, request.audio, request.visemes)


def chunks_alone(engine: LipSyncEngine, avatar: AvatarFaceData, request: Request) -> list[bytes]:
    core = LipSyncCore(engine, lambda _id: avatar, chunk_frames=12, first_chunk_frames=6)
    return [event.payload for segment in request.segments for event in core.handle(segment)]


def chunks_in_shared_steps(engine: BatchCounter, avatar: AvatarFaceData,
                           requests: Sequence[Request]) -> list[list[bytes]]:
    """The requests' segments stepped side by side, as the app steps lanes: every chunk's render of all requests
    that have one pending goes through one ``render_batch`` call."""
    core = LipSyncCore(engine, lambda _id: avatar, chunk_frames=12, first_chunk_frames=6)
    queues = [list(request.segments) for request in requests]
    steps: list[Any] = [None] * len(requests)
    chunks: list[list[bytes]] = [[] for _ in requests]
    while any(queues) or any(step is not None for step in steps):
        pending = []
        for index, queue in enumerate(queues):
            while True:
                if steps[index] is None:
                    if not queue:
                        break
                    steps[index] = core.steps(queue.pop(0))
                item = next(steps[index], None)
                if item is None:
                    steps[index] = None
                    continue
                if isinstance(item, Shared):
                    pending.append(item)
                    break
                chunks[index].append(item.payload)
        if pending:
            run_shared(core.render_batch, pending)
    return chunks


@pytest.mark.parametrize("engine_kind", ["wav2lip", "embedded"])
def test_sessions_rendered_together_in_shared_steps_get_the_chunks_each_gets_alone(
        wav2lip: Wav2LipEngine, engine_kind: str) -> None:
    """The batching step's promise: one engine call serves several sessions' next chunks, and what each session
    receives is byte for byte what it receives rendered alone (its own mel windows, history, poses)."""
    avatar = astronaut_photo()
    requests = [as_session(make_request((40, 35)), "a"), as_session(make_request((9, 31, 35)), "b"),
                as_session(make_request((75,)), "c")]
    base: LipSyncEngine = wav2lip if engine_kind == "wav2lip" else EmbeddedEngine()
    alone = [chunks_alone(base, avatar, request) for request in requests]
    counter = BatchCounter(base)
    together = chunks_in_shared_steps(counter, avatar, requests)
    assert max(counter.calls) == 3, "the three sessions' chunks were rendered in shared calls"
    for name, own, shared in zip("abc", alone, together, strict=True):
        assert len(shared) == len(own) and shared == own, f"session {name}'s chunks differ when batched"
