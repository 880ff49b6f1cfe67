"""The truth a clip is scored against: phoneme events → timed phones in phonetic classes, and the pauses.

The classes are the measure's own, written from IPA here and not taken from the engine's viseme table,
so a wrong row in that table shows up as a wrong mouth instead of being graded by itself. Names arrive as
espeak-ng and piper write them (``b``, ``ɑː``, ``oʊ``, ``tʃ``, Persian ``ɑ`` ``e`` ``o`` ``x`` ``q``); a
name with two vowel parts (a diphthong) becomes two phones, the first taking ``FIRST_PART_SHARE`` of the
time. A symbol the tables do not know becomes an ``OTHER`` phone: it is timed and counted, never an error.

Pauses come from the audio, not from the events (espeak-ng marks no pause event at a clause end): runs of
``PAUSE_WINDOW_S`` windows ``PAUSE_BELOW_PEAK_DB`` below the clip's loudest window, at least
``MIN_PAUSE_S`` long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt


class Phonetic(StrEnum):
    BILABIAL = "bilabial"  # p b m: the lips close
    LABIODENTAL = "labiodental"  # f v: the lower lip goes up to the upper teeth
    OPEN_VOWEL = "open_vowel"  # ɑ a æ ʌ ɐ ɒ: the jaw drops furthest
    MID_VOWEL = "mid_vowel"  # ə ɛ ɜ ɚ: half open, neither rounded nor spread
    ROUNDED = "rounded"  # o ɔ u ʊ w: lips rounded and narrowed
    SPREAD = "spread"  # i ɪ e j: lips spread
    CONSONANT = "consonant"  # every other consonant: the lips are free
    OTHER = "other"  # a symbol the table does not know


VOWEL_CLASSES = frozenset({Phonetic.OPEN_VOWEL, Phonetic.MID_VOWEL, Phonetic.ROUNDED, Phonetic.SPREAD})

# Rounded and spread are judged on vowels (and the glides w, j, whose lips are the vowels' u and i).
SYMBOLS: dict[str, Phonetic] = {
    **dict.fromkeys("pbm", Phonetic.BILABIAL),
    **dict.fromkeys("fv", Phonetic.LABIODENTAL),
    **dict.fromkeys("ɑaæʌɐɒ", Phonetic.OPEN_VOWEL),
    **dict.fromkeys("əɛɜɚɝᵻɘ", Phonetic.MID_VOWEL),
    **dict.fromkeys("oɔuʊwɵøʉ", Phonetic.ROUNDED),
    **dict.fromkeys("iɪejɨy", Phonetic.SPREAD),
    **dict.fromkeys("tdnlɾɫszʃʒθðkgɡŋxqɢɣʔhɦχcɟrɹɻʁçɲ", Phonetic.CONSONANT),
}
# Marks that are not sounds: stress, length, syllable and tie marks, espeak-ng's Persian stress digit, and
# the pause mark "_" a TTS ends its speech with (it ends the phone before it and is no phone itself).
NOT_SOUNDS = frozenset("_ˈˌːˑ.-|‖‿͡'0123456789 \u0303\u0329\u032f")
FIRST_PART_SHARE = 0.6

PAUSE_WINDOW_S = 0.01
PAUSE_BELOW_PEAK_DB = 40.0  # espeak-ng and piper pauses are digital or near-digital silence
MIN_PAUSE_S = 0.15  # shorter gaps are stop closures or breaths inside speech, not a pause


@dataclass(frozen=True)
class Phone:
    """One timed sound: ``start``..``end`` in seconds on the clip's clock, its IPA symbol and class."""

    start: float
    end: float
    symbol: str
    kind: Phonetic

    @property
    def middle(self) -> float:
        return 0.5 * (self.start + self.end)


def classify(symbol: str) -> Phonetic:
    return SYMBOLS.get(symbol, Phonetic.OTHER)


def symbols_of(name: str) -> list[str]:
    """The sound symbols of one phoneme name, marks removed (``ˈoʊ`` → ``o``, ``ʊ``; ``tʃ`` → ``t``, ``ʃ``)."""
    return [symbol for symbol in name if symbol not in NOT_SOUNDS]


def phones_from_events(
    events: Sequence[tuple[float, str]], speech_end: float
) -> list[Phone]:
    """Timed phones of (onset in seconds, phoneme name) events; each lasts until the next onset, the last
    until ``speech_end``. An affricate (``tʃ``) stays one consonant; two vowel symbols split the time."""
    phones: list[Phone] = []
    for index, (start, name) in enumerate(events):
        end = events[index + 1][0] if index + 1 < len(events) else max(speech_end, start)
        phones.extend(_split(start, end, symbols_of(name)))
    return phones


def _split(start: float, end: float, symbols: list[str]) -> list[Phone]:
    if not symbols:
        return []
    kinds = [classify(symbol) for symbol in symbols]
    vowels = [index for index, kind in enumerate(kinds) if kind in VOWEL_CLASSES]
    if len(vowels) < 2:
        # One vowel with consonant marks around it (ɑːɹ, tʃ): the vowel (or the first symbol) names it.
        main = vowels[0] if vowels else 0
        return [Phone(start, end, symbols[main], kinds[main])]
    duration = end - start
    shares = [FIRST_PART_SHARE] + [(1.0 - FIRST_PART_SHARE) / (len(vowels) - 1)] * (len(vowels) - 1)
    parts: list[Phone] = []
    at = start
    for share, index in zip(shares, vowels, strict=True):
        parts.append(Phone(at, at + share * duration, symbols[index], kinds[index]))
        at += share * duration
    return parts


def speech_span(audio: npt.ArrayLike, rate: int) -> tuple[float, float]:
    """First and last moment the audio is above the pause level (0, 0 for silence)."""
    loud = _loud_windows(audio, rate)
    if not loud.any():
        return 0.0, 0.0
    indices = np.flatnonzero(loud)
    return float(indices[0] * PAUSE_WINDOW_S), float((indices[-1] + 1) * PAUSE_WINDOW_S)


def pauses(audio: npt.ArrayLike, rate: int) -> list[tuple[float, float]]:
    """(start, end) in seconds of every silent run of at least ``MIN_PAUSE_S``, clip edges included."""
    loud = _loud_windows(audio, rate)
    runs: list[tuple[float, float]] = []
    start: int | None = None
    for index, is_loud in enumerate([*loud.tolist(), True]):
        if not is_loud and start is None:
            start = index
        elif is_loud and start is not None:
            if (index - start) * PAUSE_WINDOW_S >= MIN_PAUSE_S:
                runs.append((start * PAUSE_WINDOW_S, min(index, len(loud)) * PAUSE_WINDOW_S))
            start = None
    return runs


def _loud_windows(audio: npt.ArrayLike, rate: int) -> npt.NDArray[np.bool_]:
    samples = np.asarray(audio, dtype=np.float64).reshape(-1)
    size = max(round(PAUSE_WINDOW_S * rate), 1)
    count = samples.shape[0] // size
    if count == 0:
        return np.zeros(0, dtype=bool)
    windows = samples[: count * size].reshape(count, size)
    level = 10.0 * np.log10(np.maximum(np.mean(windows * windows, axis=1), 1e-12))
    return np.asarray(level > level.max() - PAUSE_BELOW_PEAK_DB)
