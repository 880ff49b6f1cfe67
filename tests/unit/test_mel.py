"""Wav2Lip's mel front end: Slaney mel scale and filters, the dB mapping to [-4, 4], and per-frame 80x16 windows."""

from __future__ import annotations

import numpy as np
import pytest

from processors.lipsync.mel import (
    HOP,
    MEL_STEP,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    mel_windows,
    melspectrogram,
    preemphasis,
    stft_magnitude,
    timeline_windows,
    window_starts,
)

RATE = 16_000


def sine(freq: float, amplitude: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_slaney_mel_scale_is_linear_to_1khz_then_logarithmic() -> None:
    assert hz_to_mel(200 / 3) == pytest.approx(1.0)
    assert hz_to_mel(1000) == pytest.approx(15.0)
    assert hz_to_mel(6400) == pytest.approx(15.0 + 27.0)  # 27 mels per factor 6.4 above 1 kHz
    freqs = np.array([0.0, 55.0, 440.0, 1000.0, 2500.0, 7600.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs)), freqs, atol=1e-9)


def test_filterbank_has_80_unit_area_triangles_between_55_and_7600_hz() -> None:
    filters = mel_filterbank()
    assert filters.shape == (80, 401)
    bins = np.linspace(0, 8000, 401)
    assert filters[:, bins < 55].max() == 0.0 and filters[:, bins > 7600].max() == 0.0
    # Slaney normalisation: every filter integrates to 1 over frequency (bins are 20 Hz apart).
    np.testing.assert_allclose(filters.sum(axis=1) * 20.0, 1.0, rtol=0.05)
    peaks = bins[filters.argmax(axis=1)]
    assert np.all(np.diff(peaks) >= 0)
    assert np.all((filters > 0).sum(axis=1) >= 2)


def test_preemphasis_subtracts_097_of_the_previous_sample() -> None:
    np.testing.assert_allclose(preemphasis([1.0, 1.0, 0.0, 2.0]), [1.0, 0.03, -0.97, 2.0])


def test_stft_is_centred_with_one_column_per_hop() -> None:
    click = np.zeros(4000)
    click[2000] = 1.0
    magnitude = stft_magnitude(click)
    assert magnitude.shape == (401, 1 + 4000 // HOP)
    energy = magnitude.sum(axis=0)
    assert int(np.argmax(energy)) == 2000 // HOP  # column k is centred on sample k * hop


def test_silence_is_the_floor_and_levels_map_linearly_in_db() -> None:
    assert np.all(melspectrogram(np.zeros(RATE)) == -4.0)
    loud, quiet = melspectrogram(sine(1000, 0.5)), melspectrogram(sine(1000, 0.05))
    assert loud.shape == (80, 81) and loud.dtype == np.float32
    assert loud.max() <= 4.0 and loud.min() >= -4.0
    # 20 dB quieter is 20 * 8/100 = 1.6 lower on the [-4, 4] scale (100 dB span), away from the clip.
    assert loud[:, 40].max() - quiet[:, 40].max() == pytest.approx(1.6, abs=1e-3)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 6000.0])
def test_a_tone_lights_the_mel_band_centred_on_its_frequency(freq: float) -> None:
    column = melspectrogram(sine(freq, 0.3))[:, 40]
    centres = mel_to_hz(np.linspace(hz_to_mel(55), hz_to_mel(7600), 82))[1:-1]
    assert abs(centres[int(np.argmax(column))] - freq) < 0.06 * freq + 40


def test_frame_windows_start_at_int_80_i_over_fps_and_clamp_at_the_end() -> None:
    assert list(window_starts(8, 200, 25.0)) == [0, 3, 6, 9, 12, 16, 19, 22]
    starts = window_starts(30, 40, 25.0)
    assert starts.max() == 40 - MEL_STEP and np.all(np.diff(starts) >= 0)


def test_mel_windows_are_the_spectrogram_slices_of_each_video_frame() -> None:
    audio = sine(440, 0.2, seconds=0.8) * np.linspace(0, 1, int(0.8 * RATE), dtype=np.float32)
    windows = mel_windows(audio, 20)
    mel = melspectrogram(audio)
    assert windows.shape == (20, 1, 80, 16) and windows.dtype == np.float32
    for i in (0, 7, 19):
        start = min(int(80 * i / 25), mel.shape[1] - MEL_STEP)
        np.testing.assert_array_equal(windows[i, 0], mel[:, start : start + MEL_STEP])


def test_a_one_frame_job_still_gets_a_whole_window() -> None:
    windows = mel_windows(sine(440, 0.3, seconds=0.04), 1)
    assert windows.shape == (1, 1, 80, 16)
    assert windows[0, 0, :, 0].max() > -4.0 and np.all(windows[0, 0, :, -3:] == -4.0)  # padded with silence


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / RATE)
    return (0.2 * rng.standard_normal(n) * envelope).astype(np.float32)


@pytest.mark.parametrize("sizes", [(6, 12, 12, 12, 12, 12, 9), (1,) * 75, (5, 7, 13, 50), (75,)])
def test_windows_on_the_timeline_are_bit_identical_to_the_whole_requests(sizes: tuple[int, ...]) -> None:
    audio = speech_like(3.0)
    whole = mel_windows(audio, 75)
    parts, first = [], 0
    for size in sizes:
        history = audio[max(0, first * 640 - 8000) : first * 640]
        parts.append(timeline_windows(history, audio[first * 640 : (first + size + 5) * 640], first, size))
        first += size
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_the_timeline_needs_only_601_samples_of_history_and_takes_what_is_missing_as_silence() -> None:
    audio = speech_like(1.0, seed=1)
    whole = mel_windows(audio, 10)
    start = 7 * 640
    job = audio[start : start + 8 * 640]
    np.testing.assert_array_equal(timeline_windows(audio[start - 601 : start], job, 7, 3), whole[7:10])
    unknown = timeline_windows(np.zeros(0, np.float32), job, 7, 3)
    silent_before = np.concatenate([np.zeros(start, np.float32), audio[start:]])
    np.testing.assert_array_equal(unknown, mel_windows(silent_before, 10)[7:10])


def test_the_end_of_the_audio_given_is_the_end_of_the_request() -> None:
    audio = speech_like(0.5, seed=2)  # 12.5 frames: the last windows clamp to the spectrogram's end
    whole = mel_windows(audio, 13)
    np.testing.assert_array_equal(timeline_windows(audio[: 10 * 640], audio[10 * 640 :], 10, 3), whole[10:])
    short = audio[:1000]  # shorter than a window: padded with silence, as the whole-request path does
    np.testing.assert_array_equal(timeline_windows(np.zeros(0, np.float32), short, 0, 2), mel_windows(short, 2))
