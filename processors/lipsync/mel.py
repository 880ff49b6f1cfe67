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


def preemphasis(audio: npt.ArrayLike, coefficient: float = PREEMPHASIS) -> npt.NDArray[np.float64]:
    """y[n] = x[n] - k x[n-1], with x[-1] = 0: lifts the highs the way the model was trained."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return x
    return np.concatenate([x[:1], x[1:] - coefficient * x[:-1]])


def stft_magnitude(audio: npt.ArrayLike, n_fft: int = N_FFT, hop: int = HOP) -> npt.NDArray[np.float64]:
    """|STFT| of a centred analysis: (n_fft//2 + 1, 1 + len//hop), frames reflect-padded by n_fft/2 each side."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    pad = n_fft // 2
    if x.size <= pad:
        # Reflection needs more samples than the pad; so short a clip is silence-padded instead.
        x = np.pad(x, (0, pad + 1 - x.size))
    padded = np.pad(x, pad, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[:: hop][:n_frames]
    return np.abs(np.fft.rfft(frames * _periodic_hann(n_fft), axis=1)).T


def melspectrogram(audio: npt.ArrayLike) -> FloatArray:
    """The normalised (80, 1 + len//200) mel spectrogram of 16 kHz float audio in [-1, 1], values in [-4, 4]."""
    magnitude = stft_magnitude(preemphasis(audio))
    mel = mel_filterbank().astype(np.float64) @ magnitude
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    level_db = 20.0 * np.log10(np.maximum(floor, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * (level_db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def window_starts(n_frames: int, n_columns: int, fps: float) -> npt.NDArray[np.int64]:
    """First mel column of each video frame's window: ``int(80 * i / fps)``, clamped so it fits."""
    if n_columns < MEL_STEP:
        raise ValueError(f"a mel window needs {MEL_STEP} columns, the spectrogram has {n_columns}")
    starts = (MEL_COLUMNS_PER_SECOND * np.arange(n_frames) / fps).astype(np.int64)
    return np.minimum(starts, n_columns - MEL_STEP)


def mel_windows(audio: npt.ArrayLike, n_frames: int, fps: float = 25.0) -> FloatArray:
    """(n_frames, 1, 80, 16) model inputs: the mel window of each video frame of ``audio``.

    Audio shorter than 0.2 s is padded with silence so even a one-frame job has a whole window.
    """
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    minimum = (MEL_STEP - 1) * HOP
    if samples.size < minimum:
        samples = np.concatenate([samples, np.zeros(minimum - samples.size, np.float32)])
    mel = melspectrogram(samples)
    starts = window_starts(n_frames, mel.shape[1], fps)
    index = starts[:, None] + np.arange(MEL_STEP)[None, :]
    return np.ascontiguousarray(mel[:, index].transpose(1, 0, 2)[:, None, :, :])
