"""The lip-sync measure, calibrated both ways: known-good mouths pass every figure, known-bad ones fail.

Known good: frames whose mouth is built from the TTS's own phoneme timings (``reference``: lips shut on
p/b/m, lower lip to the teeth on f/v, rounded and spread vowels, shut in pauses). Known bad: a mouth held
half open, a mouth always shut, one shut on every consonant, the same good mouth 200 ms late, and the
loudness-driven engine.
Every figure is shown failing on some trivially wrong output, so none can be maxed without the timings.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from processors.lipsync.engines.base import RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine
from scripts.lipsync_quality import landmarks, reference
from scripts.lipsync_quality.calibration import SAMPLE_THRESHOLDS, calibrate
from scripts.lipsync_quality.metrics import (
    TARGET_BILABIAL,
    TARGET_LABIODENTAL,
    TARGET_ROUNDING,
    TARGET_SILENCE,
    ClipScore,
    Thresholds,
    frame_at,
    score_clip,
    timing_passes,
)
from scripts.lipsync_quality.phonetics import Phone, Phonetic, pauses, phones_from_events
from scripts.lipsync_quality.speech import ENGINE_RATE, Utterance, espeak_utterance
from scripts.lipsync_quality.timing import best_lag, frame_truth, pearson, pooled, truth_curve
from tests.unit.face_fixtures import astronaut_photo

FPS = 25
SENTENCES = {
    "en": "Bob and Mom moved the blue boots, and five very old men fought for peace.",
    "fa": "بابا و مامان با هم به باغ می‌روند و فردا صبح پیش فاطمه می‌مانند.",
}


@functools.cache
def utterance(language: str) -> Utterance:
    return espeak_utterance(language, SENTENCES[language])


@functools.cache
def sample() -> tuple[reference.MouthImages, landmarks.dlib.rectangle]:
    frame = astronaut_photo().frames[0]
    image = np.ascontiguousarray(frame.image)
    return reference.mouth_images(image, frame.landmarks), landmarks.face_box(image)


def frames_of(utt: Utterance) -> int:
    return int(utt.seconds * FPS)


def scored(frames: list[np.ndarray], utt: Utterance, thresholds: Thresholds = SAMPLE_THRESHOLDS) -> ClipScore:
    _, box = sample()
    return score_clip(landmarks.lip_track(frames, box), utt.phones, utt.pauses, FPS, thresholds)


def timing(score: ClipScore) -> tuple[float, float]:
    return pooled(score.lags).best()


def good_clip(language: str, delay_s: float = 0.0) -> list[np.ndarray]:
    images, _ = sample()
    utt = utterance(language)
    return reference.reference_clip(images, utt.phones, frames_of(utt), FPS, delay_s=delay_s)


# ---- calibration ------------------------------------------------------------------------------------


def test_written_thresholds_are_what_calibration_derives_on_the_sample_photo() -> None:
    frame = astronaut_photo().frames[0]
    derived = calibrate(np.ascontiguousarray(frame.image), frame.landmarks)
    for name in ("closed", "parted", "raised", "tucked"):
        assert getattr(derived.thresholds, name) == pytest.approx(getattr(SAMPLE_THRESHOLDS, name), abs=0.01), name
    # A closed mouth never reads as parted, and the detector does not read a closed mouth as exactly 0.
    assert max(derived.closed_readings) < SAMPLE_THRESHOLDS.closed < SAMPLE_THRESHOLDS.parted
    assert min(derived.parted_readings) >= SAMPLE_THRESHOLDS.parted - 0.01
    assert min(derived.closed_readings) > 0.0


def test_the_sample_photo_shows_teeth_so_the_old_warps_opening_zero_is_not_closed() -> None:
    images, box = sample()
    frame = np.ascontiguousarray(astronaut_photo().frames[0].image)
    source_opening = landmarks.lip_reading(frame, box)[0]
    assert source_opening > SAMPLE_THRESHOLDS.parted  # her teeth show: "rest" of the photo is parted
    assert landmarks.lip_reading(images.closed, box)[0] <= SAMPLE_THRESHOLDS.closed


# ---- known good -------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "fa"])
def test_a_mouth_driven_by_the_true_timings_passes_every_figure(language: str) -> None:
    score = scored(good_clip(language), utterance(language))
    assert score.bilabial.judged >= 8
    assert score.bilabial.share >= TARGET_BILABIAL
    assert score.labiodental.judged >= 2
    assert score.labiodental.share >= TARGET_LABIODENTAL
    assert score.silence >= TARGET_SILENCE
    lag, correlation = timing(score)
    assert abs(lag) <= 0.02 and timing_passes(lag, correlation)
    if language == "en":  # the Persian sentence has too few spread vowels for a ratio
        assert score.rounding <= TARGET_ROUNDING


def test_lag_is_read_below_a_frame_and_judged_by_bt1359() -> None:
    utt = utterance("en")
    late = scored(good_clip("en", delay_s=0.03), utt)
    lag, correlation = timing(late)
    assert lag == pytest.approx(0.03, abs=0.01)  # under a third of a 40 ms frame
    assert timing_passes(lag, correlation)
    very_late = scored(good_clip("en", delay_s=0.2), utt)
    lag, correlation = timing(very_late)
    assert lag == pytest.approx(0.2, abs=0.01)
    assert not timing_passes(lag, correlation)


# ---- known bad: no figure can be maxed without the timings ----------------------------------------


def test_a_mouth_held_half_open_fails_every_figure() -> None:
    images, _ = sample()
    utt = utterance("en")
    score = scored([reference.posed(images, 0.45)] * frames_of(utt), utt)
    assert score.bilabial.share == 0.0
    assert score.labiodental.share == 0.0
    assert score.silence == 0.0
    assert score.rounding == pytest.approx(1.0, abs=0.02)
    assert not timing_passes(*timing(score))


def test_a_mouth_that_never_opens_fails_every_figure_though_it_is_shut_on_every_bilabial() -> None:
    images, _ = sample()
    utt = utterance("en")
    score = scored([images.closed] * frames_of(utt), utt)
    assert score.bilabial.share == 0.0  # shut, but never parted near them: no closure is seen
    assert score.labiodental.share == 0.0
    assert score.silence == 0.0  # it "rests" in every pause because it never speaks
    assert score.rounding == pytest.approx(1.0, abs=0.02)
    assert not timing_passes(*timing(score))


def shut_on_every_consonant(language: str) -> list[np.ndarray]:
    """The good mouth, except that every consonant (f and v too) is said with the lips shut, as for an m."""
    images, _ = sample()
    utt = utterance(language)
    consonants = (Phonetic.BILABIAL, Phonetic.LABIODENTAL, Phonetic.CONSONANT)
    frames = []
    for index in range(frames_of(utt)):
        moment = (index + 0.5) / FPS
        kind = next((phone.kind for phone in utt.phones if phone.start <= moment < phone.end), None)
        frames.append(images.closed if kind in consonants else reference.reference_frame(images, kind))
    return frames


@pytest.mark.parametrize("language", ["en", "fa"])
def test_a_mouth_that_shuts_on_every_consonant_fails_the_labiodental_figure(language: str) -> None:
    """It closes on every p/b/m and raises the lower lip on every f/v, but an f said as an m shows no teeth."""
    score = scored(shut_on_every_consonant(language), utterance(language))
    assert score.bilabial.share >= TARGET_BILABIAL  # the bilabials alone cannot tell
    assert score.labiodental.judged >= 2
    assert score.labiodental.share == 0.0


@pytest.mark.parametrize("language", ["en", "fa"])
def test_a_loudness_driven_mouth_never_closes_for_bilabials_nor_tucks_for_labiodentals(language: str) -> None:
    utt = utterance(language)
    avatar = astronaut_photo()
    frames = EmbeddedEngine().render(RenderJob(avatar, utt.audio, 0, frames_of(utt)))
    score = scored(frames, utt)
    assert score.bilabial.share <= 0.2
    assert score.labiodental.share <= 0.2  # less open on an f than on its vowels, but open: no teeth on a lip
    assert score.silence < TARGET_SILENCE  # the photo's teeth show in every pause


# ---- pure parts -------------------------------------------------------------------------------------


def test_diphthongs_split_and_unknown_symbols_are_timed_as_other() -> None:
    phones = phones_from_events([(0.0, "b"), (0.1, "ˈoʊ"), (0.3, "ʘ"), (0.4, "1")], speech_end=0.5)
    assert [(p.symbol, p.kind) for p in phones] == [
        ("b", Phonetic.BILABIAL), ("o", Phonetic.ROUNDED), ("ʊ", Phonetic.ROUNDED), ("ʘ", Phonetic.OTHER)]
    assert phones[1].end == pytest.approx(0.1 + 0.6 * 0.2)
    score = score_clip(landmarks.LipTrack(np.zeros(13), np.ones(13), np.zeros(13)), phones, [], FPS,
                       SAMPLE_THRESHOLDS)
    assert score.unknown_phones == 1


def test_pauses_are_silent_runs_of_at_least_150_ms() -> None:
    tone = 0.3 * np.sin(np.arange(ENGINE_RATE) * 2 * np.pi * 200 / ENGINE_RATE).astype(np.float32)
    audio = np.concatenate([np.zeros(3200), tone[:4000], np.zeros(1600), tone[:4000], np.zeros(4800)])
    found = pauses(audio, ENGINE_RATE)  # 200 ms, then a 100 ms gap (a stop, not a pause), then 300 ms
    assert [(round(a, 2), round(b, 2)) for a, b in found] == [(0.0, 0.2), (0.8, 1.1)]


def test_truth_shifted_by_a_lag_moves_later_and_a_still_mouth_correlates_with_nothing() -> None:
    phones = [Phone(0.2, 0.4, "a", Phonetic.OPEN_VOWEL)]
    curve = truth_curve(phones, 1.0)
    on_time, late = frame_truth(curve, 25, FPS, 0.0), frame_truth(curve, 25, FPS, 0.1)
    assert int(np.argmax(late)) - int(np.argmax(on_time)) in (2, 3)
    assert pearson(np.ones(25), on_time) == 0.0
    lag, peak = best_lag(np.array([-0.01, 0.0, 0.01]), np.array([0.5, 0.9, 0.7]))
    assert 0.0 < lag < 0.005 and peak >= 0.9


def test_frame_at_picks_the_frame_whose_middle_is_nearest() -> None:
    assert [frame_at(t, FPS, 10) for t in (0.0, 0.039, 0.061, 1.0)] == [0, 0, 1, 9]
    assert math.isnan(ClipScore().rounding)
