"""Numbers as words in Persian and English: cardinals, ordinals, decimals, digit strings and English years."""

from __future__ import annotations

# Above this the scale names run out (تریلیون / trillion); longer digit strings are read digit by digit.
LARGEST_NAMED = 10**15 - 1

_PERSIAN_DIGIT_WORDS = ("صفر", "یک", "دو", "سه", "چهار", "پنج", "شش", "هفت", "هشت", "نه")
_PERSIAN_BELOW_TWENTY = (
    *_PERSIAN_DIGIT_WORDS,
    "ده", "یازده", "دوازده", "سیزده", "چهارده", "پانزده", "شانزده", "هفده", "هجده", "نوزده",
)
_PERSIAN_TENS = ("", "", "بیست", "سی", "چهل", "پنجاه", "شصت", "هفتاد", "هشتاد", "نود")
_PERSIAN_HUNDREDS = ("", "صد", "دویست", "سیصد", "چهارصد", "پانصد", "ششصد", "هفتصد", "هشتصد", "نهصد")
# Iranian usage: 10⁹ is میلیارد, not بیلیون.
_PERSIAN_SCALES = ("", "هزار", "میلیون", "میلیارد", "تریلیون")
PERSIAN_AND = " و "

_ENGLISH_BELOW_TWENTY = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_ENGLISH_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ENGLISH_SCALES = ("", "thousand", "million", "billion", "trillion")
_ENGLISH_IRREGULAR_ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


def _check_nameable(number: int) -> None:
    if not 0 <= number <= LARGEST_NAMED:
        raise ValueError(f"{number} is outside 0..{LARGEST_NAMED}; read it digit by digit instead")


def _thousands_groups(number: int) -> list[int]:
    """Three-digit groups, most significant first: 1_234_567 → [1, 234, 567]."""
    groups: list[int] = []
    while number:
        number, group = divmod(number, 1000)
        groups.append(group)
    return groups[::-1]


def _persian_below_thousand(number: int) -> str:
    hundreds, rest = divmod(number, 100)
    parts = [_PERSIAN_HUNDREDS[hundreds]] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        parts.append(_PERSIAN_TENS[tens])
        if ones:
            parts.append(_PERSIAN_DIGIT_WORDS[ones])
    elif rest:
        parts.append(_PERSIAN_BELOW_TWENTY[rest])
    return PERSIAN_AND.join(parts)


def persian_cardinal(number: int) -> str:
    """1403 → "هزار و چهارصد و سه"; every group and part is joined by "و" as Persian reads it."""
    _check_nameable(number)
    if number == 0:
        return _PERSIAN_DIGIT_WORDS[0]
    groups = _thousands_groups(number)
    parts: list[str] = []
    for position, group in enumerate(groups):
        scale = _PERSIAN_SCALES[len(groups) - 1 - position]
        if group == 0:
            continue
        if scale == "هزار" and group == 1:
            parts.append(scale)  # "هزار", never "یک هزار"
        else:
            parts.append(f"{_persian_below_thousand(group)} {scale}".strip())
    return PERSIAN_AND.join(parts)


def persian_ordinal(number: int) -> str:
    """12 → "دوازدهم", 3 → "سوم", 30 → "سی‌ام"."""
    cardinal = persian_cardinal(number)
    if cardinal.endswith("سه"):
        return cardinal[: -len("سه")] + "سوم"
    if cardinal.endswith("ی"):
        return cardinal + "\u200cام"
    return cardinal + "م"


def persian_digits(digits: str) -> str:
    """Digit by digit, for phone numbers and codes: "0912" → "صفر نه یک دو"."""
    return " ".join(_PERSIAN_DIGIT_WORDS[int(digit)] for digit in digits)


def persian_fraction_digits(digits: str) -> str:
    """After ممیز: each leading zero is said, the rest is read as a whole number ("05" → "صفر پنج")."""
    significant = digits.lstrip("0")
    zeros = [_PERSIAN_DIGIT_WORDS[0]] * (len(digits) - len(significant))
    if len(significant) > len(str(LARGEST_NAMED)):
        return " ".join([*zeros, persian_digits(significant)])
    return " ".join([*zeros, persian_cardinal(int(significant))] if significant else zeros)


def _english_below_thousand(number: int) -> str:
    hundreds, rest = divmod(number, 100)
    parts = [f"{_ENGLISH_BELOW_TWENTY[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        parts.append(_ENGLISH_TENS[tens] + (f"-{_ENGLISH_BELOW_TWENTY[ones]}" if ones else ""))
    elif rest:
        parts.append(_ENGLISH_BELOW_TWENTY[rest])
    return " ".join(parts)


def english_cardinal(number: int) -> str:
    """American style, no "and": 123 → "one hundred twenty-three"."""
    _check_nameable(number)
    if number == 0:
        return _ENGLISH_BELOW_TWENTY[0]
    groups = _thousands_groups(number)
    parts = [
        f"{_english_below_thousand(group)} {_ENGLISH_SCALES[len(groups) - 1 - position]}".strip()
        for position, group in enumerate(groups)
        if group
    ]
    return " ".join(parts)


def _english_ordinal_word(word: str) -> str:
    if word in _ENGLISH_IRREGULAR_ORDINALS:
        return _ENGLISH_IRREGULAR_ORDINALS[word]
    if word.endswith("y"):
        return word[:-1] + "ieth"
    return word + "th"


def english_ordinal(number: int) -> str:
    """21 → "twenty-first", 100 → "one hundredth"."""
    cardinal = english_cardinal(number)
    head, separator, last = max(cardinal.rpartition(" "), cardinal.rpartition("-"), key=lambda p: len(p[0]))
    return head + separator + _english_ordinal_word(last)


def english_year(year: int) -> str:
    """Years are read in pairs where English does: 1990 → "nineteen ninety", 1905 → "nineteen oh five".

    2000-2009 and years outside 1100-2099 are read as plain numbers ("two thousand five").
    """
    if not (1100 <= year <= 1999 or 2010 <= year <= 2099):
        return english_cardinal(year)
    century, rest = divmod(year, 100)
    if rest == 0:
        return f"{english_cardinal(century)} hundred"
    if rest < 10:
        return f"{english_cardinal(century)} oh {english_cardinal(rest)}"
    return f"{english_cardinal(century)} {english_cardinal(rest)}"


def english_digits(digits: str) -> str:
    return " ".join(_ENGLISH_BELOW_TWENTY[int(digit)] for digit in digits)
