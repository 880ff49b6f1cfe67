"""Splits raw text into typed tokens (words, numbers, dates, URLs, emoji…); Persian stretches normalised."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto

from processors.tts.text.abbreviations import ABBREVIATION_PATTERN, PERSIAN_ABBREVIATION_PATTERN
from processors.tts.text.language import (
    ANY_DIGIT,
    ARABIC_SCRIPT_LETTERS,
    ARABIC_SCRIPT_WORD_MARKS,
    LATIN_LETTERS,
    Language,
    has_arabic_script_letter,
    script_of,
)
from processors.tts.text.months import (
    AMBIGUOUS_PERSIAN_MONTHS,
    ENGLISH_MONTHS_BY_NAME,
    ENGLISH_SHORT_MONTHS,
    PERSIAN_DATE_CUES,
    PERSIAN_MONTHS,
)
from processors.tts.text.normalise import collapse_spaces, normalise_persian, strip_invisible
from processors.tts.text.units import UNIT_PATTERN


class TokenKind(Enum):
    WORD = auto()
    ABBREVIATION = auto()
    URL = auto()
    EMAIL = auto()
    PHONE = auto()
    DATE = auto()
    TIME = auto()
    VERSION = auto()
    MONEY = auto()
    PERCENT = auto()
    MEASURE = auto()
    DECADE = auto()
    ORDINAL = auto()
    PERSIAN_ORDINAL = auto()
    DAY = auto()  # a number that is the day of a month named next to it ("۱۲ اردیبهشت", "January 5")
    DAY_BEFORE_MONTH = auto()  # an English day written before its month: "12 March" is "the twelfth of March"
    MONTH = auto()  # a short English month name beside its day ("Jan 5"): said in full
    # An English month name with its day ("Jan 5, 2024", "5 January", "Sept. 3rd"), one token with no script of
    # its own: the run around it says it, so a Persian sentence reads it as one Persian date ("پنجم ژانویه").
    MONTH_DATE = auto()
    RANGE = auto()  # the dash of "۱۰-۱۵" / "1990–2000": said "تا" / "to"
    SLASHED_NUMBER = auto()
    NUMBER = auto()
    EMOJI = auto()
    PUNCTUATION = auto()
    SPACE = auto()


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    # None for tokens with no letters (numbers, punctuation, emoji): they take the language of their run.
    script: Language | None


_D = f"[{ANY_DIGIT}]"
_NO_DIGIT_BEFORE = f"(?<![{ANY_DIGIT}])"
_NO_DIGIT_AFTER = f"(?![{ANY_DIGIT}])"
# A minus sign only counts at the start of a word, so "5-10" stays a dash between two numbers.
_SIGN = r"(?:(?<![^\s(«\[])[-−])?"
_AMOUNT = f"(?:{_D}{{1,3}}(?:[,٬]{_D}{{3}})+|{_D}+)(?:[.٫]{_D}+)?"
_SCALE_WORD = r"(?:thousand|million|billion|trillion|هزار|میلیون|میلیارد)"
_CURRENCY = "[$€£]"
_URL_TAIL = r"""[^\s<>«»"]*[^\s<>«»".,;:!?)\]،؛؟'’]"""
_TOP_LEVEL_DOMAINS = "com|org|net|ir|io|dev|edu|gov|info|co|ai|app|me|uk|de"
_EMOJI_BASE = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff"
_EMOJI_MODIFIERS = "\ufe0f\u200d\U0001f3fb-\U0001f3ff"
_MERIDIEM = r"(?i:[ap]\.m\.|[ap]m)(?![A-Za-z])"
_PHONE = (
    f"\\+{_D}{{1,3}}(?:[ -]{_D}{{2,4}}){{2,4}}"  # international: +98 912 345 6789
    f"|{_NO_DIGIT_BEFORE}(?:{_D}{{3,4}}-{_D}{{3}}-{_D}{{4}}|[0۰٠]{_D}{{2,3}}-{_D}{{5,8}}|{_D}{{3}}-{_D}{{4}})"
)

# Order matters: the longest, most specific shapes come first so that e.g. a date is not read as three
# numbers and an e-mail address is not read as a bare domain.
_TOKEN_PATTERNS: tuple[tuple[TokenKind, str], ...] = (
    (TokenKind.EMAIL, r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),
    (TokenKind.URL, rf"(?i:(?:https?://|www\.){_URL_TAIL})"),
    (
        TokenKind.URL,
        rf"(?i:(?<![\w@.])[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.(?:{_TOP_LEVEL_DOMAINS})"
        rf"(?![\w-])(?:/{_URL_TAIL})?)",
    ),
    (
        TokenKind.DATE,
        f"{_NO_DIGIT_BEFORE}(?:{_D}{{4}}(?P<year_first_sep>[/.-]){_D}{{1,2}}(?P=year_first_sep){_D}{{1,2}}"
        f"|{_D}{{1,2}}(?P<year_last_sep>[/.-]){_D}{{1,2}}(?P=year_last_sep){_D}{{4}}){_NO_DIGIT_AFTER}",
    ),
    (
        TokenKind.TIME,
        f"{_NO_DIGIT_BEFORE}{_D}{{1,2}}:{_D}{{2}}(?::{_D}{{2}})?{_NO_DIGIT_AFTER}(?:\\s?{_MERIDIEM})?"
        f"|{_NO_DIGIT_BEFORE}{_D}{{1,2}}\\s?{_MERIDIEM}",
    ),
    (TokenKind.PHONE, f"(?:{_PHONE}){_NO_DIGIT_AFTER}"),
    (TokenKind.VERSION, f"{_NO_DIGIT_BEFORE}{_D}+(?:\\.{_D}+){{2,}}{_NO_DIGIT_AFTER}"),
    (
        TokenKind.MONEY,
        f"(?:{_CURRENCY}\\s?{_AMOUNT}|{_AMOUNT}\\s?{_CURRENCY})(?:\\s{_SCALE_WORD}(?![\\w]))?",
    ),
    (TokenKind.PERCENT, f"{_SIGN}{_AMOUNT}\\s?[%٪]"),
    (TokenKind.MEASURE, f"{_SIGN}{_AMOUNT}\\s?{UNIT_PATTERN}(?![A-Za-z])"),
    (TokenKind.DECADE, r"(?<![0-9])(?:[0-9]{2}|')?[0-9]0'?s(?![A-Za-z])"),
    (TokenKind.ORDINAL, r"(?<![0-9])[0-9]+(?:st|nd|rd|th)(?![A-Za-z])"),
    (
        TokenKind.PERSIAN_ORDINAL,
        f"{_NO_DIGIT_BEFORE}{_D}+\u200c?(?:امین|مین|ام|م)(?![{ARABIC_SCRIPT_LETTERS}{ARABIC_SCRIPT_WORD_MARKS}])",
    ),
    (TokenKind.SLASHED_NUMBER, f"{_NO_DIGIT_BEFORE}{_D}+/{_D}+(?![/{ANY_DIGIT}])"),
    (TokenKind.NUMBER, f"{_SIGN}{_AMOUNT}"),
    (TokenKind.ABBREVIATION, ABBREVIATION_PATTERN),
    (TokenKind.ABBREVIATION, PERSIAN_ABBREVIATION_PATTERN),
    (TokenKind.WORD, f"[{LATIN_LETTERS}]+(?:['’][{LATIN_LETTERS}]+)*"),
    (TokenKind.EMOJI, f"[{_EMOJI_BASE}][{_EMOJI_MODIFIERS}{_EMOJI_BASE}]*|\ufe0f"),
)

_SCANNER = re.compile(
    "|".join(f"(?P<{kind.name}_{index}>{pattern})" for index, (kind, pattern) in enumerate(_TOKEN_PATTERNS))
)
_PLAIN_SCANNER = re.compile(
    rf"(?P<space>\s+)"
    rf"|(?P<word>[{ARABIC_SCRIPT_WORD_MARKS}]*[{ARABIC_SCRIPT_LETTERS}][{ARABIC_SCRIPT_LETTERS}{ARABIC_SCRIPT_WORD_MARKS}]*)"
    rf"|(?P<other>.)",
    re.DOTALL,
)
_INNER_SPACE_RE = re.compile(r"\s+")


def tokenise(text: str) -> list[Token]:
    """Every character of the (cleaned) text lands in exactly one token, in order."""
    text = strip_invisible(text)
    tokens: list[Token] = []
    position = 0
    for match in _SCANNER.finditer(text):
        tokens.extend(_plain_tokens(text[position : match.start()]))
        tokens.append(_protected_token(match))
        position = match.end()
    tokens.extend(_plain_tokens(text[position:]))
    return mark_month_dates(mark_number_ranges(mark_days_of_month(tokens)))


def url_host(url: str) -> str:
    """The part of a URL that is said: its host without the scheme and ``www.`` ("https://www.irna.ir/a" → irna.ir)."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", url, flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", host, maxsplit=1)[0]
    return re.sub(r"^www\.", "", host, flags=re.IGNORECASE)


def _protected_token(match: re.Match[str]) -> Token:
    """Numbers, Latin words, URLs and emoji: never shown to hazm, which would re-space or re-digit them."""
    group_name = match.lastgroup or ""
    kind = TokenKind[group_name.rsplit("_", 1)[0]]
    text = _INNER_SPACE_RE.sub(" ", match.group())
    # A unit symbol is Latin but is said in the language around it ("۱۲۰ km/h" → "… کیلومتر بر ساعت")
    if kind is TokenKind.MEASURE:
        return Token(kind, text, None)
    # A URL is said by its host, so the host's script picks the voice: a Persian path ("/wiki/تهران") must not
    # hand "wikipedia dot org" to the Persian voice, which reads Latin letters as a Persian speaker cannot follow.
    return Token(kind, text, script_of(url_host(text)) if kind is TokenKind.URL else script_of(text))


def _plain_tokens(segment: str) -> list[Token]:
    """Persian words, punctuation and spaces between protected tokens; Persian stretches go through hazm."""
    if not segment:
        return []
    segment = normalise_persian(segment) if has_arabic_script_letter(segment) else collapse_spaces(segment)
    return [_plain_token(match) for match in _PLAIN_SCANNER.finditer(segment)]


def _plain_token(match: re.Match[str]) -> Token:
    if match.lastgroup == "space":
        return Token(TokenKind.SPACE, match.group(), None)
    if match.lastgroup == "word":
        return Token(TokenKind.WORD, match.group(), "fa")
    return Token(TokenKind.PUNCTUATION, match.group(), script_of(match.group()))


_DAY_DIGITS_RE = re.compile(f"^[{ANY_DIGIT}]{{1,2}}$")


def mark_days_of_month(tokens: list[Token]) -> list[Token]:
    """A number next to a month name is its day, read as an ordinal ("۱۲ اردیبهشت" → دوازدهم اردیبهشت); a short
    English month beside it is said in full ("Jan 5" → January fifth)."""
    marked = list(tokens)
    for index, token in enumerate(tokens):
        if token.kind is TokenKind.NUMBER and _is_day_number(token.text) and _names_a_month_beside(tokens, index):
            after = _neighbour(tokens, index, 1)
            english_after = after is not None and tokens[after].text in ENGLISH_MONTHS_BY_NAME
            kind = TokenKind.DAY_BEFORE_MONTH if english_after else TokenKind.DAY
            marked[index] = Token(kind, token.text, None)
            for month in (after, _neighbour(tokens, index, -1)):
                if month is not None and tokens[month].text in ENGLISH_SHORT_MONTHS:
                    marked[month] = Token(TokenKind.MONTH, tokens[month].text, "en")
    return marked


def _is_day_number(text: str) -> bool:
    if not _DAY_DIGITS_RE.match(text):
        return False
    day = int(text.translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")))
    return 1 <= day <= 31


_RANGE_DASHES = frozenset("-–")
_RANGE_ENDS = frozenset({TokenKind.NUMBER, TokenKind.DAY, TokenKind.DAY_BEFORE_MONTH})


def mark_number_ranges(tokens: list[Token]) -> list[Token]:
    """A dash written tight between two numbers is a range ("۱۰-۱۵ درصد" → "ده تا پانزده درصد")."""
    marked = list(tokens)
    for index in range(1, len(tokens) - 1):
        token = tokens[index]
        if (token.kind is TokenKind.PUNCTUATION and token.text in _RANGE_DASHES
                and tokens[index - 1].kind in _RANGE_ENDS and tokens[index + 1].kind in _RANGE_ENDS):
            marked[index] = Token(TokenKind.RANGE, token.text, None)
            end = tokens[index + 1]
            if tokens[index - 1].kind is TokenKind.DAY and end.kind is TokenKind.NUMBER and _is_day_number(end.text):
                marked[index + 1] = Token(TokenKind.DAY, end.text, None)  # "March 3-5": third to fifth
    return marked


_MONTH_DATE_DAYS = frozenset({TokenKind.DAY, TokenKind.DAY_BEFORE_MONTH, TokenKind.ORDINAL})
_YEAR_DIGITS_RE = re.compile(f"^[{ANY_DIGIT}]{{4}}$")


def mark_month_dates(tokens: list[Token]) -> list[Token]:
    """An English month name and its day (either order, "3rd" too) become one MONTH_DATE token, with the year
    after "Jan 5," taken in so that its comma is never said; a year after "5 January" stays a number of its own,
    said as a year in either language."""
    merged: list[Token] = []
    index = 0
    while index < len(tokens):
        end = _month_date_end(tokens, index)
        if end is None:
            merged.append(tokens[index])
            index += 1
            continue
        text = "".join(" " if token.kind is TokenKind.SPACE else token.text for token in tokens[index:end])
        merged.append(Token(TokenKind.MONTH_DATE, text, None))
        index = end
    return merged


def _month_date_end(tokens: list[Token], index: int) -> int | None:
    """The end of the month date that starts at ``index`` ("Jan 5[, 2024]" or "5 Jan"), or None."""
    day = _neighbour(tokens, index, 1)
    if day is None or day != index + 2:  # a month and its day are one space apart
        return None
    if _is_english_month(tokens[index]) and _is_month_day(tokens[day]):
        comma, year = day + 1, day + 3
        if (year < len(tokens) and tokens[comma].text in (",", "،") and tokens[comma + 1].kind is TokenKind.SPACE
                and tokens[year].kind is TokenKind.NUMBER and _YEAR_DIGITS_RE.match(tokens[year].text)):
            return year + 1
        return day + 1
    if _is_month_day(tokens[index]) and _is_english_month(tokens[day]):
        return day + 1
    return None


def _is_english_month(token: Token) -> bool:
    return token.kind in (TokenKind.MONTH, TokenKind.WORD, TokenKind.ABBREVIATION) and (
        token.text in ENGLISH_MONTHS_BY_NAME)


def _is_month_day(token: Token) -> bool:
    if token.kind not in _MONTH_DATE_DAYS:
        return False
    return token.kind is not TokenKind.ORDINAL or _is_day_number(token.text[:-2])


def _names_a_month_beside(tokens: list[Token], index: int) -> bool:
    after, before = _neighbour(tokens, index, 1), _neighbour(tokens, index, -1)
    after_text = tokens[after].text if after is not None else ""
    before_text = tokens[before].text if before is not None else ""
    if after_text in PERSIAN_MONTHS:
        if after_text not in AMBIGUOUS_PERSIAN_MONTHS:
            return True
        year = _neighbour(tokens, after, 1) if after is not None else None
        return (year is not None and tokens[year].kind is TokenKind.NUMBER) or before_text in PERSIAN_DATE_CUES
    # English: "5 January" and "January 5" (capitalised, so "may 5 people" is not a date)
    return after_text in ENGLISH_MONTHS_BY_NAME or before_text in ENGLISH_MONTHS_BY_NAME


def _neighbour(tokens: list[Token], index: int, step: int) -> int | None:
    """The position of the next token in direction `step`, across one space at most: a month sits beside its day."""
    position = index + step
    if 0 <= position < len(tokens) and tokens[position].kind is TokenKind.SPACE:
        position += step
    return position if 0 <= position < len(tokens) else None
