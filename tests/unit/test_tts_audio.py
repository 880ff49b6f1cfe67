"""Speech audio shaping: whole frames at two rates, even loudness, a limiter that never clips, clean edges."""

from __future__ import annotations

import numpy as np
import pytest

from processors.tts.audio import (
    CLAUSE_PAUSE_MS,
    LIPSYNC_RATE,
    PLAYBACK_RATE,
    RUN_ON_PAUSE_MS,
    SENTENCE_PAUSE_MS,
    LoudnessTarget,
    db_to_gain,
    fade_edges,
    gated_rms_dbfs,
    limit_peaks,
    pause_after,
    resample,
    shape_speech,
    to_float,
    to_pcm16,
    trim_silence,
)
from processors.tts.engines.espeak import EspeakEngine

TARGET = LoudnessTarget()


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


def tone(seconds: float, rate: int, amplitude: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def with_silence(audio: np.ndarray, rate: int, before_s: float, after_s: float) -> np.ndarray:
    before = np.zeros(int(before_s * rate), np.float32)
    after = np.zeros(int(after_s * rate), np.float32)
    return np.concatenate([before, audio, after])


def test_espeak_piece_becomes_whole_frames_at_both_rates_with_a_sentence_pause(espeak: EspeakEngine) -> None:
    speech = espeak.synthesize("سلام، حال شما چطور است؟", "fa")
    shaped = shape_speech(speech.pcm, speech.sample_rate, pause_ms=SENTENCE_PAUSE_MS, target=TARGET)
    assert len(shaped.playback) % 882 == 0 and len(shaped.lipsync) == shaped.frames * 640
    tail = len(shaped.playback) - shaped.speech_samples
    assert SENTENCE_PAUSE_MS / 1000 <= tail / PLAYBACK_RATE < SENTENCE_PAUSE_MS / 1000 + 0.04
    assert not shaped.playback[shaped.speech_samples :].any(), "the pause is silence"


def test_a_backends_own_long_trailing_silence_is_replaced_by_the_chosen_pause(espeak: EspeakEngine) -> None:
    speech = espeak.synthesize("سلام، حال شما چطور است؟", "fa")
    pcm = np.concatenate([speech.pcm, np.zeros(speech.sample_rate // 3, np.int16)])  # as the espeak-ng CLI adds
    raw_trailing = len(pcm) - np.flatnonzero(np.abs(pcm) > 100)[-1]
    shaped = shape_speech(pcm, speech.sample_rate, pause_ms=RUN_ON_PAUSE_MS, target=TARGET)
    shaped_trailing = len(shaped.playback) - np.flatnonzero(np.abs(shaped.playback) > 100)[-1]
    assert raw_trailing / speech.sample_rate > 0.2
    assert shaped_trailing / PLAYBACK_RATE < (RUN_ON_PAUSE_MS + 40 + 20) / 1000


def test_quiet_and_loud_pieces_come_out_at_the_same_gated_loudness() -> None:
    quiet = to_pcm16(with_silence(tone(1.0, 16_000, 0.02), 16_000, 0.1, 0.3))
    loud = to_pcm16(tone(0.6, 24_000, 0.9, hz=330))
    levels = []
    for pcm, rate in ((quiet, 16_000), (loud, 24_000)):
        shaped = shape_speech(pcm, rate, pause_ms=0, target=TARGET)
        levels.append(gated_rms_dbfs(to_float(shaped.playback), PLAYBACK_RATE))
    assert levels[0] == pytest.approx(TARGET.rms_dbfs, abs=0.5)
    assert levels[1] == pytest.approx(TARGET.rms_dbfs, abs=0.5)


def test_pauses_inside_a_piece_do_not_change_its_measured_loudness() -> None:
    dense = tone(1.0, PLAYBACK_RATE, 0.1)
    gappy = np.concatenate([tone(0.5, PLAYBACK_RATE, 0.1), np.zeros(PLAYBACK_RATE, np.float32),
                            tone(0.5, PLAYBACK_RATE, 0.1)])
    dense_db, gappy_db = gated_rms_dbfs(dense, PLAYBACK_RATE), gated_rms_dbfs(gappy, PLAYBACK_RATE)
    assert dense_db is not None and gappy_db is not None
    assert abs(dense_db - gappy_db) < 0.3


def test_silence_has_no_loudness_and_is_not_amplified() -> None:
    assert gated_rms_dbfs(np.zeros(PLAYBACK_RATE, np.float32), PLAYBACK_RATE) is None
    shaped = shape_speech(np.zeros(PLAYBACK_RATE, np.int16), PLAYBACK_RATE, pause_ms=CLAUSE_PAUSE_MS, target=TARGET)
    assert not shaped.playback.any() and shaped.frames >= 1


def test_limiter_keeps_every_sample_under_the_ceiling_and_leaves_quiet_audio_alone() -> None:
    spiky = tone(0.5, PLAYBACK_RATE, 0.2)
    spiky[5000:5040] = 0.99
    limited = limit_peaks(spiky, PLAYBACK_RATE, -1.0)
    assert np.max(np.abs(limited)) <= db_to_gain(-1.0) + 1e-6
    far_from_spike = slice(10_000, 11_000)
    np.testing.assert_allclose(limited[far_from_spike], spiky[far_from_spike])
    quiet = tone(0.2, PLAYBACK_RATE, 0.3)
    assert limit_peaks(quiet, PLAYBACK_RATE, -1.0) is quiet


def test_limiter_gain_changes_smoothly_so_it_adds_no_click() -> None:
    loud = tone(0.3, PLAYBACK_RATE, 1.0, hz=100)
    limited = limit_peaks(loud, PLAYBACK_RATE, -6.0)
    step = np.max(np.abs(np.diff(limited)))
    assert step <= np.max(np.abs(np.diff(loud))), "no sample-to-sample jump bigger than the signal's own"


def test_every_shaped_piece_starts_and_ends_at_zero_so_joins_do_not_click(espeak: EspeakEngine) -> None:
    abrupt = to_pcm16(tone(0.5, 24_000, 0.8))  # starts and stops mid-waveform, as a cut stream would
    for pcm, rate in ((abrupt, 24_000), (espeak.synthesize("Hello there.", "en").pcm, 22_050)):
        shaped = shape_speech(pcm, rate, pause_ms=RUN_ON_PAUSE_MS, target=TARGET)
        speech = shaped.playback[: shaped.speech_samples].astype(np.float32)
        assert abs(speech[0]) <= 1 and abs(speech[-1]) <= 40
        onset = np.abs(speech[:40]).max()
        assert onset < 0.2 * np.abs(speech).max(), "the first 2 ms are still fading in"


def test_fade_reaches_full_level_after_the_fade_time() -> None:
    flat = np.ones(PLAYBACK_RATE // 10, np.float32)
    faded = fade_edges(flat, PLAYBACK_RATE, 8.0)
    fade = int(PLAYBACK_RATE * 0.008)
    assert faded[0] == 0.0 and faded[-1] == 0.0
    assert np.all(np.diff(faded[:fade]) >= 0) and faded[fade + 1] == 1.0


def test_trim_keeps_a_short_margin_around_the_sound() -> None:
    audio = with_silence(tone(0.2, PLAYBACK_RATE, 0.5), PLAYBACK_RATE, 0.5, 0.5)
    trimmed = trim_silence(audio, PLAYBACK_RATE, -50.0, margin_ms=10.0)
    assert 0.2 <= len(trimmed) / PLAYBACK_RATE <= 0.2 + 0.021
    assert len(trim_silence(np.zeros(100, np.float32), PLAYBACK_RATE, -50.0)) == 0


def test_resampling_keeps_duration_and_removes_content_above_the_new_nyquist() -> None:
    high = tone(1.0, PLAYBACK_RATE, 0.5, hz=10_000)  # above 8 kHz: must not alias into the 16 kHz audio
    low = tone(1.0, PLAYBACK_RATE, 0.5, hz=440)
    assert len(resample(low, PLAYBACK_RATE, LIPSYNC_RATE)) == LIPSYNC_RATE
    assert np.sqrt(np.mean(resample(high, PLAYBACK_RATE, LIPSYNC_RATE)[1000:-1000] ** 2)) < 0.01
    assert np.sqrt(np.mean(resample(low, PLAYBACK_RATE, LIPSYNC_RATE)[1000:-1000] ** 2)) == pytest.approx(
        0.5 / np.sqrt(2), rel=0.02)


def test_lipsync_audio_is_the_playback_audio_at_sixteen_kilohertz(espeak: EspeakEngine) -> None:
    speech = espeak.synthesize("The quick brown fox jumps over the lazy dog.", "en")
    shaped = shape_speech(speech.pcm, speech.sample_rate, pause_ms=0, target=TARGET)
    back = resample(to_float(shaped.lipsync), LIPSYNC_RATE, PLAYBACK_RATE)
    band_limited = resample(resample(to_float(shaped.playback), PLAYBACK_RATE, LIPSYNC_RATE), LIPSYNC_RATE,
                            PLAYBACK_RATE)
    np.testing.assert_allclose(back, band_limited, atol=2e-3)
    assert len(shaped.lipsync) * PLAYBACK_RATE == len(shaped.playback) * LIPSYNC_RATE


@pytest.mark.parametrize(
    ("display", "is_last", "pause"),
    [
        ("حال شما چطور است؟", False, SENTENCE_PAUSE_MS),
        ("او گفت: «فردا می‌آیم.»", False, SENTENCE_PAUSE_MS),
        ("به گزارش خبرگزاری ایسنا،", False, CLAUSE_PAUSE_MS),
        ("Hello, how are you;", False, CLAUSE_PAUSE_MS),
        ("من از", False, RUN_ON_PAUSE_MS),
        ("Thank you.", True, CLAUSE_PAUSE_MS),
    ],
)
def test_pause_after_a_piece_follows_its_punctuation(display: str, is_last: bool, pause: int) -> None:
    assert pause_after(display, is_last=is_last) == pause
