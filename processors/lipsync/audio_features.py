"""Turns speech audio into per-video-frame mouth parameters (opening and width), language-independently.

The mouth follows the sound itself rather than phonemes, so any voice, TTS engine or language works:

* opening comes from the frame's loudness in dB relative to the job's own speech level, behind a noise
  gate (silence closes the mouth) and damped for hiss-like fricatives (s, sh, f are said with the teeth
  almost together);
* width comes from the colour of voiced sound: a strong second formant ("ee") spreads the lips, a weak
  one with a low first formant ("oo", "o") rounds them, an open "a" stays neutral;
* both are smoothed with a fast attack, a slower release and a one-frame lead, because lips start moving
  just before the sound and close a little after it.

Every value is a function of the job's own audio, so a job renders without state from the previous one
and needs no audio context. The smoothing reaches ``RELEASE_FRAMES`` back and ``LEAD_FRAMES`` ahead, so
only the frames that close to a job's edges can differ from rendering the whole request in one job (the
first ones miss the release of the previous job's last sound, the last one the lead of the next job's
first). The speech level is the job's own loud percentile clamped around a nominal TTS level, so the
jobs of one utterance agree within a few dB. Together that makes a join a small step, not a jump (on
speech, under 0.1 of the opening range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RATE = 16_000
FPS = 25

NOMINAL_SPEECH_DBFS = -18.0  # loud-percentile level of typical TTS output (espeak-ng, piper, cloud TTS)
LEVEL_CLAMP_DB = 12.0  # how far a job's own level may move the reference away from the nominal one
GATE_DBFS = -50.0  # below this a frame is silence whatever the job's level (background noise, dither)
OPEN_SPAN_DB = 30.0  # dB range below the speech level over which the mouth goes from closed to open
LOUD_PERCENTILE = 90.0

FFT_SIZE = 1024
FRICATIVE_BAND_HZ = (3500.0, 7500.0)
VOICE_BAND_HZ = (80.0, 7500.0)
LOW_FORMANT_BAND_HZ = (250.0, 1200.0)
HIGH_FORMANT_BAND_HZ = (1800.0, 3500.0)
FIRST_FORMANT_BAND_HZ = (200.0, 1500.0)
# Calibrated on espeak-ng Persian and English vowels: "ee" has a tilt near -4 dB, "a" near -16 dB and a
# first-formant centroid near 800 Hz, a rounded "oo" near -23 dB with its centroid near 340 Hz.
SPREAD_TILT_DB = (-12.0, -5.0)  # tilt over which the lips go from neutral to fully spread
ROUND_TILT_DB = (-8.0, -16.0)  # tilt over which a low centroid starts to count as rounding
ROUND_CENTROID_HZ = (650.0, 400.0)  # first-formant centroid over which the lips go to fully rounded

LEAD_FRAMES = 1
LEAD_WEIGHT = 0.55  # weight of the target LEAD_FRAMES ahead: the mouth starts opening before the sound
RELEASE_WEIGHTS = (1.0, 0.7, 0.4, 0.15)  # weight of the target d frames back, d = 0, 1, 2, 3
RELEASE_FRAMES = len(RELEASE_WEIGHTS) - 1

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FrameFeatures:
    """Raw per-frame measurements of the audio, before they become mouth parameters."""

    level_dbfs: FloatArray  # RMS level of the frame's samples
    speech_level_dbfs: float  # the job's reference level the opening is relative to
    fricative_ratio: FloatArray  # share of the power in the hiss band, 0..1
    tilt_db: FloatArray  # high-formant band power over low-formant band power
    low_centroid_hz: FloatArray  # power centroid of the first-formant band


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame mouth parameters: ``opening`` 0 (closed) .. 1 (wide open), ``width`` -1 (rounded) .. +1."""

    opening: FloatArray
    width: FloatArray

    def __len__(self) -> int:
        return int(self.opening.shape[0])


def frame_matrix(audio: npt.ArrayLike, n_frames: int, samples_per_frame: int) -> FloatArray:
    """The audio cut into ``n_frames`` rows of one video frame each, zero-padded if the audio is short."""
    flat = np.asarray(audio, dtype=np.float32).reshape(-1)
    needed = n_frames * samples_per_frame
    if flat.shape[0] < needed:
        flat = np.concatenate([flat, np.zeros(needed - flat.shape[0], dtype=np.float32)])
    return flat[:needed].reshape(n_frames, samples_per_frame)


def frame_rms_dbfs(audio: npt.ArrayLike, n_frames: int, samples_per_frame: int) -> FloatArray:
    """RMS level of each video frame's samples in dB relative to full scale (-120 for digital silence)."""
    frames = frame_matrix(audio, n_frames, samples_per_frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) if n_frames else np.zeros(0)
    return (20.0 * np.log10(np.maximum(rms, 1e-6))).astype(np.float32)


def frame_features(audio: npt.ArrayLike, n_frames: int, *, rate: int = RATE, fps: int = FPS) -> FrameFeatures:
    """Loudness, speech level and spectral shape of each video frame's slice of audio."""
    samples_per_frame = rate // fps
    level = frame_rms_dbfs(audio, n_frames, samples_per_frame)
    power = _frame_power_spectra(frame_matrix(audio, n_frames, samples_per_frame))
    freqs = np.fft.rfftfreq(max(FFT_SIZE, samples_per_frame), 1.0 / rate)
    voice = _band_power(power, freqs, VOICE_BAND_HZ)
    fricative = _band_power(power, freqs, FRICATIVE_BAND_HZ) / np.maximum(voice, 1e-12)
    tilt = 10.0 * np.log10(
        np.maximum(_band_power(power, freqs, HIGH_FORMANT_BAND_HZ), 1e-12)
        / np.maximum(_band_power(power, freqs, LOW_FORMANT_BAND_HZ), 1e-12)
    )
    return FrameFeatures(
        level_dbfs=level,
        speech_level_dbfs=speech_level_dbfs(level),
        fricative_ratio=np.clip(fricative, 0.0, 1.0).astype(np.float32),
        tilt_db=tilt.astype(np.float32),
        low_centroid_hz=_band_centroid(power, freqs, FIRST_FORMANT_BAND_HZ),
    )


def speech_level_dbfs(level_dbfs: FloatArray) -> float:
    """The reference level: the loud percentile of the frames above the gate, kept near the nominal level.

    The clamp stops a job holding one quiet word from blowing that word up to a full-open mouth, and
    keeps consecutive jobs of one utterance on nearly the same scale.
    """
    voiced = level_dbfs[level_dbfs > GATE_DBFS]
    if voiced.size == 0:
        return NOMINAL_SPEECH_DBFS
    loud = float(np.percentile(voiced, LOUD_PERCENTILE))
    return float(np.clip(loud, NOMINAL_SPEECH_DBFS - LEVEL_CLAMP_DB, NOMINAL_SPEECH_DBFS + LEVEL_CLAMP_DB))


def mouth_track(audio: npt.ArrayLike, n_frames: int, *, rate: int = RATE, fps: int = FPS) -> MouthTrack:
    """Smoothed mouth opening and width for each of ``n_frames`` video frames of ``audio``."""
    features = frame_features(audio, n_frames, rate=rate, fps=fps)
    opening = _target_opening(features)
    width = _target_width(features, opening)
    return MouthTrack(opening=attack_release(opening), width=_smooth_width(width))


def _frame_power_spectra(frames: FloatArray) -> npt.NDArray[np.float64]:
    """Hann-windowed power spectrum of each frame, zero-padded to at least ``FFT_SIZE`` points."""
    if frames.shape[0] == 0:
        return np.zeros((0, FFT_SIZE // 2 + 1))
    window = np.hanning(frames.shape[1]).astype(np.float32)
    spectrum = np.fft.rfft(frames * window, n=max(FFT_SIZE, frames.shape[1]), axis=1)
    return np.abs(spectrum).astype(np.float64) ** 2


def _band_power(
    power: npt.NDArray[np.float64], freqs: npt.NDArray[np.float64], band: tuple[float, float]
) -> npt.NDArray[np.float64]:
    inside = (freqs >= band[0]) & (freqs < band[1])
    return np.asarray(power[:, inside].sum(axis=1), dtype=np.float64)


def _band_centroid(
    power: npt.NDArray[np.float64], freqs: npt.NDArray[np.float64], band: tuple[float, float]
) -> FloatArray:
    inside = (freqs >= band[0]) & (freqs < band[1])
    total = power[:, inside].sum(axis=1)
    weighted = (power[:, inside] * freqs[inside]).sum(axis=1)
    # A silent frame has no centroid; the band's middle makes it count as neither spread nor rounded.
    middle = 0.5 * (band[0] + band[1])
    return np.where(total > 1e-12, weighted / np.maximum(total, 1e-12), middle).astype(np.float32)


def _target_opening(features: FrameFeatures) -> FloatArray:
    """Unsmoothed opening: loudness above the gate mapped to 0..1, damped for hiss."""
    relative = features.level_dbfs - features.speech_level_dbfs
    raw = np.clip((relative + OPEN_SPAN_DB) / OPEN_SPAN_DB, 0.0, 1.0)
    # A gentle curve keeps quiet consonants small while loud vowels still reach the top of the range.
    opening = raw**1.3
    opening = np.where(features.level_dbfs > GATE_DBFS, opening, 0.0)
    hiss = _smoothstep(0.3, 0.75, features.fricative_ratio)
    return (opening * (1.0 - 0.55 * hiss)).astype(np.float32)


def _target_width(features: FrameFeatures, opening: FloatArray) -> FloatArray:
    """Unsmoothed width, faded out where the mouth is (nearly) closed.

    A strong second formant ("ee") spreads the lips; a weak one together with a low first formant
    ("oo", "o") rounds them; an open "a" has neither and stays neutral.
    """
    spread = _smoothstep(*SPREAD_TILT_DB, features.tilt_db)
    rounding = _smoothstep(*ROUND_TILT_DB, features.tilt_db) * _smoothstep(*ROUND_CENTROID_HZ, features.low_centroid_hz)
    # Hiss has a steep tilt too but says nothing about lip rounding, so it does not count as voiced.
    voiced = np.clip(opening * 3.0, 0.0, 1.0) * (1.0 - _smoothstep(0.3, 0.75, features.fricative_ratio))
    return ((spread - rounding) * voiced).astype(np.float32)


def attack_release(target: FloatArray) -> FloatArray:
    """Envelope of ``target`` that rises one frame early and decays over ``RELEASE_FRAMES`` frames.

    Each frame takes the largest of its neighbours' targets, each weighted by how far it is: the next
    frame (lead), itself, and the previous frames with decaying weights (release). Unlike a recursive
    filter this depends on a fixed window only, which is what lets a job render from its own audio.
    """
    n = target.shape[0]
    if n == 0:
        return target.astype(np.float32)
    envelope = target.astype(np.float32).copy()
    if n > LEAD_FRAMES:
        envelope[:-LEAD_FRAMES] = np.maximum(envelope[:-LEAD_FRAMES], LEAD_WEIGHT * target[LEAD_FRAMES:])
    for distance, weight in enumerate(RELEASE_WEIGHTS[1:], start=1):
        if distance < n:
            envelope[distance:] = np.maximum(envelope[distance:], weight * target[:-distance])
    return _smooth3(envelope)


def _smooth_width(width: FloatArray) -> FloatArray:
    """Width changes both ways at one pace; two passes of a 3-tap average keep the corners from jittering."""
    return _smooth3(_smooth3(width))


def _smooth3(values: FloatArray) -> FloatArray:
    if values.shape[0] < 3:
        return values.astype(np.float32)
    padded = np.concatenate([values[:1], values, values[-1:]])
    return (0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]).astype(np.float32)


def _smoothstep(edge0: float, edge1: float, x: npt.NDArray[np.floating] | float) -> FloatArray:
    t = np.clip((np.asarray(x, dtype=np.float32) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)
