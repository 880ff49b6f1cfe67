"""What the Persian voices hear of ezafe and short vowels (docs/speech.md): espeak-ng's Persian phonemiser, which
the piper fa_IR voices use too, adds no ezafe by itself; a kasra the writer puts there is kept and spoken."""

from __future__ import annotations

import pytest

from processors.tts.engines.espeak import EspeakEngine
from processors.tts.text import plan_speech


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


def phonemes(espeak: EspeakEngine, text: str) -> list[str]:
    [piece] = plan_speech(text, "fa")
    return [name for _, name in espeak.synthesize(piece.spoken, "fa").phonemes if name != "_"]


@pytest.mark.parametrize(("unmarked", "marked"), [
    ("کتاب خوب", "کتابِ خوب"),  # ketɑb-e xub, a good book
    ("رنگ آسمان", "رنگِ آسمان"),  # rang-e ɑsemɑn, the colour of the sky
    ("دانشگاه تهران", "دانشگاهِ تهران"),  # dɑneʃgɑh-e tehrɑn, the University of Tehran
])
def test_an_ezafe_is_spoken_only_when_the_writer_marks_it_with_a_kasra(espeak: EspeakEngine, unmarked: str,
                                                                        marked: str) -> None:
    plain, with_ezafe = phonemes(espeak, unmarked), phonemes(espeak, marked)
    head = len(phonemes(espeak, unmarked.split()[0]))
    assert with_ezafe == [*plain[:head], "e", *plain[head:]], "the same words, with the ezafe's e between them"


def test_an_ezafe_written_as_a_letter_is_spoken_without_marks(espeak: EspeakEngine) -> None:
    assert phonemes(espeak, "خانه‌ی من") == ["x", "ɑ", "n", "e", "j", "e", "m", "a", "n"]  # xɑne-ye man, my house
    for hamza in ("مدرسهٔ ما", "مدرسۀ ما"):  # madrese-ye mɑ, our school: heh + hamza, decomposed or not
        assert phonemes(espeak, hamza)[-4:-2] == ["j", "e"], hamza
    assert phonemes(espeak, "کتاب‌های خوب")[-6:] == ["ɑ", "j", "e", "x", "u", "b"]  # ketɑbhɑ-ye xub, good books


def test_a_short_vowel_mark_decides_a_word_the_dictionary_reads_otherwise(espeak: EspeakEngine) -> None:
    assert phonemes(espeak, "گل") == ["ɡ", "o", "l"]  # gol, flower: the dictionary's reading
    assert phonemes(espeak, "گِل") == ["ɡ", "e", "l"]  # gel, mud: only with the kasra
