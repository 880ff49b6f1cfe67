"""Mouth opening vs speech loudness on rendered frames: a test helper for the loudness-driven mouth, not a target.

The lip-sync target is scripts/benchmark_lipsync_quality.py (``scripts/lipsync_quality``): lips re-read on the
output and scored against the TTS's phoneme timings. This envelope correlation rewards a mouth that never
closes (a half-open mouth scores high, one that closes on every m/b/p scores low), so nothing may aim at it;
the tests of the loudness-only fallback (and of the VideoGenerator, which drives it) use it to check that
mouth still follows the sound.

The mouth is measured the way a viewer sees it, from the pixels: dlib finds the face once in the first
frame and its 68-point predictor re-reads the lips in every frame inside that box. The inner-lip gap
(points 62 to 66) divided by the face box width is the opening; it is correlated (Pearson) with the
speech envelope, the per-frame RMS level in dB (loudness is heard, and a mouth moves for quiet
consonants, on a log scale), floored ``ENVELOPE_FLOOR_DB`` below the loudest frame so silence does not
weigh in at -120 dB.

A lag ``L`` pairs the mouth of frame ``k`` with the speech of frame ``k - L``: a positive best lag means
the video is late, a negative one that the mouth moves ahead of the sound.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import dlib
import numpy as np
import numpy.typing as npt

from processors.lipsync.audio_features import frame_rms_dbfs
from schemas.avatar import RgbFrame
from scripts.lipsync_quality.landmarks import landmark_model_path

ENVELOPE_FLOOR_DB = 50.0
MIN_OVERLAP_FRAMES = 3


@dataclass(frozen=True)
class QualityResult:
    """Correlation of mouth opening with the speech envelope: best over the lags tried, and at lag 0."""

    correlation: float
    best_lag_frames: int
    correlation_at_zero: float


@functools.cache
def _detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def _predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(landmark_model_path()))


def inner_lip_openings(frames: Sequence[RgbFrame]) -> npt.NDArray[np.float64]:
    """Per frame, the inner-lip gap (points 62-66) over the width of the face box found in frame 0."""
    if not frames:
        return np.zeros(0)
    box = _face_box(frames[0])
    predictor = _predictor()
    openings = np.empty(len(frames))
    for index, frame in enumerate(frames):
        shape = predictor(np.ascontiguousarray(frame), box)
        upper, lower = shape.part(62), shape.part(66)
        openings[index] = np.hypot(lower.x - upper.x, lower.y - upper.y) / max(box.width(), 1)
    return openings


def speech_envelope(
    audio: npt.ArrayLike, n_frames: int, *, fps: int = 25, rate: int = 16000
) -> npt.NDArray[np.float64]:
    """Per video frame, the RMS level in dB, floored ``ENVELOPE_FLOOR_DB`` below the loudest frame."""
    level = frame_rms_dbfs(audio, n_frames, rate // fps).astype(np.float64)
    if level.size == 0:
        return level
    return np.maximum(level, level.max() - ENVELOPE_FLOOR_DB)


def mouth_envelope_correlation(
    frames: Sequence[RgbFrame],
    audio: npt.ArrayLike,
    *,
    fps: int = 25,
    rate: int = 16000,
    max_lag_frames: int = 5,
) -> QualityResult:
    """Correlate the mouth opening seen in ``frames`` with the loudness of ``audio`` over lags
    ``-max_lag_frames..+max_lag_frames``; a constant opening or a constant envelope correlates 0."""
    openings = inner_lip_openings(frames)
    envelope = speech_envelope(audio, len(frames), fps=fps, rate=rate)
    by_lag = {lag: lagged_correlation(openings, envelope, lag) for lag in range(-max_lag_frames, max_lag_frames + 1)}
    # Ties go to the smallest |lag|, so a perfectly still mouth reports lag 0 rather than -max.
    best_lag = max(by_lag, key=lambda lag: (by_lag[lag], -abs(lag)))
    return QualityResult(
        correlation=by_lag[best_lag],
        best_lag_frames=best_lag,
        correlation_at_zero=by_lag[0],
    )


def lagged_correlation(mouth: npt.NDArray[np.float64], envelope: npt.NDArray[np.float64], lag: int) -> float:
    """Pearson correlation of ``mouth[k]`` with ``envelope[k - lag]`` over the frames both cover."""
    if lag >= 0:
        a, b = mouth[lag:], envelope[: envelope.shape[0] - lag]
    else:
        a, b = mouth[:lag], envelope[-lag:]
    if a.shape[0] < MIN_OVERLAP_FRAMES:
        return 0.0
    a_dev, b_dev = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a_dev * a_dev).sum() * (b_dev * b_dev).sum()))
    # Landmarks of identical frames agree to the bit, so "constant" is an exact zero spread, not a tolerance.
    if norm <= 1e-12:
        return 0.0
    return float((a_dev * b_dev).sum() / norm)


def _face_box(frame: RgbFrame) -> dlib.rectangle:
    rects, scores, _ = _detector().run(np.ascontiguousarray(frame), 1, 0.0)
    if not rects:
        raise ValueError("no face found in the first frame")
    return rects[int(np.argmax(scores))]
