"""Audio-video lag: the shift that best aligns the re-read mouth opening with the opening the phonemes imply.

The truth curve is built from the timings alone: each phone holds a target opening (open vowels 1,
closures 0, see ``TRUTH_OPENING``), pauses are 0, and a ``SMOOTH_S`` Hann window stands for the
articulators' travel (no mouth jumps between shapes). It is sampled every millisecond, so a candidate lag
``L`` averages the truth over each frame's interval moved by ``L``: the lag is found at 1 ms steps,
below the 40 ms frame, then refined by a parabola through the best step and its neighbours.

Sign: a positive lag means the mouth moves after the sound (the picture is late).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scripts.lipsync_quality.phonetics import Phone, Phonetic

FloatArray = npt.NDArray[np.float64]

TRUTH_RATE = 1000  # samples per second of the truth curve
SMOOTH_S = 0.06
MAX_LAG_S = 0.25
LAG_STEP_S = 0.005
MIN_OVERLAP_FRAMES = 10

TRUTH_OPENING: dict[Phonetic, float] = {
    Phonetic.OPEN_VOWEL: 1.0,
    Phonetic.MID_VOWEL: 0.6,
    Phonetic.ROUNDED: 0.45,
    Phonetic.SPREAD: 0.35,
    Phonetic.CONSONANT: 0.2,
    Phonetic.OTHER: 0.2,
    Phonetic.LABIODENTAL: 0.05,
    Phonetic.BILABIAL: 0.0,
}


@dataclass(frozen=True)
class LagCurve:
    """Pearson correlation of the re-read opening with the truth at each candidate lag (seconds)."""

    lags: FloatArray
    correlation: FloatArray
    frames: int

    def best(self) -> tuple[float, float]:
        """(lag in seconds, correlation) at the peak, the lag refined between steps by a parabola."""
        return best_lag(self.lags, self.correlation)


def truth_curve(phones: Sequence[Phone], duration: float) -> FloatArray:
    """The opening the phones imply, every millisecond over ``duration`` seconds (0 outside phones)."""
    count = max(int(np.ceil(duration * TRUTH_RATE)), 1)
    curve = np.zeros(count)
    for phone in phones:
        start, end = (round(t * TRUTH_RATE) for t in (phone.start, phone.end))
        curve[max(start, 0) : max(min(end, count), 0)] = TRUTH_OPENING[phone.kind]
    width = int(SMOOTH_S * TRUTH_RATE)
    window = np.hanning(width + 2)[1:-1]
    return np.convolve(curve, window / window.sum(), mode="same")


def frame_truth(curve: FloatArray, n_frames: int, fps: float, lag: float) -> FloatArray:
    """The truth averaged over each video frame's interval moved ``lag`` seconds back (picture late)."""
    cumulative = np.concatenate([[0.0], np.cumsum(curve)])
    edges = (np.arange(n_frames + 1) / fps - lag) * TRUTH_RATE
    clipped = np.clip(edges, 0, curve.shape[0])
    # Interpolating the running sum gives exact sub-millisecond interval means; outside the curve it is 0.
    sums = np.interp(clipped, np.arange(cumulative.shape[0]), cumulative)
    spans = np.maximum(np.diff(edges), 1e-9)
    return np.diff(sums) / spans


def lag_curve(opening: FloatArray, phones: Sequence[Phone], duration: float, fps: float) -> LagCurve:
    """Correlation of ``opening`` with the phones' truth at lags -MAX_LAG_S..+MAX_LAG_S."""
    curve = truth_curve(phones, duration)
    steps = round(MAX_LAG_S / LAG_STEP_S)
    lags = (np.arange(-steps, steps + 1) * LAG_STEP_S).astype(np.float64)
    values = np.array([pearson(opening, frame_truth(curve, opening.shape[0], fps, lag)) for lag in lags])
    return LagCurve(lags=lags, correlation=values, frames=int(opening.shape[0]))


def pearson(a: FloatArray, b: FloatArray) -> float:
    """Correlation of two series; 0 when either is constant (a mouth that never moves aligns with nothing)."""
    if a.shape[0] < MIN_OVERLAP_FRAMES:
        return 0.0
    a_dev, b_dev = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a_dev @ a_dev) * (b_dev @ b_dev)))
    return float(a_dev @ b_dev / norm) if norm > 1e-12 else 0.0


def best_lag(lags: FloatArray, correlation: FloatArray) -> tuple[float, float]:
    index = int(np.argmax(correlation))
    if 0 < index < lags.shape[0] - 1:
        left, centre, right = correlation[index - 1 : index + 2]
        bend = left - 2 * centre + right
        if bend < 0:
            offset = 0.5 * (left - right) / bend
            return float(lags[index] + offset * (lags[1] - lags[0])), float(centre - 0.25 * (left - right) * offset)
    return float(lags[index]), float(correlation[index])


def pooled(curves: Sequence[LagCurve]) -> LagCurve:
    """The frame-weighted mean correlation of several clips at each lag (one figure for a table)."""
    if not curves:
        return LagCurve(np.zeros(1), np.zeros(1), 0)
    weights = np.array([curve.frames for curve in curves], dtype=np.float64)
    stacked = np.stack([curve.correlation for curve in curves])
    return LagCurve(curves[0].lags, weights @ stacked / max(weights.sum(), 1.0), int(weights.sum()))
