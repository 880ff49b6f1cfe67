"""Text clean-up: invisible-character removal, whitespace collapsing and hazm's Persian normalisation."""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hazm import Normalizer

# Bidi marks and zero-width spaces come along with text copied from Persian web pages and chat apps; they
# are invisible, carry no sound, and would otherwise split or glue words unpredictably.
_INVISIBLE_RE = re.compile("[\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\u00ad]")
_WHITESPACE_RE = re.compile(r"\s+")
_LEADING_SPACE_RE = re.compile(r"^\s+")
_TRAILING_SPACE_RE = re.compile(r"\s+$")
# Short-vowel marks (fatha, damma, kasra), tanvin and sukun are kept: espeak-ng's Persian phonemiser, which the
# piper fa_IR voices use too, reads them, and they are the only way a writer can mark an ezafe it does not add
# by itself ("کتابِ خوب" → ketɑbe xuːb; unmarked "کتاب خوب" → ketɑb xuːb). The shadda is dropped: espeak-ng
# says it as the word "tashdid" (مُحَمَّد → mohamatæʃdid), while its dictionary doubles the consonant anyway.
SHADDA = "\u0651"
# The ezafe written on a final heh: hazm drops the combining hamza of "هٔ" (leaving a bare ه, ezafe lost) but
# keeps the precomposed "ۀ", which espeak-ng reads as -eje: compose it first.
_HEH_WITH_HAMZA_RE = re.compile("\u0647\u0654")


def strip_invisible(text: str) -> str:
    return _INVISIBLE_RE.sub("", text)


def collapse_whitespace(whitespace: str) -> str:
    """One space, or one newline when the gap held a line break (a line break ends a sentence)."""
    return "\n" if "\n" in whitespace else " "


def collapse_spaces(text: str) -> str:
    return _WHITESPACE_RE.sub(lambda gap: collapse_whitespace(gap.group()), text)


@cache
def persian_normalizer() -> Normalizer:
    """hazm's Normalizer takes seconds to build (it loads word and verb lists): build it once per process."""
    from hazm import Normalizer

    return Normalizer(remove_diacritics=False)


@lru_cache(maxsize=4096)
def normalise_persian(text: str) -> str:
    """hazm normalisation (ي/ك → ی/ک, ZWNJ and spacing fixes; short-vowel marks kept, shadda dropped), keeping
    edge whitespace.

    hazm trims the text it is given; callers normalise the stretches between numbers, Latin words and URLs
    separately, so the gap to the neighbouring stretch has to survive. Cached because short stretches such
    as " و " or " درصد " repeat across requests.
    """
    composed = _HEH_WITH_HAMZA_RE.sub("\u06c0", text)
    normalised = str(persian_normalizer().normalize(composed)).replace(SHADDA, "").strip()
    leading = _LEADING_SPACE_RE.match(text)
    trailing = _TRAILING_SPACE_RE.search(text)
    prefix = collapse_whitespace(leading.group()) if leading else ""
    suffix = collapse_whitespace(trailing.group()) if trailing else ""
    if not normalised:
        return prefix or suffix
    return prefix + normalised + suffix
