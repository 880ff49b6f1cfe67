"""The lip-sync processor's pure core: speech segments of a request → that request's video chunks."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from processors.common.batching import Shared
from processors.lipsync.engines.base import (
    AUDIO_RATE,
    FPS,
    SAMPLES_PER_FRAME,
    LipSyncEngine,
    RenderJob,
    VisemeMarks,
    render_jobs,
)
from processors.lipsync.media import FragmentedMp4Writer
from processors.lipsync.visemes import UnknownPhonemes, Viseme, unknown_phonemes, viseme_onsets
from schemas.avatar import AvatarFaceData, RgbFrame
from schemas.session import SessionError, SessionEvent, VideoChunkMeta
from schemas.speech import SpeechError, SpeechSegment

AvatarProvider = Callable[[str], AvatarFaceData]
InterruptCheck = Callable[[str, str, int | None], bool]  # (session_id, request_id, created_at_ms) → stop?


def never_interrupted(_session_id: str, _request_id: str, _created_at_ms: int | None) -> bool:
    return False


class AvatarUnavailable(LookupError):
    """Raised by an AvatarProvider when an avatar cannot be rendered; the request fails with ``code``."""

    code = "avatar_unavailable"

    def __init__(self, avatar_id: str, message: str) -> None:
        super().__init__(message)
        self.avatar_id = avatar_id
        self.message = message


class UnknownAvatar(AvatarUnavailable):
    """Raised by an AvatarProvider for an avatar that is not registered."""

    code = "unknown_avatar"

    def __init__(self, avatar_id: str) -> None:
        super().__init__(avatar_id, f"no registered avatar with id '{avatar_id}'")


def to_engine_audio(pcm: np.ndarray, rate: int) -> np.ndarray:
    """int16 at the speech rate → float32 in [-1, 1] at the engines' 16 kHz."""
    audio = pcm.astype(np.float32) / 32768.0
    if rate == AUDIO_RATE or len(audio) == 0:
        return audio
    count = round(len(audio) * AUDIO_RATE / rate)
    return np.interp(np.arange(count) * (rate / AUDIO_RATE), np.arange(len(audio)), audio).astype(np.float32)


@dataclass(frozen=True)
class EmittedProgress:
    """What already reached a session's topic for one request (read back after a worker restart)."""

    last_seq: int
    frames_end: int  # frames covered by the chunks emitted so far
    finished: bool  # the request's last chunk is on the topic


ProgressLookup = Callable[[str, str], EmittedProgress | None]  # (session_id, request_id)


StageObserver = Callable[[str, float], None]  # (stage, seconds)
# Speech without the TTS's timings (OpenAI, client audio) → viseme onsets, seconds from the audio's start.
OnsetEstimator = Callable[[np.ndarray], Sequence[tuple[float, Viseme]]]
SourceObserver = Callable[[str], None]  # where a segment's articulation came from: "tts", "estimated", "none"
ONSET_CONTEXT_S = 0.5  # onsets a job sees around its frames: more than any pose reaches (articulation.py)
# 16 kHz audio a job sees before its first frame (RenderJob.history): more than any engine reaches back
# (a Wav2Lip mel window reaches 601 samples before its frame).
HISTORY_SAMPLES = AUDIO_RATE // 2
# Audio the estimator hears before a segment without timings. Client audio arrives in ~100 ms segments: alone,
# each would be levelled against its own loud frames (a breath would look like speech) and its first frames
# would lack the 120 ms of left context the estimator stacks. One second of the request's audio before it gives
# it the same level and context as the whole utterance (~2 ms of estimator time per segment).
ESTIMATE_CONTEXT_SAMPLES = AUDIO_RATE


def ignore_stage(_stage: str, _seconds: float) -> None:
    return None


def nothing_emitted(_session_id: str, _request_id: str) -> EmittedProgress | None:
    return None


def ignore_source(_source: str) -> None:
    return None


@dataclass
class _RequestStream:
    """What a request in progress carries from one speech segment to the next."""

    sample_rate: int
    writer: FragmentedMp4Writer | None = None  # created at the first chunk this worker encodes
    next_segment: int = 0
    frames_done: int = 0
    seq: int = 0
    emitted_frames: int = 0  # after a restart: frames a previous worker already sent
    # playback audio of the frames not rendered yet (a partial frame, and frames held for look-ahead)
    carry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    lipsync: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # the same at 16 kHz
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # 16 kHz before frames_done
    # viseme onsets in seconds from the request's first frame; None while the request's speech has none
    onsets: list[tuple[float, Viseme]] | None = None
    # the request's last 16 kHz audio before the next segment, as the estimator hears it (ESTIMATE_CONTEXT_SAMPLES)
    heard: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


class LipSyncCore:
    """Renders each segment as soon as it arrives, in chunks, continuing one MP4 per request.

    Chunk boundaries depend only on the segment (its frame count, and whether the request has shown a
    frame yet) and on the engine's look-ahead, so a worker that takes over after a crash re-renders a
    half-sent segment into the same chunks, skips those already on the topic (``progress``), and
    continues the same timeline: the client sees every chunk exactly once, in order.

    Each job gets its audio on the request's timeline, so a request rendered in chunks renders as one
    whole job would: the exact 16 kHz slices of the TTS's lip-sync copy (resampled from the playback
    audio only for v1 segments, which have none), the request's last ~0.5 s before the job as history
    (across chunks and segments), and the engine's look-ahead after it. For that look-ahead, an engine
    that declares ``lookahead_frames`` (Wav2Lip) has the last that many frames of a segment held back
    and rendered with the next segment, whose audio their windows reach into.
    """

    def __init__(
        self,
        engine: LipSyncEngine,
        avatars: AvatarProvider,
        *,
        fps: int = 25,
        chunk_frames: int = 12,
        first_chunk_frames: int = 6,
        crf: int = 23,
        max_open_requests: int = 256,
        is_interrupted: InterruptCheck = never_interrupted,
        progress: ProgressLookup = nothing_emitted,
        observe_stage: StageObserver = ignore_stage,
        estimate_onsets: OnsetEstimator | None = None,
        unknown: UnknownPhonemes = unknown_phonemes,
        observe_source: SourceObserver = ignore_source,
    ) -> None:
        self.engine = engine
        self.avatars = avatars
        self.fps = fps
        self.chunk_frames = chunk_frames
        self.first_chunk_frames = min(first_chunk_frames, chunk_frames)
        self.crf = crf
        self.max_open_requests = max_open_requests
        self.is_interrupted = is_interrupted
        self.progress = progress
        self.observe_stage = observe_stage
        self.estimate_onsets = estimate_onsets
        self.unknown = unknown
        self.observe_source = observe_source
        self.lookahead = int(getattr(engine, "lookahead_frames", 0))
        self._streams: OrderedDict[str, _RequestStream] = OrderedDict()
        self._closed: OrderedDict[str, None] = OrderedDict()  # finished, failed or interrupted

    def handle(self, segment: SpeechSegment, *, recovering: bool = False) -> Iterator[SessionEvent]:
        """Chunks for one segment, rendered here. ``recovering``: this worker may have crashed while handling it."""
        for step in self.steps(segment, recovering=recovering):
            if isinstance(step, Shared):
                step.resolve(self.render_batch([step.work])[0])
            else:
                yield step

    def steps(self, segment: SpeechSegment, *, recovering: bool = False) -> Iterator[SessionEvent | Shared]:
        """``handle`` with each chunk's render handed out before its chunk: a ``Shared`` piece whose work is the
        RenderJob, to be resolved with its frames (by ``render_batch``, with other sessions' pieces) before the
        iteration goes on."""
        meta = segment.meta
        if meta.request_id in self._closed:
            return  # a redelivery of a request already finished here
        if self._interrupted(segment):
            yield from self._drop(meta.request_id)
            return
        try:
            avatar = self.avatars(meta.avatar_id)
        except AvatarUnavailable as failure:
            self._close(meta.request_id)
            yield SessionEvent(SessionError(request_id=meta.request_id, code=failure.code, message=failure.message))
            return
        stream = self._streams.get(meta.request_id)
        if stream is None:
            stream = self._open_stream(segment, recovering)
            if stream is None:
                return
        if meta.segment_index < stream.next_segment:
            return  # a redelivered segment: its chunks were already sent
        stream.next_segment = meta.segment_index + 1
        yield from self._render_segment(stream, segment, avatar)
        if meta.is_last:
            self._streams.pop(meta.request_id, None)
            self._close(meta.request_id)

    def fail(self, error: SpeechError) -> Iterator[SessionEvent]:
        """Pass the TTS's error for a request on to its session, once: a request already ended here (finished,
        failed, or dropped as interrupted) says nothing more."""
        if error.request_id in self._closed:
            return
        self._streams.pop(error.request_id, None)
        self._close(error.request_id)
        yield SessionEvent(SessionError(request_id=error.request_id, code=error.code, message=error.message))

    def _open_stream(self, segment: SpeechSegment, recovering: bool) -> _RequestStream | None:
        """A new stream, or the continuation of one another worker began; None if it is already done."""
        meta = segment.meta
        stream = _RequestStream(meta.sample_rate)
        if meta.segment_index > 0 or recovering:
            emitted = self.progress(meta.session_id, meta.request_id)
            if emitted is not None and emitted.finished:
                self._close(meta.request_id)
                return None
            samples_per_frame = meta.sample_rate // self.fps
            start_sample = meta.start_sample if meta.start_sample is not None else (
                meta.start_ms * meta.sample_rate // 1000)
            # Frames held back for the look-ahead (the last ones of the segments so far) were not sent.
            stream.frames_done = max(start_sample // samples_per_frame - self.lookahead, 0)
            # The previous segment's unrendered tail is gone with the old worker: silence of the same length.
            # So is the audio before it, which a job's history would hold: silence too (a window or two of
            # Wav2Lip's differ from an uninterrupted render; the embedded engine does not look back).
            stream.carry = np.zeros(start_sample - stream.frames_done * samples_per_frame, np.int16)
            stream.lipsync = np.zeros(len(stream.carry) // samples_per_frame * SAMPLES_PER_FRAME, np.float32)
            stream.next_segment = meta.segment_index
            if emitted is not None:
                stream.seq = emitted.last_seq + 1
                stream.emitted_frames = emitted.frames_end
        self._streams[meta.request_id] = stream
        while len(self._streams) > self.max_open_requests:  # abandoned requests must not leak memory
            self._streams.popitem(last=False)
        return stream

    def render_batch(self, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
        """Every job's frames through the engine in one call (one inference batch where the engine batches)."""
        started = time.perf_counter()
        frames = render_jobs(self.engine, jobs)
        self.observe_stage("render", time.perf_counter() - started)
        return frames

    def _render_segment(
        self, stream: _RequestStream, segment: SpeechSegment, avatar: AvatarFaceData
    ) -> Iterator[SessionEvent | Shared]:
        meta = segment.meta
        samples_per_frame = stream.sample_rate // self.fps
        pcm = np.concatenate([stream.carry, np.frombuffer(segment.pcm16, dtype="<i2").astype(np.int16)])
        if meta.is_last:  # the tail becomes whole frames; a request always shows at least one frame
            first_ever = meta.segment_index == 0 and stream.frames_done == 0
            pcm = _pad_to_frames(pcm, samples_per_frame, minimum_frames=1 if first_ever else 0)
        total_frames = len(pcm) // samples_per_frame
        engine_audio = _engine_audio(stream, segment, pcm, total_frames)
        # A segment's last frames wait for the next one when the engine looks ahead into it.
        frames = total_frames if meta.is_last else max(total_frames - self.lookahead, 0)
        self._add_onsets(stream, segment)
        stream.carry = pcm[frames * samples_per_frame :]
        stream.lipsync = engine_audio[frames * SAMPLES_PER_FRAME :]
        subtitle: str | None = meta.text
        offset = 0
        sizes = self._chunk_sizes(stream.frames_done == 0, frames, meta.is_last)
        for index, size in enumerate(sizes):
            if self._interrupted(segment):  # checked per chunk: barge-in stops work within one chunk
                yield from self._drop(meta.request_id)
                return
            is_last = meta.is_last and index == len(sizes) - 1
            shown = engine_audio[offset * SAMPLES_PER_FRAME : (offset + size) * SAMPLES_PER_FRAME]
            if stream.frames_done + size <= stream.emitted_frames and not is_last:
                stream.frames_done += size  # a previous worker sent this chunk before it died
                stream.history = _recent(stream.history, shown)
                offset += size
                subtitle = None
                continue
            audio = pcm[offset * samples_per_frame : (offset + size) * samples_per_frame]
            # Engines that look ahead (Wav2Lip's mel window) see what follows the chunk.
            context = engine_audio[offset * SAMPLES_PER_FRAME : (offset + size + self.lookahead) * SAMPLES_PER_FRAME]
            writer = self._writer(stream, avatar)
            # The rest of the segment's audio follows this chunk's: the chunk's audio can reach its video's end.
            upcoming = pcm[(offset + size) * samples_per_frame :]
            job = RenderJob(avatar, context, stream.frames_done, size, self._job_onsets(stream, size),
                            history=stream.history)
            images = (yield from _rendered(job)) if size else []
            data = self._encode(writer, images, audio, upcoming)
            stream.history = _recent(stream.history, shown)
            if is_last:
                data += writer.close()
            start_ms = stream.frames_done * 1000 // self.fps
            yield SessionEvent(VideoChunkMeta(
                request_id=meta.request_id, seq=stream.seq, pts_ms=start_ms,
                duration_ms=(stream.frames_done + size) * 1000 // self.fps - start_ms, mime=writer.mime,
                is_last=is_last, text=subtitle, created_at_ms=meta.created_at_ms,
            ), data)
            subtitle = None
            stream.seq += 1
            stream.frames_done += size
            offset += size

    def _writer(self, stream: _RequestStream, avatar: AvatarFaceData) -> FragmentedMp4Writer:
        if stream.writer is None:
            stream.writer = FragmentedMp4Writer(avatar.width, avatar.height, fps=self.fps,
                                                audio_rate=stream.sample_rate, crf=self.crf,
                                                start_frame=stream.frames_done)
        return stream.writer

    def _chunk_sizes(self, first_segment: bool, total_frames: int, is_last_segment: bool) -> list[int]:
        """Frames per chunk: a small first chunk of a request (latency), then chunk_frames each.

        A segment with no whole frame yields no chunk, except a request's last segment, which always
        yields a (possibly empty) final chunk so the client learns the request is over.
        """
        sizes: list[int] = []
        remaining = total_frames
        while remaining > 0:
            size = min(self.first_chunk_frames if first_segment and not sizes else self.chunk_frames, remaining)
            sizes.append(size)
            remaining -= size
        return sizes or ([0] if is_last_segment else [])

    def _add_onsets(self, stream: _RequestStream, segment: SpeechSegment) -> None:
        """Put the segment's viseme onsets on the request's timeline: from the TTS's phoneme timings, else
        estimated from its audio; dropping those too old to reach any frame still to render."""
        meta = segment.meta
        start_sample = meta.start_sample if meta.start_sample is not None else meta.start_ms * meta.sample_rate // 1000
        start_s = start_sample / meta.sample_rate
        if meta.phonemes is not None:
            marks = [(offset / meta.sample_rate, name) for offset, name in meta.phonemes]
            onsets = list(viseme_onsets(marks, self.unknown))
            self.observe_source("tts")
        elif self.estimate_onsets is not None:
            audio = _lipsync_audio(segment)
            onsets = estimate_in_context(self.estimate_onsets, stream.heard, audio)
            stream.heard = _recent(stream.heard, audio, ESTIMATE_CONTEXT_SAMPLES)
            self.observe_source("estimated")
        else:
            self.observe_source("none")
            return
        timeline = stream.onsets if stream.onsets is not None else []
        horizon = stream.frames_done / self.fps - ONSET_CONTEXT_S
        keep_from = next((i for i, (t, _) in enumerate(timeline) if t >= horizon), len(timeline))
        stream.onsets = timeline[max(keep_from - 1, 0):] + [(start_s + t, viseme) for t, viseme in onsets]

    def _job_onsets(self, stream: _RequestStream, n_frames: int) -> VisemeMarks | None:
        """The onsets around a job's frames on the job's own clock (0 = its first frame's start)."""
        if stream.onsets is None:
            return None
        origin = stream.frames_done / self.fps
        first, last = origin - ONSET_CONTEXT_S, origin + n_frames / self.fps + ONSET_CONTEXT_S
        inside = [i for i, (t, _) in enumerate(stream.onsets) if first <= t <= last]
        if not inside:
            before = [i for i, (t, _) in enumerate(stream.onsets) if t < first]
            inside = before[-1:]
        elif inside[0] > 0:
            inside.insert(0, inside[0] - 1)  # the shape already going on when the window starts
        return tuple((stream.onsets[i][0] - origin, stream.onsets[i][1]) for i in inside)

    def _encode(self, writer: FragmentedMp4Writer, frames: list[RgbFrame], audio: np.ndarray,
                upcoming: np.ndarray) -> bytes:
        """One chunk's fragment: its frames and ``audio``, its playback audio (``upcoming``: what follows it)."""
        if not frames:
            return b""
        started = time.perf_counter()
        data = writer.write(frames, audio, upcoming)
        self.observe_stage("encode", time.perf_counter() - started)
        return data

    def _interrupted(self, segment: SpeechSegment) -> bool:
        meta = segment.meta
        return self.is_interrupted(meta.session_id, meta.request_id, meta.created_at_ms)

    def _drop(self, request_id: str) -> Iterator[SessionEvent]:
        """Forget an interrupted request and say so once, so Kafka readers know it ended."""
        self._streams.pop(request_id, None)
        self._close(request_id)
        yield SessionEvent(SessionError(request_id=request_id, code="interrupted",
                                        message="the request was interrupted"))

    def _close(self, request_id: str) -> None:
        self._closed[request_id] = None
        while len(self._closed) > 16 * self.max_open_requests:
            self._closed.popitem(last=False)

    @property
    def open_requests(self) -> int:
        return len(self._streams)


def _rendered(job: RenderJob) -> Generator[Shared, None, list[RgbFrame]]:
    """Hands the job out as a Shared piece and returns the frames it was resolved with."""
    piece = Shared(job, size=job.n_frames)
    yield piece
    frames: list[RgbFrame] = piece.result()
    return frames


def _lipsync_audio(segment: SpeechSegment) -> np.ndarray:
    """The segment's speech as float32 at the engines' 16 kHz (the v2 lip-sync copy when it has one)."""
    meta = segment.meta
    if segment.lipsync_pcm16 and meta.lipsync_sample_rate:
        return to_engine_audio(np.frombuffer(segment.lipsync_pcm16, dtype="<i2"), meta.lipsync_sample_rate)
    return to_engine_audio(np.frombuffer(segment.pcm16, dtype="<i2"), meta.sample_rate)


def _own_lipsync_audio(segment: SpeechSegment) -> np.ndarray | None:
    """The TTS's 16 kHz copy of the segment as float32, if it has one covering exactly its playback audio."""
    meta = segment.meta
    if not (segment.lipsync_pcm16 and meta.lipsync_sample_rate):
        return None
    pcm = np.frombuffer(segment.lipsync_pcm16, dtype="<i2")
    if len(pcm) * meta.sample_rate != (len(segment.pcm16) // 2) * meta.lipsync_sample_rate:
        return None  # not the same span as the playback audio: it would shift the timeline
    return to_engine_audio(pcm, meta.lipsync_sample_rate)


def _engine_audio(stream: _RequestStream, segment: SpeechSegment, pcm: np.ndarray, total_frames: int) -> np.ndarray:
    """16 kHz audio of the frames in ``pcm`` (the stream's unrendered frames, then the segment), at least
    ``total_frames`` long.

    The TTS's own copy is used exactly, sample for sample, when the unrendered audio before it is whole
    frames (always, for v2/v3 segments); otherwise (v1) the playback audio is resampled, from a frame
    boundary, so its frames still fall on the 16 kHz frame grid.
    """
    samples_per_frame = stream.sample_rate // FPS
    own = _own_lipsync_audio(segment)
    if own is not None and len(stream.carry) % samples_per_frame == 0 and (
            len(stream.lipsync) == len(stream.carry) // samples_per_frame * SAMPLES_PER_FRAME):
        audio = np.concatenate([stream.lipsync, own])
    else:
        audio = to_engine_audio(pcm, stream.sample_rate)
    missing = total_frames * SAMPLES_PER_FRAME - len(audio)  # the last segment's tail, padded to whole frames
    return np.concatenate([audio, np.zeros(missing, np.float32)]) if missing > 0 else audio


def _recent(history: np.ndarray, shown: np.ndarray, keep: int = HISTORY_SAMPLES) -> np.ndarray:
    """The last ``keep`` samples of the request's 16 kHz audio once ``shown`` has been rendered too."""
    joined = np.concatenate([history, shown])
    return joined[-keep:] if len(joined) > keep else joined


def estimate_in_context(estimate: OnsetEstimator, context: np.ndarray,
                        audio: np.ndarray) -> list[tuple[float, Viseme]]:
    """The viseme onsets of ``audio`` (seconds from its start), estimated with ``context`` heard before it.

    The shape going on where ``audio`` starts is given at 0.0, so the segment's timeline is complete.
    """
    if len(context) == 0:
        return list(estimate(audio))
    shift = len(context) / AUDIO_RATE
    heard = list(estimate(np.concatenate([context, audio])))
    going_on = [viseme for t, viseme in heard if t <= shift][-1:]
    return [(0.0, viseme) for viseme in going_on] + [(t - shift, viseme) for t, viseme in heard if t > shift]


def _pad_to_frames(pcm: np.ndarray, samples_per_frame: int, minimum_frames: int) -> np.ndarray:
    frames = max(minimum_frames, -(-len(pcm) // samples_per_frame))
    return np.concatenate([pcm, np.zeros(frames * samples_per_frame - len(pcm), np.int16)])
