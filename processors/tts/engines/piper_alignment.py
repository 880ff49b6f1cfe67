"""Phoneme marks from a piper voice's alignments: its phoneme ids and audio samples per id → (sample, IPA).

An alignment-patched piper voice returns, besides the audio, how many samples each input phoneme id lasted
(piper's docs/ALIGNMENTS.md). The ids are turned back into phonemes with the voice config's
``phoneme_id_map``, and the sample counts summed into start offsets. Piper's phonemes are single code points
of espeak-ng's IPA, so symbols that are not sounds of their own are folded into their neighbours to give the
names espeak-ng's library reports (``ɑː``, not ``ɑ`` then ``ː``): a length mark or diacritic joins the
phoneme before it, a stress mark starts the phoneme after it, word spaces and padding extend the phoneme
before them, and punctuation (a pause piper actually makes) is a PAUSE.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

from schemas.speech import MAX_PHONEME_NAME_CHARS, PAUSE, PhonemeMark

PAD, BOS, EOS = "_", "^", "$"  # piper's special symbols (piper/const.py)
STRESS = frozenset("ˈˌ")
TIE = "\u0361"  # t͡ʃ: the next symbol belongs to this phoneme
PUNCTUATION = frozenset("!,.:;?¡¿—…、。，：；？！\"'()-")
_JOINING_LETTERS = frozenset("ːˑʰʲʷˠˤ˞")  # modifier letters that lengthen or colour the phoneme before


def id_names(phoneme_id_map: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """Phoneme id → its symbol; the later ids of a multi-id symbol continue it (mapped to "")."""
    names: dict[int, str] = {}
    for symbol, ids in phoneme_id_map.items():
        for index, phoneme_id in enumerate(ids):
            names.setdefault(int(phoneme_id), symbol if index == 0 else "")
    return names


def alignment_marks(phoneme_ids: Sequence[int], samples_per_id: Sequence[int], names: Mapping[int, str],
                    *, offset: int = 0) -> tuple[PhonemeMark, ...]:
    """Marks for one piper audio chunk, its samples shifted by `offset` (where the chunk starts).

    Ids and counts must pair up (one count per id); ids the map does not know are skipped as padding.
    """
    if len(phoneme_ids) != len(samples_per_id):
        raise ValueError(f"{len(phoneme_ids)} phoneme ids but {len(samples_per_id)} sample counts")
    marks: list[list[int | str]] = []  # [start, name], mutable while symbols are folded in
    at = offset
    onset: int | None = None  # where a stress mark started the next phoneme
    tied = False
    for phoneme_id, count in zip(phoneme_ids, samples_per_id, strict=True):
        symbol = names.get(int(phoneme_id), "")
        start, at = at, at + int(count)
        if symbol in ("", PAD, BOS, EOS) or symbol.isspace():
            continue
        if symbol in STRESS:
            onset = start if onset is None else onset
            continue
        if marks and (tied or _joins_previous(symbol)):
            marks[-1][1] = str(marks[-1][1]) + symbol
            tied = symbol.endswith(TIE)
            continue
        name = PAUSE if symbol in PUNCTUATION else symbol
        if name == PAUSE and marks and marks[-1][1] == PAUSE:
            continue  # ", " then "." : one pause
        marks.append([start if onset is None else onset, name])
        onset, tied = None, symbol.endswith(TIE)
    return tuple((int(start), _clip(str(name))) for start, name in marks)


def _joins_previous(symbol: str) -> bool:
    """A length mark, a modifier letter or a combining diacritic: part of the phoneme before it."""
    return all(character in _JOINING_LETTERS or unicodedata.combining(character) for character in symbol)


def _clip(name: str) -> str:
    return name[:MAX_PHONEME_NAME_CHARS]
