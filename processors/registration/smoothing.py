"""Temporal smoothing of per-frame face boxes and landmarks, so a video avatar's face does not jitter."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_KERNEL_SIGMAS = 2.5  # the Gaussian window is cut where its weight falls below ~4% of the centre


def sigma_in_frames(sigma_s: float, fps: float | None, default_fps: float = 25.0) -> float:
    """Convert a smoothing width in seconds to frames of the analysed sequence."""
    return max(0.0, sigma_s) * (fps or default_fps)


def contiguous_runs(frame_indices: Sequence[int]) -> list[tuple[int, int]]:
    """Split positions into ``[start, stop)`` runs wherever the source frame indices skip (dropped frames).

    Smoothing across a dropped stretch would blend two unrelated head positions.
    """
    runs: list[tuple[int, int]] = []
    start = 0
    for pos in range(1, len(frame_indices) + 1):
        if pos == len(frame_indices) or frame_indices[pos] != frame_indices[pos - 1] + 1:
            runs.append((start, pos))
            start = pos
    return runs


def smooth_track(
    values: npt.ArrayLike, sigma_frames: float, runs: Sequence[tuple[int, int]] | None = None
) -> FloatArray:
    """Smooth ``values`` (frames first, any trailing shape) run by run; see ``smooth_run``."""
    series = np.asarray(values, dtype=np.float64)
    out = series.copy()
    for start, stop in runs if runs is not None else [(0, len(series))]:
        out[start:stop] = smooth_run(series[start:stop], sigma_frames)
    return out


def smooth_run(series: FloatArray, sigma_frames: float) -> FloatArray:
    """Median-of-3, then Gaussian-weighted local linear regression, centred on every frame.

    The median removes one-frame landmark glitches before they can smear into neighbours. The local
    line (rather than a plain moving average) has no lag, follows steady head motion exactly, and
    still smooths the first and last frames, where a centred average would have to shrink to nothing.
    """
    if sigma_frames <= 0 or len(series) < 3:
        return series.copy()
    return _local_linear(_median3(series), sigma_frames)


def _median3(series: FloatArray) -> FloatArray:
    out = series.copy()
    out[1:-1] = np.median(np.stack([series[:-2], series[1:-1], series[2:]]), axis=0)
    return out


def _local_linear(series: FloatArray, sigma: float) -> FloatArray:
    n = len(series)
    half = max(1, math.ceil(_KERNEL_SIGMAS * sigma))
    extra = (1,) * (series.ndim - 1)  # broadcast per-frame sums over the trailing value axes
    s0, s1, s2 = np.zeros(n), np.zeros(n), np.zeros(n)
    t0, t1 = np.zeros_like(series), np.zeros_like(series)
    index = np.arange(n)
    for offset in range(-half, half + 1):
        valid = (index + offset >= 0) & (index + offset < n)
        rows = index[valid]
        weight = math.exp(-0.5 * (offset / sigma) ** 2)
        neighbour = series[rows + offset]
        s0[rows] += weight
        s1[rows] += weight * offset
        s2[rows] += weight * offset * offset
        t0[rows] += weight * neighbour
        t1[rows] += weight * offset * neighbour
    # The fitted line's value at offset 0, from the weighted normal equations.
    det = s0 * s2 - s1 * s1
    safe = np.where(det > 1e-9, det, 1.0)
    fitted = (s2.reshape(-1, *extra) * t0 - s1.reshape(-1, *extra) * t1) / safe.reshape(-1, *extra)
    fallback = t0 / s0.reshape(-1, *extra)
    return np.where((det > 1e-9).reshape(-1, *extra), fitted, fallback)
