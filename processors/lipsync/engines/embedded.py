"""The default lip-sync engine: articulated mouth warp over the cached landmarks, no model weights needed.

Per job: the viseme onsets (from the TTS's phoneme timings, or estimated from the audio) become per-frame
mouth poses (``articulation``: opening, width, lips pressed, lower lip tucked), each frame picks its avatar
frame (ping-pong through a video, the one image of a photo plus idle sway and blinks), and the precomputed
warp of that frame (``mouth_warp``) is applied. A job without onsets, or an engine built with
``articulation=False``, falls back to following the loudness alone (``audio_features``; the engine before
articulation, kept as the baseline the quality benchmark compares against).

Continuity across the jobs of one request needs no state in the engine: the avatar frame, the sway and
the blinks are functions of the request-wide frame index ``first_frame + k``, and a frame's pose is a
closed-form function of the onsets around it and of its own audio. So any job, including a redelivered
one, renders the same on any worker, and a request rendered in chunks gives the same frames as in one job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from infra.bounded_cache import BoundedCache
from processors.lipsync.articulation import Articulation, articulate
from processors.lipsync.audio_features import frame_rms_dbfs, mouth_track
from processors.lipsync.engines.base import AUDIO_RATE, FPS, SAMPLES_PER_FRAME, RenderJob
from processors.lipsync.mouth_warp import Pose, WarpPlan, WarpSettings, build_plan, fit_to_frame, warp_frame
from schemas.avatar import AvatarFaceData, RgbFrame

SWAY_PX = 0.6  # head sway amplitude of a still photo; with the second sway and breathing, about a pixel
BREATH_PX = 0.45
BLINK_PERIOD_FRAMES = 100  # one blink in each 4 s slot, at a pseudo-random place in the slot
BLINK_EARLIEST = 12  # no blink in a slot's first frames, so a request never opens with one
BLINK_SPREAD = 70
BLINK_PROFILE = (0.35, 0.8, 1.0, 0.85, 0.5, 0.2)  # closes fast, opens a little slower (~240 ms)

# Warp plans kept, by memory: the astronaut's 512x512 photo plan is ~1 MB (head region, for idle motion),
# a video frame's ~0.3 MB (mouth region only), so this holds hundreds of photos or a few long videos.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

PlanKey = tuple[str, int, int, tuple[int, ...], bool, bytes]


def pingpong_index(frame_number: int, n_source_frames: int) -> int:
    """The avatar frame to show at request frame ``frame_number``: forward, then backward, repeating
    (0 1 2 3 2 1 0 1 ...), so a video avatar never jumps from its last frame back to its first."""
    if n_source_frames <= 1:
        return 0
    period = 2 * (n_source_frames - 1)
    phase = frame_number % period
    return phase if phase < n_source_frames else period - phase


def idle_pose(frame_number: int) -> tuple[tuple[float, float], float]:
    """Head sway (x, y in pixels) and blink (0..1) of a still photo at request frame ``frame_number``.

    Incommensurate periods keep the sway from looking like a metronome; it is a pure function of the
    frame index, so consecutive jobs continue it seamlessly.
    """
    seconds = frame_number / FPS
    sway_x = SWAY_PX * math.sin(2 * math.pi * seconds / 3.7) + 0.2 * math.sin(2 * math.pi * seconds / 1.9 + 1.3)
    sway_y = BREATH_PX * math.sin(2 * math.pi * seconds / 4.6 + 0.7)
    return (sway_x, sway_y), _blink_amount(frame_number)


def _blink_amount(frame_number: int) -> float:
    slot, position = divmod(frame_number, BLINK_PERIOD_FRAMES)
    # Knuth's multiplicative hash: a cheap, fixed pseudo-random start for each slot.
    start = BLINK_EARLIEST + ((slot + 1) * 2654435761 % 2**32) % BLINK_SPREAD
    offset = position - start
    return BLINK_PROFILE[offset] if 0 <= offset < len(BLINK_PROFILE) else 0.0


class EmbeddedEngine:
    """Audio-driven mouth animation over the cached landmarks; thread-safe and shared by all sessions."""

    name = "embedded"

    def __init__(
        self,
        settings: WarpSettings | None = None,
        *,
        idle_motion: bool = True,
        articulation: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self._settings = settings or WarpSettings()
        self._idle_motion = idle_motion
        self._articulation = articulation
        self._plans: BoundedCache[PlanKey, WarpPlan] = BoundedCache(cache_bytes)

    def prepare(self, avatar: AvatarFaceData) -> None:
        """Precompute the warp of every frame now (e.g. when a session selects the avatar), so the first
        pass through a video avatar renders as fast as the rest."""
        for index in range(len(avatar.frames)):
            self._plan(avatar, index)

    def render(self, job: RenderJob) -> list[RgbFrame]:
        """Exactly ``job.n_frames`` new RGB frames of the avatar's size, lips following ``job.audio``."""
        if job.n_frames < 0:
            raise ValueError(f"n_frames must be >= 0, got {job.n_frames}")
        if not job.avatar.frames:
            raise ValueError(f"avatar {job.avatar.avatar_id!r} has no frames")
        track = self.track(job)
        articulated = self.articulates(job)
        frames: list[RgbFrame] = []
        for k in range(job.n_frames):
            frame_number = job.first_frame + k
            index = pingpong_index(frame_number, len(job.avatar.frames))
            mouth = Pose(opening=float(track.opening[k]), width=float(track.width[k]), press=float(track.press[k]),
                         tuck=float(track.tuck[k]))
            plan = self._plan(job.avatar, index)
            if articulated:
                mouth = fit_to_frame(mouth, plan)
            frames.append(warp_frame(job.avatar.frames[index].image, plan, self._pose(job.avatar, frame_number, mouth)))
        return frames

    def articulates(self, job: RenderJob) -> bool:
        """Whether the job's mouth follows its visemes (else its loudness, the engine before articulation)."""
        return self._articulation and job.visemes is not None

    def track(self, job: RenderJob) -> Articulation:
        """The mouth pose parameters of each of the job's frames."""
        if self.articulates(job):
            assert job.visemes is not None
            middles = (np.arange(job.n_frames) + 0.5) / FPS
            return articulate(job.visemes, middles, frame_rms_dbfs(job.audio, job.n_frames, SAMPLES_PER_FRAME))
        loudness = mouth_track(job.audio, job.n_frames, rate=AUDIO_RATE, fps=FPS)
        zeros = np.zeros(job.n_frames, np.float32)
        return Articulation(opening=loudness.opening, width=loudness.width, press=zeros, tuck=zeros)

    def render_many(self, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
        """Each job's frames; a warp has nothing to batch, so this is a loop."""
        return [self.render(job) for job in jobs]

    def _pose(self, avatar: AvatarFaceData, frame_number: int, mouth: Pose) -> Pose:
        # A video brings its own motion; idle motion on top would make the head swim.
        if not (self._idle_motion and avatar.is_still):
            return mouth
        sway, blink = idle_pose(frame_number)
        return replace(mouth, sway=sway, blink=blink)

    def _plan(self, avatar: AvatarFaceData, index: int) -> WarpPlan:
        frame = avatar.frames[index]
        idle = self._idle_motion and avatar.is_still
        # The landmark bytes make a re-registered avatar (same id, new face data) miss instead of misfit.
        key: PlanKey = (
            avatar.avatar_id,
            index,
            avatar.version,
            tuple(frame.image.shape),
            idle,
            frame.landmarks.tobytes(),
        )
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        # Built outside the cache's lock: two threads racing on one frame only build it twice, nobody waits.
        plan = build_plan(frame.image, frame.landmarks, self._settings, idle_motion=idle)
        self._plans.put(key, plan, size=plan.nbytes)
        return plan
