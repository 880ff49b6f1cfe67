"""The one interface every lip-sync engine implements: speech audio + cached face data in, frames out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from processors.lipsync.visemes import Viseme
from schemas.avatar import AvatarFaceData, RgbFrame

VisemeMarks = tuple[tuple[float, Viseme], ...]  # (onset in seconds on a job's clock, viseme), in time order

FPS = 25
AUDIO_RATE = 16_000
SAMPLES_PER_FRAME = AUDIO_RATE // FPS  # 640: audio and video share one clock, frame i starts at sample 640*i


@dataclass(frozen=True)
class RenderJob:
    """Render ``n_frames`` consecutive frames of one request.

    ``audio`` is float32 mono at 16 kHz and starts at the first frame's time: frame k of the job shows
    samples ``[k*640, (k+1)*640)``; it may run past the last frame (look-ahead context for engines that
    declare ``lookahead_frames``). ``first_frame`` is the frame's index within the whole request, so an
    engine can keep looping a video avatar and its idle motion continuous across jobs.

    ``visemes`` are the onsets of the mouth shapes the speech is said with, in seconds on the job's clock
    (0 is the start of its first frame), each shape lasting until the next onset. They come from the TTS's
    own phoneme timings or, for speech that has none, from the audio estimator; they may start before 0
    and run past the last frame (context, so chunked and whole renders agree). ``None``: no articulation
    is known and an engine that needs it works from the audio alone.

    ``history`` is the request's 16 kHz audio just before the first frame (the last ~0.5 s; empty at the
    request's start), so engines whose features reach back (Wav2Lip's mel) compute them on the request's
    timeline and a request rendered in chunks gets the features of one whole render. A caller that does
    not know it leaves it empty; the engine then takes the time before ``audio`` as silence (at
    ``first_frame`` 0 there is none).
    """

    avatar: AvatarFaceData
    audio: npt.NDArray[np.float32]
    first_frame: int
    n_frames: int
    visemes: VisemeMarks | None = None
    history: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))


class LipSyncEngine(Protocol):
    """A warm lip-sync model shared by all sessions."""

    name: str

    def render(self, job: RenderJob) -> list[RgbFrame]:
        """Return exactly ``job.n_frames`` RGB frames of the avatar's frame size."""
        ...


@runtime_checkable
class BatchLipSyncEngine(LipSyncEngine, Protocol):
    """Optional capability: render the jobs of several sessions in one pass (one inference batch)."""

    def render_many(self, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
        """The frames of each job, in the order of ``jobs``."""
        ...


def render_jobs(engine: LipSyncEngine, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
    """Every job's frames: in one batch where the engine can, one job after another otherwise."""
    if isinstance(engine, BatchLipSyncEngine):
        return engine.render_many(jobs)
    return [engine.render(job) for job in jobs]
