"""Estimates viseme onsets from speech audio alone, for speech that arrives without phoneme timings.

OpenAI TTS (and audio that clients send) carries no phoneme events, so the mouth shapes are guessed from
the sound: a small frame classifier trained by ``scripts/train_viseme_estimator.py`` on espeak-ng (and
piper) speech labelled with those engines' own phoneme timings (docs/viseme-estimator.md).

* Features, every 10 ms: 40 log-mel bands (25 ms window) of the 16 kHz audio, levelled against the
  audio's own loud frames so the gain of the source does not matter, then a context of frames up to
  120 ms each side stacked into one vector (the shape of a consonant is heard in its neighbours).
* Model: a two-hidden-layer ReLU MLP in numpy, weights in one small ``.npz``.
* Decoding: a Viterbi pass with a fixed cost for changing viseme turns frame probabilities into runs;
  runs shorter than ``MIN_RUN_S`` are absorbed by a neighbour, equal neighbours merged.

Everything is a pure function of the audio and the weights, so the same audio gives the same onsets.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from processors.lipsync.mel import mel_filterbank
from processors.lipsync.visemes import Viseme

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms
N_FFT = 512
N_MELS = 40
FMIN_HZ = 60.0
FMAX_HZ = 7600.0
PREEMPHASIS = 0.97
FLOOR_DB = -70.0  # below the audio's loud level: quieter bands all look the same (silence)
# The loudest reference the levelling accepts as speech: a band level of a clip near -70 dBFS. Quieter
# clips are compared with this, so digital silence sits at the floor instead of being levelled up to speech.
MIN_REFERENCE_DB = -50.0
LOUD_PERCENTILE = 95.0
SILENCE_DBFS = -70.0  # a clip whose loudest frames are under this is silence whatever the model says
FRAME_S = HOP / SAMPLE_RATE
MIN_RUN_S = 0.03
FORMAT_VERSION = 1

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "models" / "viseme_estimator.npz"

FloatArray = npt.NDArray[np.float32]
VisemeOnsets = list[tuple[float, Viseme]]

_REQUIRED = ("format_version", "classes", "offsets", "mean", "scale", "w1", "b1", "w2", "b2", "w3", "b3",
             "switch_cost")


class VisemeEstimatorError(RuntimeError):
    """The weights file is missing, unreadable or not a viseme-estimator weights file of this version."""


@functools.cache
def _mel_filters() -> FloatArray:
    return mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, FMIN_HZ, FMAX_HZ)


@functools.cache
def _window() -> npt.NDArray[np.float64]:
    window = np.zeros(N_FFT)
    window[:WINDOW] = np.hanning(WINDOW + 2)[1:-1]  # zero-padded to the FFT size
    return window


def frame_count(n_samples: int) -> int:
    """Frames of ``n_samples`` of audio: one every 10 ms, frame ``t`` centred on ``t * 10 ms``."""
    return max(1, (n_samples + HOP - 1) // HOP)


def log_mel(audio: npt.ArrayLike) -> FloatArray:
    """(frames, N_MELS) log-mel energies in dB relative to the clip's loud frames, floored at FLOOR_DB.

    Levelling by the clip's own loud percentile makes the features independent of the source's gain
    (a TTS at -25 dBFS and one at -10 dBFS look the same); the floor hides noise below speech.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    n_frames = frame_count(x.size)
    emphasised = np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]]) if x.size else x
    # Centred frames, zero-padded (not reflected) so a silent edge stays silent.
    padded = np.zeros(n_frames * HOP + N_FFT)
    padded[WINDOW // 2 : WINDOW // 2 + x.size] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    power = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    mel_db = 10.0 * np.log10(power @ _mel_filters().T.astype(np.float64) + 1e-12)
    # The reference is the loud frames' strongest band, so "loud" means the same for every voice.
    reference = max(float(np.percentile(mel_db.max(axis=1), LOUD_PERCENTILE)), MIN_REFERENCE_DB)
    return np.maximum(mel_db - reference, FLOOR_DB).astype(np.float32)


def loud_level_dbfs(audio: npt.ArrayLike) -> float:
    """The clip's loud-percentile frame level in dBFS (full scale = 1.0)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return -200.0
    n = frame_count(x.size)
    padded = np.zeros(n * HOP)
    padded[: x.size] = x
    rms = np.sqrt(np.mean(padded.reshape(n, HOP) ** 2, axis=1))
    return float(20.0 * np.log10(np.percentile(rms, LOUD_PERCENTILE) + 1e-10))


def stack_context(features: FloatArray, offsets: npt.NDArray[np.int64]) -> FloatArray:
    """(frames, len(offsets) * bands): each frame with the frames at ``offsets`` from it (edges repeat)."""
    n = features.shape[0]
    index = np.clip(np.arange(n)[:, None] + offsets[None, :], 0, n - 1)
    return features[index].reshape(n, -1)


@dataclass(frozen=True)
class _Weights:
    classes: tuple[Viseme, ...]
    offsets: npt.NDArray[np.int64]
    mean: FloatArray
    scale: FloatArray
    layers: tuple[tuple[FloatArray, FloatArray], ...]
    switch_cost: float


class VisemeEstimator:
    """A loaded viseme classifier: ``estimate(audio)`` gives the viseme onsets of 16 kHz mono speech."""

    def __init__(self, weights: _Weights) -> None:
        self._weights = weights

    @classmethod
    def load(cls, path: Path | None = None) -> VisemeEstimator:
        """Load the weights ``path`` (default: the shipped ``assets/models/viseme_estimator.npz``)."""
        return cls(_read_weights(path or DEFAULT_WEIGHTS))

    @property
    def classes(self) -> tuple[Viseme, ...]:
        return self._weights.classes

    def with_switch_cost(self, switch_cost: float) -> VisemeEstimator:
        """The same model decoded with another cost per change of viseme (the training script tunes it)."""
        w = self._weights
        return VisemeEstimator(_Weights(w.classes, w.offsets, w.mean, w.scale, w.layers, switch_cost))

    def frame_log_probabilities(self, audio: npt.ArrayLike) -> FloatArray:
        """(frames, classes) log-probabilities, one frame per 10 ms of ``audio``."""
        w = self._weights
        hidden = (stack_context(log_mel(audio), w.offsets) - w.mean) * w.scale
        for index, (matrix, bias) in enumerate(w.layers):
            hidden = hidden @ matrix + bias
            if index < len(w.layers) - 1:
                np.maximum(hidden, 0.0, out=hidden)
        hidden -= hidden.max(axis=1, keepdims=True)
        return (hidden - np.log(np.exp(hidden).sum(axis=1, keepdims=True))).astype(np.float32)

    def frame_visemes(self, audio: npt.ArrayLike) -> list[Viseme]:
        """The decoded viseme of every 10 ms frame (after Viterbi smoothing and short-run absorption)."""
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = frame_count(samples.size)
        if samples.size == 0 or loud_level_dbfs(samples) < SILENCE_DBFS:
            return [Viseme.REST] * n
        path = viterbi(self.frame_log_probabilities(samples), self._weights.switch_cost)
        path = absorb_short_runs(path, max(1, round(MIN_RUN_S / FRAME_S)))
        return [self._weights.classes[int(index)] for index in path]

    def estimate(self, audio: npt.ArrayLike) -> VisemeOnsets:
        """Viseme onsets (seconds from the audio's start, the first at 0.0), one per run, in time order."""
        onsets: VisemeOnsets = []
        for index, viseme in enumerate(self.frame_visemes(audio)):
            if not onsets or onsets[-1][1] != viseme:
                onsets.append((round(index * FRAME_S, 3), viseme))
        return onsets


def viterbi(log_probabilities: FloatArray, switch_cost: float) -> npt.NDArray[np.int64]:
    """The class path maximising the summed log-probabilities minus ``switch_cost`` per change of class.

    With a uniform switch cost the best predecessor of each class is either itself or the best class of
    the previous frame, so a frame costs O(classes), not O(classes²), and the back-pointers are one
    "stayed" flag per class plus the previous frame's best class.
    """
    n, k = log_probabilities.shape
    stayed = np.zeros((n, k), dtype=bool)
    leader = np.zeros(n, dtype=np.int64)
    score = log_probabilities[0].astype(np.float64)
    switched = np.empty(k)
    for t in range(1, n):
        best = int(score.argmax())
        leader[t] = best
        switched.fill(score[best] - switch_cost)
        np.greater_equal(score, switched, out=stayed[t])
        np.maximum(score, switched, out=score)
        score += log_probabilities[t]
    path = np.empty(n, dtype=np.int64)
    state = int(score.argmax())
    for t in range(n - 1, 0, -1):
        path[t] = state
        if not stayed[t, state]:
            state = int(leader[t])
    path[0] = state
    return path


def absorb_short_runs(path: npt.NDArray[np.int64], min_frames: int) -> npt.NDArray[np.int64]:
    """Runs shorter than ``min_frames`` take the class of the longer neighbouring run (a flicker is no shape)."""
    result = path.copy()
    while True:
        starts = np.flatnonzero(np.concatenate([[True], result[1:] != result[:-1]]))
        lengths = np.diff(np.concatenate([starts, [result.size]]))
        short = np.flatnonzero(lengths < min_frames)
        if short.size == 0 or starts.size == 1:
            return result
        # The shortest run goes first, so two adjacent flickers do not swallow a real shape between them.
        run = int(short[np.argmin(lengths[short])])
        before = lengths[run - 1] if run > 0 else -1
        after = lengths[run + 1] if run + 1 < starts.size else -1
        neighbour = run - 1 if before >= after else run + 1
        start, length = starts[run], lengths[run]
        result[start : start + length] = result[starts[neighbour]]


def _read_weights(path: Path) -> _Weights:
    if not path.is_file():
        raise VisemeEstimatorError(f"viseme estimator weights not found at {path}: "
                                   "rebuild them with .venv/bin/python scripts/train_viseme_estimator.py")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _REQUIRED if key not in data.files]
            if missing:
                raise VisemeEstimatorError(f"{path} is not viseme estimator weights (missing {', '.join(missing)})")
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise VisemeEstimatorError(f"{path} is not a readable .npz weights file: {error}") from error
    if int(arrays["format_version"]) != FORMAT_VERSION:
        raise VisemeEstimatorError(f"{path} has weights format {int(arrays['format_version'])}, "
                                   f"this code reads {FORMAT_VERSION}: rebuild them")
    try:
        classes = tuple(Viseme(str(name)) for name in arrays["classes"])
    except ValueError as error:
        raise VisemeEstimatorError(f"{path} names a class that is no viseme: {error}") from error
    return _checked(path, arrays, classes)


def _checked(path: Path, arrays: dict[str, np.ndarray], classes: tuple[Viseme, ...]) -> _Weights:
    """The weights as float32 arrays, after checking their shapes chain from the features to the classes."""
    offsets = arrays["offsets"].astype(np.int64)
    layers = tuple((arrays[f"w{i}"].astype(np.float32), arrays[f"b{i}"].astype(np.float32)) for i in (1, 2, 3))
    width = offsets.size * N_MELS
    mean, scale = arrays["mean"].astype(np.float32), arrays["scale"].astype(np.float32)
    if mean.shape != (width,) or scale.shape != (width,):
        raise VisemeEstimatorError(f"{path}: normalisation is not {width} wide")
    for index, (matrix, bias) in enumerate(layers, start=1):
        if matrix.ndim != 2 or matrix.shape[0] != width or bias.shape != (matrix.shape[1],):
            raise VisemeEstimatorError(f"{path}: layer {index} has shape {matrix.shape}, input {width} wide")
        width = matrix.shape[1]
    if width != len(classes):
        raise VisemeEstimatorError(f"{path}: the last layer gives {width} outputs for {len(classes)} classes")
    if not all(np.isfinite(matrix).all() and np.isfinite(bias).all() for matrix, bias in layers):
        raise VisemeEstimatorError(f"{path}: weights hold NaN or infinity")
    return _Weights(classes, offsets, mean, scale, layers, float(arrays["switch_cost"]))
