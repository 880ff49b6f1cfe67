"""What the TTS engine should say for each token: numbers, dates, times, money, URLs and symbols as words."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from processors.tts.text.abbreviations import expand_abbreviation
from processors.tts.text.language import Language
from processors.tts.text.months import (
    ENGLISH_MONTHS,
    ENGLISH_MONTHS_BY_NAME,
    ENGLISH_SHORT_MONTHS,
    GREGORIAN_MONTHS_IN_PERSIAN,
    SOLAR_HIJRI_MONTHS,
)
from processors.tts.text.numbers import (
    LARGEST_NAMED,
    english_cardinal,
    english_digits,
    english_ordinal,
    english_year,
    persian_cardinal,
    persian_digits,
    persian_fraction_digits,
    persian_ordinal,
)
from processors.tts.text.tokens import Token, TokenKind, url_host
from processors.tts.text.units import split_measure

_TO_ASCII = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩٫−", "01234567890123456789.-", ",٬")
_AMOUNT_RE = re.compile(r"(-?)(\d+)(?:\.(\d+))?")
_DIGITS_RE = re.compile(r"\d+")

# Solar Hijri years are currently in the 1400s; a Persian date with a larger year is Gregorian.
_FIRST_GREGORIAN_YEAR_IN_PERSIAN = 1700


@dataclass(frozen=True, slots=True)
class Currency:
    persian_unit: str
    persian_subunit: str
    english_unit: str
    english_units: str
    english_subunit: str
    english_subunits: str


_CURRENCIES = {
    "$": Currency("دلار", "سنت", "dollar", "dollars", "cent", "cents"),
    "€": Currency("یورو", "سنت", "euro", "euros", "cent", "cents"),
    "£": Currency("پوند", "پنس", "pound", "pounds", "penny", "pence"),
}
_SYMBOL_WORDS: dict[str, dict[Language, str]] = {
    "&": {"fa": "و", "en": "and"},
    "+": {"fa": "به علاوه", "en": "plus"},
    "=": {"fa": "مساوی", "en": "equals"},
    "×": {"fa": "ضرب در", "en": "times"},
    "°": {"fa": "درجه", "en": "degrees"},
    "﷼": {"fa": "ریال", "en": "rials"},
}
_PHONE_GROUP_PAUSE: dict[Language, str] = {"fa": "، ", "en": ", "}
_URL_PUNCTUATION_WORDS = {".": "dot", "-": "dash", "_": "underscore", "+": "plus"}


@dataclass(frozen=True, slots=True)
class Amount:
    """A parsed number: sign, integer digits and the digits after the decimal point (if any)."""

    negative: bool
    integer: str
    fraction: str | None

    @property
    def is_one(self) -> bool:
        return not self.negative and self.fraction is None and int(self.integer) == 1


def to_ascii_digits(text: str) -> str:
    """Persian/Arabic-Indic digits and separators → ASCII; thousands separators dropped."""
    return text.translate(_TO_ASCII)


def parse_amount(text: str) -> Amount:
    match = _AMOUNT_RE.search(to_ascii_digits(text))
    if match is None:
        raise ValueError(f"no number in {text!r}")
    return Amount(match.group(1) == "-", match.group(2), match.group(3))


def _is_digit_string(integer: str) -> bool:
    """Leading zeros (phone numbers, codes) and numbers beyond the scale names are read digit by digit."""
    return (len(integer) > 1 and integer.startswith("0")) or int(integer) > LARGEST_NAMED


def persian_amount(amount: Amount) -> str:
    if _is_digit_string(amount.integer):
        words = persian_digits(amount.integer)
    else:
        words = persian_cardinal(int(amount.integer))
    if amount.fraction is not None:
        words += f" ممیز {persian_fraction_digits(amount.fraction)}"
    return f"منفی {words}" if amount.negative else words


def english_amount(amount: Amount, *, as_year: bool = False) -> str:
    integer = int(amount.integer)
    if _is_digit_string(amount.integer):
        words = english_digits(amount.integer)
    elif as_year and amount.fraction is None and not amount.negative:
        words = english_year(integer)
    else:
        words = english_cardinal(integer)
    if amount.fraction is not None:
        words += f" point {english_digits(amount.fraction)}"
    return f"minus {words}" if amount.negative else words


def say_amount(amount: Amount, language: Language) -> str:
    return persian_amount(amount) if language == "fa" else english_amount(amount)


def _say_number(text: str, language: Language) -> str:
    amount = parse_amount(text)
    if language == "fa":
        return persian_amount(amount)
    # A bare four-digit number in English is far more often a year than a count ("in 1990").
    looks_like_year = len(amount.integer) == 4 and not any(sep in text for sep in ",٬")
    return english_amount(amount, as_year=looks_like_year)


def _say_percent(text: str, language: Language) -> str:
    words = say_amount(parse_amount(text), language)
    return f"{words} درصد" if language == "fa" else f"{words} percent"


def _say_slashed_number(text: str, language: Language) -> str:
    """Persian writes decimals with a slash (۲/۵ درصد); in English the slash is just said."""
    left, right = to_ascii_digits(text).split("/")
    if language == "fa":
        return persian_amount(Amount(False, left, right))
    return f"{english_amount(Amount(False, left, None))} slash {english_amount(Amount(False, right, None))}"


def _say_ordinal(text: str, language: Language) -> str:
    number = int(_DIGITS_RE.findall(text)[0])
    if number > LARGEST_NAMED:
        return english_digits(str(number))
    return persian_ordinal(number) if language == "fa" else english_ordinal(number)


def _date_parts(text: str, language: Language) -> tuple[int, int, int] | None:
    """(year, month, day), or None when the parts cannot be a calendar date."""
    groups = _DIGITS_RE.findall(to_ascii_digits(text))
    numbers = [int(group) for group in groups]
    if len(groups[0]) == 4:
        year, month, day = numbers
    elif language == "fa" or numbers[0] > 12:
        # Persian (and European) order is day first; a first part above 12 can only be a day anyway.
        day, month, year = numbers
    else:
        month, day, year = numbers
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return year, month, day


def _say_date(text: str, language: Language) -> str:
    parts = _date_parts(text, language)
    if parts is None:
        return _say_digit_groups(text, language)
    year, month, day = parts
    if language == "fa":
        is_solar_hijri = year < _FIRST_GREGORIAN_YEAR_IN_PERSIAN
        months = SOLAR_HIJRI_MONTHS if is_solar_hijri else GREGORIAN_MONTHS_IN_PERSIAN
        return f"{persian_ordinal(day)} {months[month - 1]} {persian_cardinal(year)}"
    return f"{ENGLISH_MONTHS[month - 1]} {english_ordinal(day)}, {english_year(year)}"


def _say_digit_groups(text: str, language: Language) -> str:
    """Fallback for number shapes that are not what they look like (a "date" with month 14): each group."""
    return " ".join(say_amount(Amount(False, group, None), language) for group in _DIGITS_RE.findall(
        to_ascii_digits(text)))


def _say_time(text: str, language: Language) -> str:
    ascii_text = to_ascii_digits(text)
    hours, minutes, seconds = ([int(part) for part in _DIGITS_RE.findall(ascii_text)] + [0, 0])[:3]
    if hours > 24 or minutes > 59 or seconds > 59:
        return _say_digit_groups(text, language)
    meridiem = re.search(r"([ap])\.?m\.?$", ascii_text, re.IGNORECASE)
    if language == "fa":
        spoken = _persian_time(hours, minutes, seconds)
        return f"{spoken} {'صبح' if meridiem.group(1).lower() == 'a' else 'بعد از ظهر'}" if meridiem else spoken
    spoken = _english_clock(hours, minutes, seconds, has_meridiem=meridiem is not None)
    return f"{spoken} {meridiem.group(1).lower()} m" if meridiem else spoken


def _persian_time(hours: int, minutes: int, seconds: int) -> str:
    """10:30 → "ده و سی دقیقه"; a whole hour is just the hour."""
    parts = [persian_cardinal(hours)]
    if minutes:
        parts.append(f"{persian_cardinal(minutes)} دقیقه")
    if seconds:
        parts.append(f"{persian_cardinal(seconds)} ثانیه")
    return " و ".join(parts)


def _english_clock(hours: int, minutes: int, seconds: int, *, has_meridiem: bool) -> str:
    """10:30 → "ten thirty", 10:05 → "ten oh five", 10:00 → "ten o'clock"."""
    spoken = english_cardinal(hours)
    if minutes == 0 and not has_meridiem and not seconds:
        spoken += " o'clock"
    elif 0 < minutes < 10:
        spoken += f" oh {english_cardinal(minutes)}"
    elif minutes:
        spoken += f" {english_cardinal(minutes)}"
    if seconds:
        spoken += f" and {english_cardinal(seconds)} second" + ("s" if seconds != 1 else "")
    return spoken


def _say_money(text: str, language: Language) -> str:
    currency = _CURRENCIES[next(symbol for symbol in text if symbol in _CURRENCIES)]
    amount = parse_amount(text)
    scale = re.search(r"[^\W\d_]+$", text)
    if scale:
        words = f"{say_amount(amount, language)} {scale.group()}"
        return f"{words} {currency.persian_unit}" if language == "fa" else f"{words} {currency.english_units}"
    if amount.fraction is not None and len(amount.fraction) == 2:
        return _money_with_subunits(amount, currency, language)
    if language == "fa":
        return f"{persian_amount(amount)} {currency.persian_unit}"
    unit = currency.english_unit if amount.is_one else currency.english_units
    return f"{english_amount(amount)} {unit}"


def _money_with_subunits(amount: Amount, currency: Currency, language: Language) -> str:
    """$5.99 → "five dollars and ninety-nine cents": prices are said in units and subunits."""
    units = Amount(amount.negative, amount.integer, None)
    subunits = int(amount.fraction or "0")
    if language == "fa":
        spoken = f"{persian_amount(units)} {currency.persian_unit}"
        return spoken + (f" و {persian_cardinal(subunits)} {currency.persian_subunit}" if subunits else "")
    spoken = f"{english_amount(units)} {currency.english_unit if units.is_one else currency.english_units}"
    if subunits:
        subunit = currency.english_subunit if subunits == 1 else currency.english_subunits
        spoken += f" and {english_cardinal(subunits)} {subunit}"
    return spoken


def _say_domain_part(part: str) -> str:
    """A host or e-mail user name, dotted and dashed parts said as words, digits as English numbers."""
    spoken = re.sub(r"[.\-_+]", lambda mark: f" {_URL_PUNCTUATION_WORDS[mark.group()]} ", part)
    spoken = _DIGITS_RE.sub(lambda digits: f" {english_amount(Amount(False, digits.group(), None))} ", spoken)
    return " ".join(spoken.split())


def _say_url(text: str, language: Language) -> str:
    """Only the domain is said ("https://www.example.com/a?b" → "example dot com"): paths are noise aloud."""
    return _say_domain_part(url_host(text))


def _say_email(text: str, language: Language) -> str:
    user, _, domain = text.partition("@")
    return f"{_say_domain_part(user)} at {_say_domain_part(domain)}"


def _say_phone(text: str, language: Language) -> str:
    """Digit by digit, with a short pause between the groups as they were written."""
    groups = [_say_digit_string(group, language) for group in re.split(r"[ -]", to_ascii_digits(text.lstrip("+")))]
    plus = ("مثبت " if language == "fa" else "plus ") if text.startswith("+") else ""
    return plus + _PHONE_GROUP_PAUSE[language].join(groups)


def _say_digit_string(digits: str, language: Language) -> str:
    return persian_digits(digits) if language == "fa" else english_digits(digits)


def _say_version(text: str, language: Language) -> str:
    """"2.0.1" and IP addresses: each part as a number, "dot" between (never a decimal point)."""
    dot = " نقطه " if language == "fa" else " dot "
    return dot.join(say_amount(Amount(False, part, None), language) for part in to_ascii_digits(text).split("."))


def _say_measure(text: str, language: Language) -> str:
    number, unit = split_measure(text)
    amount = parse_amount(number)
    if language == "fa":
        return f"{persian_amount(amount)} {unit.persian}"
    return f"{english_amount(amount)} {unit.english if amount.is_one else unit.english_plural}"


def _say_decade(text: str, language: Language) -> str:
    """"1990s" → "nineteen nineties", "'80s" → "eighties"."""
    digits = _DIGITS_RE.findall(text)[0]
    if language == "fa":
        return persian_cardinal(int(digits))
    words = english_year(int(digits)) if len(digits) == 4 else english_cardinal(int(digits))
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _say_persian_ordinal(text: str, language: Language) -> str:
    """"۲۱ام" → "بیست و یکم", "۳امین" / "۳مین" → "سومین"."""
    number = int(to_ascii_digits(_DIGITS_RE.findall(to_ascii_digits(text))[0]))
    if number > LARGEST_NAMED:
        return _say_digit_string(str(number), language)
    if language == "en":
        return english_ordinal(number)
    return persian_ordinal(number) + ("ین" if text.endswith("ین") else "")


def _say_range(text: str, language: Language) -> str:
    return "تا" if language == "fa" else "to"


def _say_day(text: str, language: Language) -> str:
    day = int(to_ascii_digits(text))
    return persian_ordinal(day) if language == "fa" else english_ordinal(day)


def _say_day_before_month(text: str, language: Language) -> str:
    day = int(to_ascii_digits(text))
    return persian_ordinal(day) if language == "fa" else f"the {english_ordinal(day)} of"


def _say_month(text: str, language: Language) -> str:
    return ENGLISH_MONTHS[ENGLISH_SHORT_MONTHS[text]]


_MONTH_NAME_RE = re.compile(r"[A-Z][a-z]+\.?")  # capitalised: the "rd" of "3rd" is no month


def _say_month_date(text: str, language: Language) -> str:
    """"Jan 5, 2024" → "پنجم ژانویه دو هزار و بیست و چهار" / "January fifth, twenty twenty-four"; "5 January"
    → "پنجم ژانویه" / "the fifth of January". Persian names the Gregorian month and drops the Latin comma."""
    name = _MONTH_NAME_RE.search(text)
    assert name is not None, text  # a MONTH_DATE token always holds its month
    month = ENGLISH_MONTHS_BY_NAME[name.group()]
    numbers = [int(group) for group in _DIGITS_RE.findall(to_ascii_digits(text))]
    day, year = numbers[0], numbers[1] if len(numbers) > 1 else None
    if language == "fa":
        said = f"{persian_ordinal(day)} {GREGORIAN_MONTHS_IN_PERSIAN[month]}"
        return said if year is None else f"{said} {persian_cardinal(year)}"
    if name.start() > 0:  # the day written first
        return f"the {english_ordinal(day)} of {ENGLISH_MONTHS[month]}"
    said = f"{ENGLISH_MONTHS[month]} {english_ordinal(day)}"
    return said if year is None else f"{said}, {english_year(year)}"


def _say_punctuation(text: str, language: Language) -> str:
    words = _SYMBOL_WORDS.get(text)
    # Spaces around: a symbol written without them ("C++", "3+4") is still said as separate words
    return f" {words[language]} " if words else text


def _say_as_written(text: str, language: Language) -> str:
    return text


def _say_nothing(text: str, language: Language) -> str:
    return ""


def _say_space(text: str, language: Language) -> str:
    return " "


def _say_abbreviation(text: str, language: Language) -> str:
    return expand_abbreviation(text)


_SPEAKERS: dict[TokenKind, Callable[[str, Language], str]] = {
    TokenKind.WORD: _say_as_written,
    TokenKind.ABBREVIATION: _say_abbreviation,
    TokenKind.URL: _say_url,
    TokenKind.EMAIL: _say_email,
    TokenKind.PHONE: _say_phone,
    TokenKind.VERSION: _say_version,
    TokenKind.MEASURE: _say_measure,
    TokenKind.DECADE: _say_decade,
    TokenKind.PERSIAN_ORDINAL: _say_persian_ordinal,
    TokenKind.DAY: _say_day,
    TokenKind.DAY_BEFORE_MONTH: _say_day_before_month,
    TokenKind.MONTH: _say_month,
    TokenKind.MONTH_DATE: _say_month_date,
    TokenKind.RANGE: _say_range,
    TokenKind.DATE: _say_date,
    TokenKind.TIME: _say_time,
    TokenKind.MONEY: _say_money,
    TokenKind.PERCENT: _say_percent,
    TokenKind.ORDINAL: _say_ordinal,
    TokenKind.SLASHED_NUMBER: _say_slashed_number,
    TokenKind.NUMBER: _say_number,
    TokenKind.EMOJI: _say_nothing,
    TokenKind.PUNCTUATION: _say_punctuation,
    TokenKind.SPACE: _say_space,
}


def speak(token: Token, language: Language) -> str:
    """The words for one token in the language of the run it belongs to."""
    return _SPEAKERS[token.kind](token.text, language)


_GAPLESS_KINDS = frozenset({TokenKind.SPACE, TokenKind.PUNCTUATION, TokenKind.EMOJI})


def needs_spoken_gap(previous: Token | None, token: Token) -> bool:
    """"۹متر" or "GPT4" are written without a space but are said as two words ("نه متر", "GPT four")."""
    return previous is not None and previous.kind not in _GAPLESS_KINDS and token.kind not in _GAPLESS_KINDS


def is_speakable(spoken: str) -> bool:
    """Whether the engine has anything to pronounce: a letter or digit, not just punctuation or spaces."""
    return any(character.isalnum() for character in spoken)
