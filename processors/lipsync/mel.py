"""Wav2Lip's audio front end in numpy: the normalised 80-bin mel spectrogram and its per-frame 80x16 windows.

Wav2Lip was trained on mel spectrograms computed with the Tacotron-style hparams of its ``audio.py``:
16 kHz audio, pre-emphasis 0.97, a centred STFT (reflect padding, periodic Hann window) with n_fft 800,
hop 200 and window 800, an 80-band Slaney mel filterbank (Slaney's mel scale and area normalisation)
from 55 to 7600 Hz applied to the magnitude, 20*log10 with a floor at -100 dB, minus the 20 dB reference
level, then mapped symmetrically from [-100, 0] dB to [-4, 4] and clipped. The model only knows inputs
made exactly this way, so each step here follows those hparams.

There are 80 mel columns per second (hop 200 at 16 kHz); video frame ``i`` at ``fps`` takes the 16
columns from ``int(80 * i / fps)``, the last window clamped to the spectrogram's end, as in the reference
inference script.

A request rendered in chunks must see the windows of the whole request, so ``timeline_windows`` computes
only the columns a chunk's frames need, on the request's timeline: column ``c`` is centred on request
sample ``200 c``, pre-emphasis runs on from the audio before the chunk (``history``) and the reflect
padding happens only at the request's start and at the end of the audio given. Both paths build each
column from the same samples through operations that treat every column on its own (per-row FFT, the
filterbank as elementwise sums in a fixed order, never a BLAS product whose blocking depends on how many
columns there are), so a chunk's windows are bit-identical to the whole request's.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_STEP = 16  # mel columns per window: 0.2 s of audio
MEL_COLUMNS_PER_SECOND = SAMPLE_RATE // HOP  # 80

# Slaney's mel scale: linear (3 bins per 200 Hz) below 1 kHz, logarithmic (27 bins per 6.4x) above.
_LINEAR_HZ_PER_MEL = 200.0 / 3
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL  # 15
_LOG_STEP = np.log(6.4) / 27.0

FloatArray = npt.NDArray[np.float32]


def hz_to_mel(hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Slaney's mel scale (the Auditory Toolbox's, and librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, logarithmic, linear)


def mel_to_hz(mel: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mel >= _BREAK_MEL, logarithmic, linear)


@functools.cache
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> FloatArray:
    """(n_mels, n_fft//2 + 1) triangular filters, evenly spaced in mel, each scaled to unit area in Hz/2.

    Filter m rises from edge m to edge m+1 and falls to edge m+2 (edges: n_mels + 2 points evenly spaced
    in mel between fmin and fmax); the Slaney normalisation divides it by half its width in Hz so wide
    high-frequency filters do not outweigh narrow low ones.
    """
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    area = 2.0 / (edges[2:] - edges[:-2])
    filters = triangles * area[:, None]
    filters.flags.writeable = False
    return filters.astype(np.float32)


@functools.cache
def _periodic_hann(length: int) -> npt.NDArray[np.float64]:
    # The periodic (DFT-even) Hann window, which is what STFT implementations use for analysis.
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


@functools.cache
def _sparse_filterbank() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each filter's first non-zero bin and its weights from there (zero-padded to the widest filter)."""
    filters = mel_filterbank().astype(np.float64)
    nonzero = filters > 0
    first = np.argmax(nonzero, axis=1).astype(np.int64)
    last = filters.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    width = int((last - first).max())
    weights = np.zeros((filters.shape[0], width))
    for band, (start, stop) in enumerate(zip(first, last, strict=True)):
        weights[band, : stop - start] = filters[band, start:stop]
    first.flags.writeable = False
    weights.flags.writeable = False
    return first, weights


def preemphasis(audio: npt.ArrayLike, coefficient: float = PREEMPHASIS) -> npt.NDArray[np.float64]:
    """y[n] = x[n] - k x[n-1], with x[-1] = 0: lifts the highs the way the model was trained."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return x
    return np.concatenate([x[:1], x[1:] - coefficient * x[:-1]])


def _centred_frames(signal: npt.NDArray[np.float64], n_fft: int, hop: int) -> npt.NDArray[np.float64]:
    """The analysis frames of a centred STFT: the signal reflect-padded by n_fft/2 each side, one per hop."""
    pad = n_fft // 2
    if signal.size <= pad:
        # Reflection needs more samples than the pad; so short a clip is silence-padded instead.
        signal = np.pad(signal, (0, pad + 1 - signal.size))
    padded = np.pad(signal, pad, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]


def _frame_magnitudes(frames: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(n_frames, n_fft//2 + 1) |FFT| of Hann-windowed frames; numpy's FFT transforms each row on its own."""
    return np.abs(np.fft.rfft(frames * _periodic_hann(frames.shape[1]), axis=1))


def stft_magnitude(audio: npt.ArrayLike, n_fft: int = N_FFT, hop: int = HOP) -> npt.NDArray[np.float64]:
    """|STFT| of a centred analysis: (n_fft//2 + 1, 1 + len//hop), frames reflect-padded by n_fft/2 each side."""
    return _frame_magnitudes(_centred_frames(np.asarray(audio, dtype=np.float64).reshape(-1), n_fft, hop)).T


def _normalised_mel(magnitude: npt.NDArray[np.float64]) -> FloatArray:
    """(n_frames, 401) magnitudes → (80, n_frames) normalised mel columns in [-4, 4].

    The filterbank is applied as a fixed sequence of elementwise multiply-adds over each filter's bins,
    so a column's value never depends on which other columns are computed with it.
    """
    first, weights = _sparse_filterbank()
    bins = magnitude.shape[1]
    mel = np.zeros((magnitude.shape[0], first.shape[0]))
    for offset in range(weights.shape[1]):
        mel += weights[:, offset] * magnitude[:, np.minimum(first + offset, bins - 1)]
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    level_db = 20.0 * np.log10(np.maximum(floor, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * (level_db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.ascontiguousarray(np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32).T)


def melspectrogram(audio: npt.ArrayLike) -> FloatArray:
    """The normalised (80, 1 + len//200) mel spectrogram of 16 kHz float audio in [-1, 1], values in [-4, 4]."""
    return _normalised_mel(_frame_magnitudes(_centred_frames(preemphasis(audio), N_FFT, HOP)))


def window_starts(n_frames: int, n_columns: int, fps: float, first_frame: int = 0) -> npt.NDArray[np.int64]:
    """First mel column of each video frame's window: ``int(80 * i / fps)``, clamped so it fits.

    ``i`` runs from ``first_frame``: the frames' indices on the timeline the ``n_columns`` belong to.
    """
    if n_columns < MEL_STEP:
        raise ValueError(f"a mel window needs {MEL_STEP} columns, the spectrogram has {n_columns}")
    starts = (MEL_COLUMNS_PER_SECOND * np.arange(first_frame, first_frame + n_frames) / fps).astype(np.int64)
    return np.minimum(starts, n_columns - MEL_STEP)


def _gather_windows(mel: FloatArray, starts: npt.NDArray[np.int64]) -> FloatArray:
    """(n, 1, 80, 16): the 16 columns of ``mel`` from each start."""
    index = starts[:, None] + np.arange(MEL_STEP)[None, :]
    return np.ascontiguousarray(mel[:, index].transpose(1, 0, 2)[:, None, :, :])


def _with_minimum_length(samples: FloatArray, minimum: int) -> FloatArray:
    # Audio shorter than one window (0.2 s) is padded with silence so even a one-frame job has a whole one.
    if samples.size < minimum:
        return np.concatenate([samples, np.zeros(minimum - samples.size, np.float32)])
    return samples


def mel_windows(audio: npt.ArrayLike, n_frames: int, fps: float = 25.0) -> FloatArray:
    """(n_frames, 1, 80, 16) model inputs: the mel window of each video frame of ``audio``, as the reference
    inference computes them from one whole file. Audio shorter than 0.2 s is padded with silence."""
    samples = _with_minimum_length(np.asarray(audio, dtype=np.float32).reshape(-1), (MEL_STEP - 1) * HOP)
    mel = melspectrogram(samples)
    return _gather_windows(mel, window_starts(n_frames, mel.shape[1], fps))


def timeline_windows(history: npt.ArrayLike, audio: npt.ArrayLike, first_frame: int, n_frames: int,
                     fps: int = 25) -> FloatArray:
    """(n_frames, 1, 80, 16): the windows of frames ``first_frame`` … of a request, as ``mel_windows`` of the
    whole request's audio gives them, computed from this part of it only.

    ``audio`` starts at the request's sample ``first_frame * 16000 / fps`` and runs to the end of what is
    known (frames and look-ahead); its end is taken as the end of the speech (reflected, windows clamped),
    as the whole-request computation does at the request's end. ``history`` is the audio just before it;
    what it does not cover of the request before ``audio`` counts as silence. ~0.04 s of history (601
    samples) is all a window reaches back, except at the request's start, which needs all of it.
    """
    if SAMPLE_RATE % fps:
        raise ValueError(f"{fps} fps is not a whole number of samples per frame at {SAMPLE_RATE} Hz")
    if n_frames == 0:
        return np.zeros((0, 1, N_MELS, MEL_STEP), np.float32)
    origin = first_frame * (SAMPLE_RATE // fps)  # the request sample audio[0] is
    known = np.asarray(history, dtype=np.float32).reshape(-1)
    known = known[max(known.size - origin, 0) :]  # nothing precedes the request's start
    signal = np.concatenate([known, np.asarray(audio, dtype=np.float32).reshape(-1)])
    known_from = origin - known.size
    # The whole-request path pads a request shorter than one window with silence; so does this, at its end.
    end = max(origin + signal.size - known.size, (MEL_STEP - 1) * HOP)
    starts = window_starts(n_frames, 1 + end // HOP, fps, first_frame)
    columns = np.arange(int(starts[0]), int(starts[-1]) + MEL_STEP)
    mel = _normalised_mel(_frame_magnitudes(_timeline_frames(signal, known_from, end, columns)))
    return _gather_windows(mel, starts - columns[0])


def _timeline_frames(signal: FloatArray, known_from: int, end: int,
                     columns: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The analysis frames of ``columns`` of the request whose samples ``[known_from, …)`` are ``signal``
    (silence before it and after it up to ``end``), reflect-padded at the request's start and at ``end``."""
    pad = N_FFT // 2
    wanted = (columns[:, None] * HOP - pad) + np.arange(N_FFT)[None, :]  # request samples of each frame
    wanted = np.where(wanted < 0, -wanted, wanted)  # reflection at the request's start
    wanted = np.where(wanted >= end, 2 * (end - 1) - wanted, wanted)  # and at the end of the speech
    low, high = int(wanted.min()), int(wanted.max()) + 1
    # x over [low - 1, high): one sample more, for the pre-emphasis of the first; x[-1] = 0 at the start.
    x = np.zeros(high - low + 1)
    span = np.arange(low - 1, high)
    inside = (span >= known_from) & (span < known_from + signal.size)
    x[inside] = signal[span[inside] - known_from]
    emphasised = x[1:] - PREEMPHASIS * x[:-1]
    return emphasised[wanted - low]
