"""Turns viseme onsets into per-frame mouth poses the way animators time them: coarticulated, closures held.

Three layers, each a closed-form function of the onsets and the frame's time (no state, no sampling grid),
so any chunk of a request renders the same poses as the whole request at once:

* **Coarticulation.** Every viseme holds its shape from its onset to the next one. A frame's pose is the
  average of those shapes seen through a raised-cosine window of ±``BLEND_HALF_S`` around the frame's
  time, each weighted by its dominance: a weak ``h`` or ``k`` takes the shape of the vowel beside it, a
  vowel reaches its own. The window makes every transition take 40–80 ms.
* **Closures.** Blending alone would leave a 40 ms "p" half open. A bilabial's lips are therefore shut
  from ``CLOSE_LEAD_S`` before its onset until just after its burst (the next onset), with the closing
  movement starting ``CLOSE_RAMP_S`` earlier still: closure begins 40–120 ms before the burst, as film
  animators time it, and holds at least ~70 ms. Labiodentals (f, v) get the same treatment for the lower
  lip's tuck.
* **Loudness.** The audio only scales the opening a little (±20 %): the shape says how open, the sound
  says how emphatic. The level is taken against a fixed reference so it needs no context either.

The mouth leads the sound by ``LEAD_S`` (lips move before the sound they make) and rests closed in pauses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processors.lipsync.visemes import SHAPES, Viseme

FloatArray = npt.NDArray[np.float32]
VisemeOnsets = tuple[tuple[float, Viseme], ...]

BLEND_HALF_S = 0.06
LEAD_S = 0.015
CLOSE_LEAD_S = 0.0  # lips already shut this long before a bilabial's onset ...
CLOSE_RAMP_S = 0.05  # ... after a closing movement this long
OPEN_DELAY_S = 0.015  # they stay shut this long after the burst ...
OPEN_RAMP_S = 0.04  # ... then part over this long
TUCK_LEAD_S = 0.015
TUCK_RAMP_S = 0.05
TUCK_RELEASE_S = 0.04
REFERENCE_DBFS = -20.0  # the level the TTS levels speech to (processors/tts/audio.py)
LOUDNESS_SPAN_DB = 30.0
LOUDNESS_RANGE = (0.8, 1.2)  # the opening is scaled between these, quiet to loud
QUANTUM = 1e-4  # poses are rounded to this, so float noise between a chunked and a whole render cannot differ

_CHANNELS = ("opening", "width", "press", "tuck")
_TARGETS = {viseme: np.array([getattr(SHAPES[viseme], name) for name in _CHANNELS], dtype=np.float64)
            for viseme in Viseme}


@dataclass(frozen=True)
class Articulation:
    """Per-frame pose parameters (see ``mouth_warp.Pose``)."""

    opening: FloatArray
    width: FloatArray
    press: FloatArray
    tuck: FloatArray

    def __len__(self) -> int:
        return int(self.opening.shape[0])


@dataclass(frozen=True)
class _Spans:
    starts: npt.NDArray[np.float64]
    ends: npt.NDArray[np.float64]
    visemes: tuple[Viseme, ...]


def articulate(onsets: VisemeOnsets, frame_times: npt.ArrayLike,
               loudness: npt.ArrayLike | None = None) -> Articulation:
    """The pose of each frame whose middle is at ``frame_times`` (seconds on the onsets' clock).

    ``loudness``: the frame's speech level in dBFS, to scale the opening; None leaves it unscaled.
    """
    times = np.asarray(frame_times, dtype=np.float64) + LEAD_S
    spans = _spans(onsets)
    blended = _blend(spans, times)
    closure = _hold(spans, times, Viseme.CLOSED, CLOSE_LEAD_S, CLOSE_RAMP_S, OPEN_DELAY_S, OPEN_RAMP_S)
    tuck_hold = _hold(spans, times, Viseme.LABIODENTAL, TUCK_LEAD_S, TUCK_RAMP_S, 0.0, TUCK_RELEASE_S)
    opening = blended[:, 0] * (1.0 - closure) * (1.0 - 0.7 * tuck_hold) * _loudness_scale(loudness, len(times))
    return Articulation(
        opening=_quantise(np.clip(opening, 0.0, 1.0)),
        width=_quantise(blended[:, 1] * (1.0 - 0.5 * closure)),
        press=_quantise(np.maximum(blended[:, 2], closure)),
        tuck=_quantise(np.maximum(blended[:, 3], tuck_hold) * (1.0 - closure)),
    )


def _spans(onsets: VisemeOnsets) -> _Spans:
    """Each viseme from its onset to the next; rest before the first and, if the last is not rest, after
    a last shape of ordinary length (the onsets of a job always end with the pause after the speech)."""
    starts = [-np.inf, *(float(time) for time, _ in onsets)]
    visemes = (Viseme.REST, *(viseme for _, viseme in onsets))
    ends = [*starts[1:], np.inf]
    if visemes[-1] is not Viseme.REST:
        ends[-1] = starts[-1] + 0.1
        starts.append(ends[-1])
        ends.append(np.inf)
        visemes = (*visemes, Viseme.REST)
    return _Spans(np.asarray(starts), np.asarray(ends), visemes)


def _window_cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Share of a raised-cosine window of half-width BLEND_HALF_S that lies before ``x`` (0..1)."""
    z = np.clip(x / BLEND_HALF_S, -1.0, 1.0)
    return np.asarray(0.5 * (z + 1.0 + np.sin(np.pi * z) / np.pi))


def _blend(spans: _Spans, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(frames, channels): each span's shape weighted by its dominance and its share of the window."""
    with np.errstate(invalid="ignore"):
        share = _window_cdf(spans.ends[None, :] - times[:, None]) - _window_cdf(spans.starts[None, :] - times[:, None])
    dominance = np.array([SHAPES[viseme].dominance for viseme in spans.visemes])
    weights = np.nan_to_num(share) * dominance[None, :]
    targets = np.stack([_TARGETS[viseme] for viseme in spans.visemes])
    total = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    return np.asarray(weights @ targets / total)


def _hold(spans: _Spans, times: npt.NDArray[np.float64], viseme: Viseme, lead: float, ramp_in: float,
          delay: float, ramp_out: float) -> npt.NDArray[np.float64]:
    """1 while a ``viseme`` span holds (from ``lead`` before its onset to ``delay`` after its end), easing
    in over ``ramp_in`` before and out over ``ramp_out`` after; the largest over all such spans."""
    held = np.zeros_like(times)
    for start, end, current in zip(spans.starts, spans.ends, spans.visemes, strict=True):
        if current is not viseme:
            continue
        rise = _smoothstep((times - (start - lead - ramp_in)) / ramp_in)
        fall = 1.0 - _smoothstep((times - (end + delay)) / ramp_out)
        held = np.maximum(held, np.minimum(rise, fall))
    return held


def _loudness_scale(loudness: npt.ArrayLike | None, n: int) -> npt.NDArray[np.float64]:
    if loudness is None:
        return np.ones(n)
    level = np.asarray(loudness, dtype=np.float64)
    loud = np.clip((level - (REFERENCE_DBFS - LOUDNESS_SPAN_DB)) / LOUDNESS_SPAN_DB, 0.0, 1.0)
    low, high = LOUDNESS_RANGE
    return np.asarray(low + (high - low) * loud)


def _smoothstep(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    t = np.clip(t, 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t))


def _quantise(values: npt.NDArray[np.float64]) -> FloatArray:
    return (np.round(values / QUANTUM) * QUANTUM).astype(np.float32)
