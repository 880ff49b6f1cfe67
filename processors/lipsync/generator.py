"""A per-session video generator over any lip-sync engine: push speech audio, clear it, iterate frames.

This is the seam in the spirit of livekit-agents' avatar ``VideoGenerator``: whoever holds a session's
speech (a realtime voice agent, a WebRTC bridge, a test) pushes int16 PCM as it arrives, marks the end
of each utterance with ``AudioSegmentEnd``, and reads ``AvatarFrame``s (the picture and the exact audio
samples it shows) followed by an ``AudioSegmentEnd`` when the utterance is fully rendered. ``clear_buffer``
is barge-in: every frame not yet handed out, rendered or not, is dropped at once.

Frames render in small jobs (``frames_per_render``) as soon as enough audio is buffered, through a
``BatchRenderer``; generators that share one renderer have their waiting jobs rendered together, so a
batching engine (Wav2Lip) runs the frames of several sessions in one inference batch. Each job also
carries the audio of the frames shown before it (``RenderJob.history``), so an engine whose features
reach back (Wav2Lip's mel) computes them on the session's own timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processors.lipsync.core import (
    ESTIMATE_CONTEXT_SAMPLES,
    HISTORY_SAMPLES,
    OnsetEstimator,
    estimate_in_context,
    to_engine_audio,
)
from processors.lipsync.engines.base import LipSyncEngine, RenderJob, render_jobs
from schemas.avatar import AvatarFaceData, RgbFrame

Pcm16 = npt.NDArray[np.int16]
DEFAULT_FRAMES_PER_RENDER = 6  # 240 ms at 25 fps: small enough for latency, big enough to batch
DEFAULT_MAX_BATCH_FRAMES = 64


@dataclass(frozen=True)
class AudioSegmentEnd:
    """Pushed after an utterance's last audio; handed out after its last frame (``interrupted`` if
    ``clear_buffer`` cut it short)."""

    interrupted: bool = False


@dataclass(frozen=True)
class AvatarFrame:
    """One video frame and the audio samples (at the pushed rate) that play while it shows."""

    image: RgbFrame
    audio: Pcm16
    index: int  # frame number since the generator started; pts = index / fps
    pts_ms: int
    idle: bool = False  # rendered from silence while no speech was queued


class BatchRenderer:
    """Renders jobs of many sessions through one engine, in a worker thread; jobs that queue while a
    batch renders form the next batch, so busy sessions share inference without added waiting."""

    def __init__(self, engine: LipSyncEngine, *, max_batch_frames: int = DEFAULT_MAX_BATCH_FRAMES) -> None:
        self.engine = engine
        self.max_batch_frames = max_batch_frames
        self._queue: asyncio.Queue[tuple[RenderJob, asyncio.Future[list[RgbFrame]]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # render calls made, for monitoring how well sessions share them
        self.jobs = 0

    async def render(self, job: RenderJob) -> list[RgbFrame]:
        """The job's frames, rendered together with whatever other jobs are waiting."""
        future: asyncio.Future[list[RgbFrame]] = asyncio.get_running_loop().create_future()
        self._ensure_worker().put_nowait((job, future))
        return await future

    async def aclose(self) -> None:
        """Stop the worker; jobs still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait()[1].cancel()

    def _ensure_worker(self) -> asyncio.Queue[tuple[RenderJob, asyncio.Future[list[RgbFrame]]]]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(self._queue), name="lipsync-batch")
        return self._queue

    async def _run(self, queue: asyncio.Queue[tuple[RenderJob, asyncio.Future[list[RgbFrame]]]]) -> None:
        while True:
            batch = [await queue.get()]
            frames = batch[0][0].n_frames
            while not queue.empty() and frames < self.max_batch_frames:
                batch.append(queue.get_nowait())
                frames += batch[-1][0].n_frames
            await self._render_batch(batch)

    async def _render_batch(self, batch: Sequence[tuple[RenderJob, asyncio.Future[list[RgbFrame]]]]) -> None:
        live = [(job, future) for job, future in batch if not future.done()]  # a cancelled waiter needs nothing
        if not live:
            return
        self.batches += 1
        self.jobs += len(live)
        try:
            results = await asyncio.to_thread(render_jobs, self.engine, [job for job, _ in live])
        except asyncio.CancelledError:  # the renderer is closing: nobody may wait forever
            for _, future in live:
                future.cancel()
            raise
        except Exception as error:  # the waiters get the engine's error, the worker carries on
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), frames in zip(live, results, strict=True):
            if not future.done():
                future.set_result(frames)


class VideoGenerator:
    """One session's speech → frames, through a (possibly shared) BatchRenderer."""

    def __init__(
        self,
        renderer: BatchRenderer | LipSyncEngine,
        avatar: AvatarFaceData,
        *,
        sample_rate: int = 16_000,
        fps: int = 25,
        frames_per_render: int = DEFAULT_FRAMES_PER_RENDER,
        idle_frames: bool = False,
        estimate_onsets: OnsetEstimator | None = None,
    ) -> None:
        """``estimate_onsets`` (the audio → viseme estimator's ``estimate``): pushed speech carries no phoneme
        timings, so with it each job's mouth articulates the visemes heard in its audio; without it the mouth
        follows the loudness."""
        if sample_rate % fps:
            raise ValueError(f"sample_rate {sample_rate} is not a whole number of samples per frame at {fps} fps")
        if frames_per_render < 1:
            raise ValueError(f"frames_per_render must be >= 1, got {frames_per_render}")
        self.renderer = renderer if isinstance(renderer, BatchRenderer) else BatchRenderer(renderer)
        self.avatar = avatar
        self.sample_rate = sample_rate
        self.fps = fps
        self.samples_per_frame = sample_rate // fps
        self.frames_per_render = frames_per_render
        self.idle_frames = idle_frames
        self.estimate_onsets = estimate_onsets
        # Audio after a job's last frame that the engine's output depends on (Wav2Lip's mel window
        # reaches 0.2 s ahead); a job waits for it, so its last frames are not drawn from a cut window.
        self.lookahead_frames = int(getattr(self.renderer.engine, "lookahead_frames", 0))
        self._pending: Pcm16 = np.zeros(0, np.int16)
        self._segment_ends: deque[int] = deque()  # sample offsets in _pending where an utterance ends
        self._ready: deque[AvatarFrame | AudioSegmentEnd] = deque()
        self._in_segment = False  # audio of an unfinished utterance was accepted since the last end
        self._generation = 0  # bumped by clear_buffer: renders started before it are thrown away
        self._next_index = 0
        # 16 kHz audio of the last frames handed to the queue: the next job's history
        self._history: npt.NDArray[np.float32] = np.zeros(0, np.float32)
        # the same, longer: what the estimator hears before a job (as the lip-sync core gives it)
        self._heard: npt.NDArray[np.float32] = np.zeros(0, np.float32)
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def pending_frames(self) -> int:
        """Frames queued but not yet handed out: buffered audio plus rendered frames."""
        buffered = -(-self._pending.shape[0] // self.samples_per_frame)
        return buffered + sum(isinstance(item, AvatarFrame) for item in self._ready)

    async def push_audio(self, audio: Pcm16 | AudioSegmentEnd) -> None:
        """Queue int16 mono speech at ``sample_rate``, or mark the end of the current utterance."""
        if self._closed:
            raise RuntimeError("the video generator is closed")
        if isinstance(audio, AudioSegmentEnd):
            self._segment_ends.append(self._pending.shape[0])
        else:
            samples = np.asarray(audio)
            if samples.dtype != np.int16 or samples.ndim != 1:
                raise ValueError(f"audio must be 1-D int16 PCM, got {samples.dtype} of shape {samples.shape}")
            self._pending = np.concatenate([self._pending, samples])
            self._in_segment = self._in_segment or samples.size > 0
        self._wake.set()

    def clear_buffer(self) -> None:
        """Interruption: drop every queued sample and every frame not yet handed out, now."""
        self._generation += 1  # a render in flight now will be thrown away when it returns
        unfinished = self._in_segment or self._pending.size > 0 or bool(self._segment_ends)
        if not (unfinished or any(isinstance(item, AvatarFrame) for item in self._ready)):
            return  # nothing of an utterance is queued; a finished utterance's end marker stays
        self._pending = np.zeros(0, np.int16)
        self._segment_ends.clear()
        self._ready.clear()
        self._in_segment = False
        # The dropped frames' audio was never heard; what came before them is not worth tracking back to.
        self._history = np.zeros(0, np.float32)
        self._heard = np.zeros(0, np.float32)
        self._ready.append(AudioSegmentEnd(interrupted=True))
        self._wake.set()

    async def aclose(self) -> None:
        """End the iteration (what is queued is dropped); a shared renderer stays open."""
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[AvatarFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[AvatarFrame | AudioSegmentEnd]:
        while not self._closed:
            if self._ready:
                yield self._ready.popleft()
            elif self._segment_ends and self._segment_ends[0] <= 0:
                self._finish_segment()
            elif self._renderable_frames() > 0:
                await self._render_next()
            elif self.idle_frames and not self._pending.size:
                await self._idle_or_wake()
            else:
                self._wake.clear()
                await self._wake.wait()

    def _renderable_frames(self) -> int:
        """Frames the next job may cover: up to an utterance's end (its tail padded), else a full job
        once the engine's look-ahead after it is buffered too."""
        if self._segment_ends:
            return -(-self._segment_ends[0] // self.samples_per_frame)
        whole = self._pending.shape[0] // self.samples_per_frame
        return self.frames_per_render if whole >= self.frames_per_render + self.lookahead_frames else 0

    async def _render_next(self) -> None:
        generation = self._generation
        n_frames = min(self._renderable_frames(), self.frames_per_render)
        take = n_frames * self.samples_per_frame
        # Only the utterance's own samples are used; its last frame is completed with silence, never
        # with the start of the next utterance.
        real = min(take, self._segment_ends[0]) if self._segment_ends else take
        pcm = self._pending[:real]
        if real < take:
            pcm = np.concatenate([pcm, np.zeros(take - real, np.int16)])
        # The engine also hears what follows the job (up to its look-ahead, never past the utterance).
        limit = self._segment_ends[0] if self._segment_ends else self._pending.shape[0]
        ahead = self._pending[take : max(take, min(limit, take + self.lookahead_frames * self.samples_per_frame))]
        frames = await self._render(np.concatenate([pcm, ahead]), n_frames, articulate=True)
        if generation != self._generation:
            return  # cleared while rendering: these frames belong to dropped speech
        self._consume(real)
        self._queue_frames(frames, pcm, idle=False)

    def _finish_segment(self) -> None:
        self._segment_ends.popleft()
        self._in_segment = bool(self._pending.size)
        self._ready.append(AudioSegmentEnd())

    async def _idle_or_wake(self) -> None:
        """With nothing to say, wait one frame's time for speech, else show an idle frame."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=1.0 / self.fps)
        except TimeoutError:
            generation = self._generation
            silence = np.zeros(self.samples_per_frame, np.int16)
            frames = await self._render(silence, 1)
            if generation == self._generation and not self._pending.size:
                self._queue_frames(frames, silence, idle=True)

    async def _render(self, pcm: Pcm16, n_frames: int, *, articulate: bool = False) -> list[RgbFrame]:
        audio = to_engine_audio(pcm, self.sample_rate)
        visemes = None
        if articulate and self.estimate_onsets is not None:
            visemes = tuple(estimate_in_context(self.estimate_onsets, self._heard, audio))
        job = RenderJob(self.avatar, audio, self._next_index, n_frames, visemes, history=self._history)
        return await self.renderer.render(job)

    def _consume(self, samples: int) -> None:
        self._pending = self._pending[samples:]
        self._segment_ends = deque(end - samples for end in self._segment_ends)

    def _queue_frames(self, frames: Sequence[RgbFrame], pcm: Pcm16, *, idle: bool) -> None:
        for k, image in enumerate(frames):
            index = self._next_index + k
            audio = pcm[k * self.samples_per_frame : (k + 1) * self.samples_per_frame]
            self._ready.append(AvatarFrame(image, audio, index, index * 1000 // self.fps, idle))
        self._next_index += len(frames)
        shown = to_engine_audio(pcm[: len(frames) * self.samples_per_frame], self.sample_rate)
        self._history = np.concatenate([self._history, shown])[-HISTORY_SAMPLES:]
        if not idle:
            self._heard = np.concatenate([self._heard, shown])[-ESTIMATE_CONTEXT_SAMPLES:]
