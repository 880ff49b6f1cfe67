"""The registration entry point: an uploaded file's bytes in, cached face data and a quality report out."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from processors.registration.errors import RegistrationError
from processors.registration.faces import DlibFaceAnalyser, FaceAnalyser, FaceTracker, TrackResult, to_int_box
from processors.registration.media import DecodedMedia, MediaKind, decode_media
from processors.registration.quality import (
    QualityReport,
    QualityThresholds,
    detection_checks,
    evaluate,
    make_report,
    measure_face,
    raise_for_errors,
)
from processors.registration.smoothing import contiguous_runs, sigma_in_frames, smooth_track
from schemas.avatar import AvatarFaceData, FaceFrame

ProgressCallback = Callable[[float, str], None]

# Share of the progress bar each stage takes; decoding a video costs about as much as analysing it.
_DECODE_END, _ANALYSE_END = 0.4, 0.9
_EXTENSION_KINDS: dict[str, set[str]] = {
    ".jpg": {"jpeg"}, ".jpeg": {"jpeg"}, ".png": {"png"}, ".gif": {"gif"},
    # MP4 and QuickTime share one container family and are often named after each other.
    ".mp4": {"mp4", "mov"}, ".m4v": {"mp4", "mov"}, ".mov": {"mp4", "mov"}, ".webm": {"webm"},
}


@dataclass(frozen=True)
class RegistrationLimits:
    """What an upload may cost, and how thoroughly a clip is analysed."""

    max_bytes: int = 200_000_000
    max_pixels: int = 40_000_000  # checked from the header, before any pixel is decoded
    max_side_out: int = 720
    max_frames: int = 300
    video_stride: int | None = None  # None: the smallest stride keeping at most max_frames frames
    max_duration_s: float = 30.0
    detection_stride: int | None = None  # None: detect on every frame if it fits detection_budget_s
    detection_budget_s: float = 2.0
    smoothing_sigma_s: float = 0.06  # ~1.5 frames at 25 fps: removes landmark jitter, keeps head motion
    quality_sample_frames: int = 16  # quality is measured on this many evenly spaced frames of a clip
    quality: QualityThresholds = field(default_factory=QualityThresholds)


@dataclass(frozen=True)
class RegistrationResult:
    """A registered avatar's face data with how it was obtained.

    ``source_fps`` is the file's frame rate; ``face_data.source_fps`` is the rate of the frames kept
    (the file's rate divided by ``stride``), which is what playback needs.
    """

    face_data: AvatarFaceData
    report: QualityReport
    media_kind: Literal["image", "gif", "video"]
    source_width: int
    source_height: int
    frame_count: int
    source_fps: float | None
    analysis_ms: float
    stride: int = 1
    frames_dropped: int = 0
    detector: str = ""


def analyse_upload(
    data: bytes,
    *,
    avatar_id: str,
    analyser: FaceAnalyser | None = None,
    limits: RegistrationLimits = RegistrationLimits(),
    progress: ProgressCallback | None = None,
    filename: str | None = None,
) -> RegistrationResult:
    """Decode an upload, find and track its one face, check quality and return the face data to cache.

    ``filename`` is only used to warn when the name disagrees with the content; the content decides.
    Raises RegistrationError (with ``report`` set once faces were analysed) when the upload is refused.
    """
    started = time.perf_counter()
    stages = _Stages(progress)
    if not data:
        raise RegistrationError("empty_file", "The uploaded file is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise RegistrationError(
            "file_too_large", f"The file has {len(data) / 1e6:.1f} MB; at most {limits.max_bytes / 1e6:.0f} MB."
        )
    media = decode_media(
        data,
        max_pixels=limits.max_pixels,
        max_side=limits.max_side_out,
        max_frames=limits.max_frames,
        stride=limits.video_stride,
        max_duration_s=limits.max_duration_s,
        progress=stages.span(0.0, _DECODE_END, "decode"),
    )
    stages.report(_DECODE_END, "decode")
    analyser = analyser or default_analyser()
    track = _track(media, analyser, limits, stages)
    stages.report(_ANALYSE_END, "analyse")
    warnings = _name_warnings(filename, media.kind)
    face_data, report = _assess(media, track, limits, warnings, avatar_id)
    stages.report(1.0, "done")
    return RegistrationResult(
        face_data=face_data,
        report=report,
        media_kind=media.category,
        source_width=media.source_width,
        source_height=media.source_height,
        frame_count=len(face_data.frames),
        source_fps=media.source_fps,
        analysis_ms=(time.perf_counter() - started) * 1000,
        stride=media.stride,
        frames_dropped=track.lost,
        detector=analyser.name,
    )


_default_lock = threading.Lock()
_default: list[FaceAnalyser] = []


def default_analyser() -> FaceAnalyser:
    """The process-wide dlib analyser; its models take about a second to load, so they load once."""
    with _default_lock:
        if not _default:
            _default.append(DlibFaceAnalyser())
        return _default[0]


def _track(media: DecodedMedia, analyser: FaceAnalyser, limits: RegistrationLimits, stages: _Stages) -> TrackResult:
    quality = limits.quality
    tracker = FaceTracker(
        analyser,
        dominance=quality.face_dominance,
        detect_every=limits.detection_stride,
        detection_budget_s=limits.detection_budget_s,
        max_lost=int(quality.max_lost_fraction * len(media.frames)),
    )
    return tracker.track(media.frames, progress=stages.span(_DECODE_END, _ANALYSE_END, "analyse"))


def _assess(
    media: DecodedMedia, track: TrackResult, limits: RegistrationLimits, warnings: list[str], avatar_id: str
) -> tuple[AvatarFaceData, QualityReport]:
    """Refuse on detection problems first (nothing else can be measured), then on quality."""
    quality = limits.quality
    checks = detection_checks(
        found=track.found,
        total=len(media.frames),
        ambiguous=track.ambiguous,
        max_faces=track.max_faces,
        frames_with_others=len(track.other_face_frames),
        max_lost_fraction=quality.max_lost_fraction,
    )
    raise_for_errors(make_report(checks, warnings))
    frames = _face_frames(media, track, limits)
    sample = _evenly_spaced(frames, limits.quality_sample_frames)
    metrics = [measure_face(f.image, f.landmarks) for f in sample]
    report = make_report([*checks, *evaluate(metrics, quality, frames=len(frames))], warnings)
    raise_for_errors(report)
    still = media.category == "image"
    face_data = AvatarFaceData(avatar_id=avatar_id, frames=tuple(frames), source_fps=None if still else media.frame_fps)
    return face_data, report


def _face_frames(media: DecodedMedia, track: TrackResult, limits: RegistrationLimits) -> list[FaceFrame]:
    """Keep the frames with a face, smoothing boxes and landmarks over each unbroken run of frames."""
    kept = [(i, obs) for i, obs in enumerate(track.observations) if obs is not None]
    runs = contiguous_runs([i for i, _ in kept])
    sigma = sigma_in_frames(limits.smoothing_sigma_s, media.frame_fps)
    landmarks = smooth_track(np.stack([obs.landmarks for _, obs in kept]), sigma, runs).astype(np.float32)
    boxes = smooth_track(np.array([obs.box for _, obs in kept]), sigma, runs)
    height, width = media.frames[0].shape[:2]
    return [
        FaceFrame(image=media.frames[i], box=_clip_box(boxes[k], width, height), landmarks=landmarks[k])
        for k, (i, _) in enumerate(kept)
    ]


def _clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = to_int_box(box)
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def _evenly_spaced(frames: Sequence[FaceFrame], count: int) -> list[FaceFrame]:
    if len(frames) <= count:
        return list(frames)
    return [frames[round(i)] for i in np.linspace(0, len(frames) - 1, max(1, count))]


def _name_warnings(filename: str | None, kind: MediaKind) -> list[str]:
    if not filename:
        return []
    extension = os.path.splitext(filename)[1].lower()
    expected = _EXTENSION_KINDS.get(extension)
    if expected is None or kind in expected:
        return []
    return [f"The file is named {filename!r} but contains {kind.upper()} data; it was read as {kind.upper()}."]


class _Stages:
    """Maps each stage's own 0..1 progress onto one monotonic 0..1 bar for the caller."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = 0.0

    def span(self, start: float, end: float, stage: str) -> Callable[[float], None] | None:
        if self._callback is None:
            return None
        return lambda fraction: self.report(start + (end - start) * min(max(fraction, 0.0), 1.0), stage)

    def report(self, fraction: float, stage: str) -> None:
        if self._callback is not None:
            self._last = max(self._last, fraction)
            self._callback(self._last, stage)
