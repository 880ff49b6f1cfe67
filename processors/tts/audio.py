"""Speech audio shaping: one format for playback and lip-sync, even loudness, click-free joins, natural pauses.

Every backend's piece goes through `shape_speech`: its own leading/trailing silence is cut (espeak-ng adds a
third of a second after each sentence), short raised-cosine fades make both ends start and stop at zero, the
gated RMS is set to one target with a peak limiter on top (so pieces and backends sound equally loud), then a
pause chosen by the punctuation that ended the piece is added, rounded up to whole 40 ms video frames. Whole
frames let the playback audio (22 050 Hz) and the lip-sync audio (16 000 Hz) of a segment have exactly
882 and 640 samples per frame, so the two never drift apart.

The backend's phoneme marks go through the same steps (the trim moves them, the resampling rescales them), so
each lands on the playback sample where its sound is; a final PAUSE mark says where the speech ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

from schemas.speech import PAUSE, PhonemeMark

PLAYBACK_RATE = 22_050  # espeak-ng's and piper's own rate, so the default path never resamples for playback
LIPSYNC_RATE = 16_000  # what lip-sync audio features are computed at
VIDEO_FPS = 25  # segments are whole video frames at this clock (the speech schema requires rates divisible by it)

Float = npt.NDArray[np.float32]
Pcm16 = npt.NDArray[np.int16]

# Pauses by what ends a piece: a sentence end breathes longer than a comma; a piece cut mid-clause (a long
# sentence or a change of language) gets only a short gap so the sentence still flows.
SENTENCE_PAUSE_MS = 320
CLAUSE_PAUSE_MS = 180
RUN_ON_PAUSE_MS = 60
_SENTENCE_ENDS = frozenset(".!?؟…")
_CLAUSE_ENDS = frozenset("،,;؛:")
_CLOSERS = frozenset("»)]}\"'”’›")


@dataclass(frozen=True)
class LoudnessTarget:
    """How every piece is levelled: gated RMS target, peak ceiling, and the limits of the gain applied."""

    rms_dbfs: float = -20.0
    peak_dbfs: float = -1.0
    max_gain_db: float = 30.0  # a near-silent piece is not blown up into noise
    silence_dbfs: float = -50.0  # below this a sample counts as silence when trimming
    fade_ms: float = 8.0


@dataclass(frozen=True)
class ShapedSpeech:
    """One piece, ready for a speech segment: the same audio at the playback and the lip-sync rate."""

    playback: Pcm16  # PLAYBACK_RATE, whole video frames
    lipsync: Pcm16  # LIPSYNC_RATE, the same frames
    speech_samples: int  # playback samples before the trailing pause (where a subtitle ends)
    # (playback sample, IPA name) within [0, speech_samples], ending with (speech_samples, PAUSE); empty when
    # the backend gave no timings
    phonemes: tuple[PhonemeMark, ...] = ()

    @property
    def frames(self) -> int:
        return len(self.playback) // samples_per_frame(PLAYBACK_RATE)


def samples_per_frame(rate: int) -> int:
    return rate // VIDEO_FPS


def to_float(pcm: Pcm16) -> Float:
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def to_pcm16(audio: Float) -> Pcm16:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def resample(audio: Float, from_rate: int, to_rate: int) -> Float:
    """Polyphase resampling with an anti-aliasing filter; the output has ceil(n · to / from) samples."""
    if from_rate == to_rate or len(audio) == 0:
        return audio.astype(np.float32)
    divisor = gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // divisor, from_rate // divisor).astype(np.float32)


def trim_bounds(audio: Float, rate: int, silence_dbfs: float, margin_ms: float = 12.0) -> tuple[int, int]:
    """[start, end) of the audio without its leading and trailing silence, keeping a short margin so soft
    onsets and endings survive; (0, 0) when it is all silence."""
    loud = np.flatnonzero(np.abs(audio) > db_to_gain(silence_dbfs))
    if len(loud) == 0:
        return 0, 0
    margin = int(rate * margin_ms / 1000)
    return max(0, int(loud[0]) - margin), min(len(audio), int(loud[-1]) + 1 + margin)


def trim_silence(audio: Float, rate: int, silence_dbfs: float, margin_ms: float = 12.0) -> Float:
    """Cut leading and trailing silence, keeping a short margin so soft onsets and endings survive."""
    start, end = trim_bounds(audio, rate, silence_dbfs, margin_ms)
    return audio[start:end]


def map_marks(marks: tuple[PhonemeMark, ...], *, cut: int, from_rate: int, to_rate: int,
              length: int) -> tuple[PhonemeMark, ...]:
    """Marks of audio whose first `cut` samples were dropped and that was resampled to `to_rate`.

    Rounded to the nearest output sample (resample_poly keeps time zero-phase, so scaling is exact) and
    clamped to [0, length]: a mark inside the trimmed silence moves to the edge. Offsets never decrease (a
    mark a backend placed before its predecessor starts with it), so the segment always validates.
    """
    mapped: list[PhonemeMark] = []
    previous = 0
    for sample, name in marks:
        at = round((sample - cut) * to_rate / from_rate)
        previous = min(max(at, previous), length)
        mapped.append((previous, name))
    return tuple(mapped)


def end_with_pause(marks: tuple[PhonemeMark, ...], speech_samples: int) -> tuple[PhonemeMark, ...]:
    """The marks and a final PAUSE where the speech ends (nothing for a backend that gave no marks)."""
    return (*marks, (speech_samples, PAUSE)) if marks else ()


def gated_rms_dbfs(audio: Float, rate: int, block_ms: float = 20.0) -> float | None:
    """Loudness of the voiced part: RMS over 20 ms blocks above an absolute and a relative gate.

    Like LUFS's gating (without its K-weighting), pauses inside a piece do not pull its loudness down, so a
    piece with long pauses is not amplified more than a dense one. None when the piece is silent.
    """
    block = max(1, int(rate * block_ms / 1000))
    usable = len(audio) // block * block
    if usable == 0:
        return None
    powers = np.mean(np.square(audio[:usable].reshape(-1, block), dtype=np.float64), axis=1)
    powers = powers[powers > db_to_gain(-70.0) ** 2]
    if len(powers) == 0:
        return None
    powers = powers[powers > np.mean(powers) * db_to_gain(-15.0) ** 2]
    return float(10 * np.log10(np.mean(powers)))


def normalise_loudness(audio: Float, rate: int, target: LoudnessTarget) -> Float:
    loudness = gated_rms_dbfs(audio, rate)
    if loudness is None:
        return audio
    gain_db = min(target.rms_dbfs - loudness, target.max_gain_db)
    return (audio * db_to_gain(gain_db)).astype(np.float32)


def limit_peaks(audio: Float, rate: int, ceiling_dbfs: float, window_ms: float = 5.0) -> Float:
    """A look-ahead peak limiter that never overshoots and never clicks.

    The gain each sample needs is min(1, ceiling/|x|). Taking, for every sample, the smallest needed gain
    within ±window and then averaging that over a window of the same width gives a smooth gain curve that
    is still at or below what every sample needs, because each averaged value came from a neighbourhood that
    contains the sample.
    """
    ceiling = db_to_gain(ceiling_dbfs)
    if len(audio) == 0 or float(np.max(np.abs(audio))) <= ceiling:
        return audio
    width = max(1, int(rate * window_ms / 1000))
    envelope = maximum_filter1d(np.abs(audio), size=2 * width + 1, mode="constant")
    needed = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-9))
    smooth = uniform_filter1d(needed, size=width + 1, mode="nearest")
    alone = np.minimum(1.0, ceiling / np.maximum(np.abs(audio), 1e-9))  # guards against float rounding only
    return (np.minimum(smooth, alone) * audio).astype(np.float32)


def fade_edges(audio: Float, rate: int, fade_ms: float) -> Float:
    """Raised-cosine fade in and out, so every piece starts and ends at zero: no click at any join."""
    length = min(int(rate * fade_ms / 1000), len(audio) // 2)
    if length == 0:
        return audio
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length, dtype=np.float32))).astype(np.float32)
    shaped = audio.astype(np.float32, copy=True)
    shaped[:length] *= ramp
    shaped[-length:] *= ramp[::-1]
    return shaped


def pause_after(display_text: str, *, is_last: bool) -> int:
    """Milliseconds of silence after a piece, by the punctuation it ends with (closing quotes skipped)."""
    if is_last:
        return CLAUSE_PAUSE_MS  # a short tail: the avatar closes its mouth before the video ends
    stripped = display_text.rstrip()
    while stripped and stripped[-1] in _CLOSERS:
        stripped = stripped[:-1].rstrip()
    last = stripped[-1:] if stripped else ""
    if last in _SENTENCE_ENDS:
        return SENTENCE_PAUSE_MS
    if last in _CLAUSE_ENDS:
        return CLAUSE_PAUSE_MS
    return RUN_ON_PAUSE_MS


def pad_to_frames(audio: Float, rate: int, pause_ms: int) -> Float:
    """Append the pause, rounded up so the piece is a whole number of video frames (at least one)."""
    frame = samples_per_frame(rate)
    wanted = len(audio) + rate * pause_ms // 1000
    frames = max(1, -(-wanted // frame))
    return np.concatenate([audio, np.zeros(frames * frame - len(audio), np.float32)])


def shape_speech(pcm: Pcm16, rate: int, *, pause_ms: int, target: LoudnessTarget,
                 phonemes: tuple[PhonemeMark, ...] = ()) -> ShapedSpeech:
    """A backend's raw piece (and its phoneme marks at `rate`) → levelled, faded, paused audio at the playback
    and the lip-sync rate, the marks in playback samples."""
    raw = to_float(pcm)
    start, end = trim_bounds(raw, rate, target.silence_dbfs)
    audio = fade_edges(raw[start:end], rate, target.fade_ms)
    audio = resample(audio, rate, PLAYBACK_RATE)
    audio = normalise_loudness(audio, PLAYBACK_RATE, target)
    audio = limit_peaks(audio, PLAYBACK_RATE, target.peak_dbfs)
    speech_samples = len(audio)
    marks = map_marks(phonemes, cut=start, from_rate=rate, to_rate=PLAYBACK_RATE, length=speech_samples)
    playback = pad_to_frames(audio, PLAYBACK_RATE, pause_ms)
    lipsync = resample(playback, PLAYBACK_RATE, LIPSYNC_RATE)
    frames = len(playback) // samples_per_frame(PLAYBACK_RATE)
    lipsync = lipsync[: frames * samples_per_frame(LIPSYNC_RATE)]  # exact already; the slice documents it
    return ShapedSpeech(to_pcm16(playback), to_pcm16(lipsync), speech_samples, end_with_pause(marks, speech_samples))
