"""Viseme onsets → per-frame mouth poses: closures held, coarticulation, rest in pauses, chunk-independence."""

from __future__ import annotations

import numpy as np
import pytest

from processors.lipsync.articulation import LEAD_S, articulate
from processors.lipsync.visemes import PAUSE, UnknownPhonemes, Viseme, viseme_onsets, visemes_of

FPS = 25


def onsets(*marks: tuple[float, str]) -> tuple[tuple[float, Viseme], ...]:
    return viseme_onsets(list(marks), UnknownPhonemes())


def at(times: list[float], track_onsets: tuple[tuple[float, Viseme], ...]) -> dict[str, np.ndarray]:
    """The pose at each time (a frame whose middle is there)."""
    track = articulate(track_onsets, np.asarray(times) - LEAD_S)
    return {"opening": track.opening, "width": track.width, "press": track.press, "tuck": track.tuck}


def test_a_short_plosive_is_fully_closed_through_its_middle() -> None:
    # "ɑ p ɑ" with a 34 ms p, as espeak-ng says it at 165 wpm
    marks = onsets((0.0, "ɑ"), (0.2, "p"), (0.234, "ɑ"), (0.45, PAUSE))
    pose = at([0.2, 0.217, 0.234], marks)
    assert np.all(pose["press"] == 1.0)
    assert np.all(pose["opening"] == 0.0)


def test_lips_start_closing_before_the_plosive_and_part_after_its_burst() -> None:
    marks = onsets((0.0, "ɑ"), (0.3, "b"), (0.36, "ɑ"), (0.7, PAUSE))
    pose = at([0.3 - 0.12, 0.3 - 0.03, 0.3, 0.36 + 0.1], marks)
    assert pose["press"][0] < 0.05, "the closing movement starts at most 120 ms before the onset"
    assert pose["press"][1] > 0.3, "and is under way 30 ms before it (90 ms before the burst)"
    assert pose["press"][2] == 1.0, "the lips are shut when the closure begins"
    assert pose["press"][3] < 0.05, "they part within 100 ms of the burst"


def test_an_open_vowel_between_consonants_reaches_most_of_its_opening() -> None:
    marks = onsets((0.0, "t"), (0.08, "ɑː"), (0.2, "k"), (0.3, PAUSE))
    assert at([0.14], marks)["opening"][0] > 0.7


def test_a_weak_consonant_takes_the_shape_of_its_vowels() -> None:
    marks = onsets((0.0, "u"), (0.15, "h"), (0.2, "u"), (0.4, PAUSE))
    assert at([0.175], marks)["width"][0] < -0.6, "h between two u's stays rounded"


def test_rounded_vowels_are_narrower_than_spread_ones() -> None:
    rounded = at([0.1], onsets((0.0, "uː"), (0.2, PAUSE)))["width"][0]
    spread = at([0.1], onsets((0.0, "iː"), (0.2, PAUSE)))["width"][0]
    assert rounded < -0.5 < 0.5 < spread


def test_labiodentals_tuck_the_lower_lip() -> None:
    marks = onsets((0.0, "ɑ"), (0.2, "f"), (0.28, "ɑ"), (0.5, PAUSE))
    pose = at([0.24, 0.1], marks)
    assert pose["tuck"][0] > 0.9
    assert pose["tuck"][1] < 0.05


def test_the_mouth_rests_closed_in_pauses_and_before_speech() -> None:
    marks = onsets((0.3, "ɑ"), (0.5, PAUSE), (1.0, "ɑ"), (1.2, PAUSE))
    pose = at([0.0, 0.1, 0.7, 0.8, 1.6], marks)
    assert np.all(pose["opening"] == 0.0)
    assert np.all(pose["press"] == 1.0)


def test_a_transition_takes_between_40_and_80_ms() -> None:
    marks = onsets((0.0, "ɑ"), (0.5, "iː"), (1.0, PAUSE))
    times = np.arange(0.3, 0.7, 0.001)
    width = at(list(times), marks)["width"]
    low, high = width.min(), width.max()
    rising = times[(width > low + 0.1 * (high - low)) & (width < low + 0.9 * (high - low))]
    assert 0.04 <= rising.max() - rising.min() <= 0.08


def test_the_mouth_leads_the_sound() -> None:
    marks = onsets((0.0, "ɑ"), (0.5, "iː"), (1.0, PAUSE))
    frame_middles = np.arange(0.3, 0.7, 0.001)
    width = articulate(marks, frame_middles).width
    halfway = frame_middles[np.argmin(np.abs(width - 0.5 * (width.min() + width.max())))]
    assert 0.5 - 0.045 <= halfway < 0.5


def test_a_request_rendered_in_chunks_gets_the_same_poses_as_in_one_job() -> None:
    rng = np.random.default_rng(7)
    names = ["p", "ɑ", "m", "i", "f", "u", "t", "a", "b", "o", "s", "e"]
    starts = np.cumsum(rng.uniform(0.03, 0.16, 60))
    marks = onsets(*((float(t), str(rng.choice(names))) for t in starts), (float(starts[-1] + 0.1), PAUSE))
    n_frames = int(starts[-1] * FPS) + 10
    whole = articulate(marks, (np.arange(n_frames) + 0.5) / FPS)
    for first in range(0, n_frames, 12):
        count = min(12, n_frames - first)
        origin = first / FPS
        shifted = tuple((t - origin, v) for t, v in marks)
        chunk = articulate(shifted, (np.arange(count) + 0.5) / FPS)
        for name in ("opening", "width", "press", "tuck"):
            np.testing.assert_array_equal(getattr(chunk, name), getattr(whole, name)[first : first + count])


def test_loudness_scales_the_opening_only_a_little() -> None:
    marks = onsets((0.0, "ɑ"), (0.4, PAUSE))
    quiet = articulate(marks, [0.2], loudness=[-45.0]).opening[0]
    loud = articulate(marks, [0.2], loudness=[-20.0]).opening[0]
    assert 0.7 <= quiet / loud < 1.0


@pytest.mark.parametrize(("name", "viseme"), [
    ("ɑ", Viseme.OPEN), ("a", Viseme.OPEN_MID), ("e", Viseme.MID), ("o", Viseme.ROUNDED), ("u", Viseme.PROTRUDED),
    ("i", Viseme.SPREAD), ("x", Viseme.VELAR), ("q", Viseme.VELAR), ("ʔ", Viseme.VELAR), ("ʒ", Viseme.POSTALVEOLAR),
    ("tʃ", Viseme.POSTALVEOLAR), ("m", Viseme.CLOSED), ("v", Viseme.LABIODENTAL), ("ɾ", Viseme.ALVEOLAR),
])
def test_espeak_ngs_persian_phonemes_map_to_the_shared_set(name: str, viseme: Viseme) -> None:
    assert visemes_of(name, UnknownPhonemes()) == [(1.0, viseme)]


def test_a_diphthong_becomes_two_shapes_in_order() -> None:
    assert [v for _, v in visemes_of("aɪ", UnknownPhonemes())] == [Viseme.OPEN_MID, Viseme.SPREAD]
    marks = onsets((0.0, "aɪ"), (0.2, PAUSE))
    assert marks[1] == pytest.approx((0.12, Viseme.SPREAD))


def test_an_unknown_phoneme_is_said_as_rest_and_counted_never_an_error() -> None:
    unknown = UnknownPhonemes()
    assert visemes_of("☃", unknown) == [(1.0, Viseme.REST)]
    assert unknown.snapshot() == {"☃": 1}


def test_stress_and_length_marks_are_not_sounds() -> None:
    unknown = UnknownPhonemes()
    assert visemes_of("ˈɑː", unknown) == [(1.0, Viseme.OPEN)]
    assert visemes_of("1", unknown) == []
    assert unknown.total == 0
