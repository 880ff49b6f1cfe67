"""Script classes of characters and script-based language detection (Persian vs English)."""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["fa", "en"]

# Letters only: Arabic-script punctuation (، ؛ ؟ ٪ ٫ ٬) and digits sit in the same Unicode block and must
# not count as Persian evidence, so the block is listed piecewise.
ARABIC_SCRIPT_LETTERS = (
    "\u0621-\u063a\u0641-\u064a\u066e\u066f\u0671-\u06d3\u06d5\u06ee\u06ef\u06fa-\u06fc\u06ff"
    "\ufb50-\ufdfb\ufe70-\ufefc"
)
# Marks, tatweel and joiners live inside Persian words (ZWNJ in می‌خواهم, کتاب‌ها).
ARABIC_SCRIPT_WORD_MARKS = "\u064b-\u065f\u0670\u06d6-\u06ed\u0640\u200c\u200d"
LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
EASTERN_DIGITS = "\u06f0-\u06f9\u0660-\u0669"
ANY_DIGIT = f"0-9{EASTERN_DIGITS}"

_ARABIC_LETTER_RE = re.compile(f"[{ARABIC_SCRIPT_LETTERS}]")
_LATIN_LETTER_RE = re.compile(f"[{LATIN_LETTERS}]")
_EASTERN_DIGIT_RE = re.compile(f"[{EASTERN_DIGITS}]")
_ASCII_DIGIT_RE = re.compile("[0-9]")


def has_arabic_script_letter(text: str) -> bool:
    return _ARABIC_LETTER_RE.search(text) is not None


def has_latin_letter(text: str) -> bool:
    return _LATIN_LETTER_RE.search(text) is not None


def has_eastern_digit(text: str) -> bool:
    return _EASTERN_DIGIT_RE.search(text) is not None


def script_of(text: str) -> Language | None:
    """The script a token is written in, or None for script-neutral tokens (digits, punctuation, emoji)."""
    if has_arabic_script_letter(text):
        return "fa"
    if has_latin_letter(text):
        return "en"
    return None


def detect_language(text: str) -> Language:
    """Persian when Arabic-script letters outnumber Latin ones; with no letters at all, the digits decide.

    Text with no letters and no Persian digits (e.g. "123", "", "!!!") is English: nothing in it says Persian.
    """
    persian_letters = len(_ARABIC_LETTER_RE.findall(text))
    latin_letters = len(_LATIN_LETTER_RE.findall(text))
    if persian_letters or latin_letters:
        return "fa" if persian_letters > latin_letters else "en"
    eastern_digits = len(_EASTERN_DIGIT_RE.findall(text))
    ascii_digits = len(_ASCII_DIGIT_RE.findall(text))
    return "fa" if eastern_digits > ascii_digits else "en"
