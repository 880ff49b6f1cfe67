"""The viseme set the embedded engine articulates, and the table from IPA phonemes (English and Persian) to it.

A viseme is a mouth shape a viewer can tell apart; several phonemes share one (p, b and m all press the
lips together). The names arriving here are IPA as espeak-ng (``espeakINITIALIZE_PHONEME_IPA``) and
piper's phonemiser write them, for English (``en-us``) and Persian (``fa``) alike: Persian's phonemes are a
subset of the same symbols (``ɑ`` for آ, ``a`` for َ, ``e`` for ِ, ``o`` for ُ, ``x`` for خ, ``q`` for ق/غ,
``ʔ`` for ع/ء). The full table is written out in docs/engines.md ("Visemes").

Each shape is a target pose: ``opening`` 0..1 (the gap between the lips, closed to the widest; the
renderer turns it into a jaw drop or a closing movement for each avatar frame), ``width`` -1 (rounded,
protruded) .. +1 (spread), ``press`` 0..1 (lips brought together until they meet, covering any teeth the
photo shows), ``tuck`` 0..1 (the lower lip raised against the upper teeth), and ``dominance``: how
strongly the shape resists its neighbours (a weak ``h`` or ``k`` takes the shape of the vowel beside it;
``p`` never gives way).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Viseme(StrEnum):
    REST = "rest"  # silence: lips closed, relaxed
    CLOSED = "closed"  # p b m: lips pressed
    LABIODENTAL = "labiodental"  # f v: lower lip to the upper teeth
    DENTAL = "dental"  # θ ð: tongue between the teeth, a small opening
    ALVEOLAR = "alveolar"  # t d n l ɾ: teeth close, tongue behind them
    SIBILANT = "sibilant"  # s z: teeth almost together, lips a little spread
    POSTALVEOLAR = "postalveolar"  # ʃ ʒ tʃ dʒ: lips pushed forward
    VELAR = "velar"  # k g ŋ x q ɣ ʔ h: jaw a little open, lips free
    RHOTIC = "rhotic"  # r ɹ ɚ: slightly rounded
    OPEN = "open"  # ɑ ɒ (Persian آ): the widest opening
    OPEN_MID = "open_mid"  # a æ ʌ ɐ (Persian َ): open, less than ɑ
    MID = "mid"  # e ɛ ə: half open, a little spread
    SPREAD = "spread"  # i ɪ j: lips spread, small opening
    ROUNDED = "rounded"  # o ɔ: rounded, half open
    PROTRUDED = "protruded"  # u ʊ w: tightly rounded and pushed forward


@dataclass(frozen=True)
class Shape:
    opening: float
    width: float
    press: float = 0.0
    tuck: float = 0.0
    dominance: float = 1.0


SHAPES: dict[Viseme, Shape] = {
    Viseme.REST: Shape(0.0, 0.0, press=1.0, dominance=0.6),
    Viseme.CLOSED: Shape(0.0, 0.0, press=1.0, dominance=1.0),
    Viseme.LABIODENTAL: Shape(0.12, 0.15, tuck=1.0, dominance=1.0),
    Viseme.DENTAL: Shape(0.24, 0.1, dominance=0.7),
    Viseme.ALVEOLAR: Shape(0.22, 0.1, dominance=0.45),
    Viseme.SIBILANT: Shape(0.12, 0.3, dominance=0.7),
    Viseme.POSTALVEOLAR: Shape(0.2, -0.55, dominance=0.8),
    Viseme.VELAR: Shape(0.3, 0.0, dominance=0.25),
    Viseme.RHOTIC: Shape(0.2, -0.4, dominance=0.5),
    Viseme.OPEN: Shape(1.0, 0.05),
    Viseme.OPEN_MID: Shape(0.8, 0.1),
    Viseme.MID: Shape(0.48, 0.45, dominance=0.8),
    Viseme.SPREAD: Shape(0.28, 0.95),
    Viseme.ROUNDED: Shape(0.5, -0.85),
    Viseme.PROTRUDED: Shape(0.28, -1.25),
}

PAUSE = "_"  # the name a TTS gives the silence after its speech (espeak-ng and piper write it too)

# One IPA unit (a phoneme written as one or two symbols) → its viseme. English and Persian share rows.
PHONEME_VISEMES: dict[str, Viseme] = {
    PAUSE: Viseme.REST,
    **dict.fromkeys(("p", "b", "m", "ɱ"), Viseme.CLOSED),
    **dict.fromkeys(("f", "v"), Viseme.LABIODENTAL),
    **dict.fromkeys(("θ", "ð"), Viseme.DENTAL),
    **dict.fromkeys(("t", "d", "n", "l", "ɾ", "ɫ", "ʔn"), Viseme.ALVEOLAR),
    **dict.fromkeys(("s", "z"), Viseme.SIBILANT),
    **dict.fromkeys(("ʃ", "ʒ", "tʃ", "dʒ"), Viseme.POSTALVEOLAR),
    **dict.fromkeys(("k", "g", "ɡ", "ŋ", "x", "q", "ɢ", "ɣ", "ʔ", "h", "ɦ", "χ", "c", "ɟ"), Viseme.VELAR),
    **dict.fromkeys(("r", "ɹ", "ɚ", "ɝ", "ɜ", "ɻ"), Viseme.RHOTIC),
    **dict.fromkeys(("ɑ", "ɒ", "ɔa"), Viseme.OPEN),
    **dict.fromkeys(("a", "æ", "ʌ", "ɐ", "ᵻ"), Viseme.OPEN_MID),
    **dict.fromkeys(("e", "ɛ", "ə", "ɘ", "ɵ"), Viseme.MID),
    **dict.fromkeys(("i", "ɪ", "j", "y", "ɨ"), Viseme.SPREAD),
    **dict.fromkeys(("o", "ɔ", "ø", "œ"), Viseme.ROUNDED),
    **dict.fromkeys(("u", "ʊ", "w", "ʍ", "ʉ", "ɯ"), Viseme.PROTRUDED),
}

# Marks that are not sounds: stress, length (also espeak-ng's ASCII ":"), palatalised / aspirated / labialised
# modifiers (the consonant they follow is the sound), syllable and tie marks, and espeak-ng's Persian "1".
_NOT_SOUNDS = frozenset("ˈˌːˑ:ʲʰʷ .-|‖‿͡1234567890'\u0303\u0329\u032f")
_LONGEST_UNIT = max(len(unit) for unit in PHONEME_VISEMES)
LAST_PHONEME_S = 0.1  # how long a phoneme with no onset after it is taken to last
FIRST_PART_SHARE = 0.6  # of a diphthong ("aɪ") or a vowel + r ("ʊɹ"): the first part is the longer


class UnknownPhonemes:
    """Counts the phoneme names the table does not know (they are spoken as rest); thread-safe.

    ``on_add`` hears each one too (the processor's metric); the counts here are for logs and tests.
    """

    def __init__(self, on_add: Callable[[str], None] | None = None) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._on_add = on_add

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
        if self._on_add is not None:
            self._on_add(name)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


unknown_phonemes = UnknownPhonemes()  # the process's count; exported as a metric by the lip-sync processor


def visemes_of(phoneme: str, unknown: UnknownPhonemes = unknown_phonemes) -> list[tuple[float, Viseme]]:
    """The visemes one phoneme name is said with, each with its share of the phoneme's time.

    Most names are one unit (``b`` → closed). Diphthongs and r-coloured vowels arrive as one name
    (``aɪ``, ``oʊ``, ``ʊɹ``) and become two shapes in order. A name with nothing the table knows is said
    as rest and counted in ``unknown``; a name that is only marks (stress, a digit) is no sound at all
    and yields nothing.
    """
    units = _units(phoneme, unknown)
    if not units:
        return []
    if len(units) == 1:
        return [(1.0, units[0])]
    rest_share = (1.0 - FIRST_PART_SHARE) / (len(units) - 1)
    return [(FIRST_PART_SHARE if index == 0 else rest_share, viseme) for index, viseme in enumerate(units)]


def _units(phoneme: str, unknown: UnknownPhonemes) -> list[Viseme]:
    """Longest-match split of a name into table units; unknown symbols become rest (and are counted)."""
    text = "".join(symbol for symbol in phoneme if symbol not in _NOT_SOUNDS)
    units: list[Viseme] = []
    position = 0
    while position < len(text):
        for length in range(min(_LONGEST_UNIT, len(text) - position), 0, -1):
            viseme = PHONEME_VISEMES.get(text[position : position + length])
            if viseme is not None:
                units.append(viseme)
                position += length
                break
        else:
            unknown.add(text[position])
            units.append(Viseme.REST)
            position += 1
    return units


def viseme_onsets(phonemes: Sequence[tuple[float, str]], unknown: UnknownPhonemes = unknown_phonemes,
                  ) -> tuple[tuple[float, Viseme], ...]:
    """Phoneme onsets (seconds, IPA name) → viseme onsets, a two-part phoneme split at its share of the
    time until the next onset. The last phoneme should be the pause after the speech (``PAUSE``)."""
    onsets: list[tuple[float, Viseme]] = []
    for index, (start, name) in enumerate(phonemes):
        parts = visemes_of(name, unknown)
        if not parts:
            continue
        following = phonemes[index + 1][0] if index + 1 < len(phonemes) else start + LAST_PHONEME_S
        at = start
        for share, viseme in parts:
            if not onsets or onsets[-1][1] is not viseme:
                onsets.append((at, viseme))
            at += share * max(following - start, 0.0)
    return tuple(onsets)
