"""Groups tokens into runs of one language: Persian-script and Latin-script stretches, neutrals attached."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from processors.tts.text.language import Language, has_eastern_digit
from processors.tts.text.tokens import Token, TokenKind

_UNSPOKEN_KINDS = frozenset({TokenKind.SPACE, TokenKind.PUNCTUATION, TokenKind.EMOJI})


@dataclass(frozen=True, slots=True)
class Run:
    language: Language
    tokens: tuple[Token, ...]


def split_into_runs(tokens: list[Token], main_language: Language) -> list[Run]:
    """Consecutive tokens of one language form a run, in text order."""
    languages = assign_languages(tokens, main_language)
    runs: list[Run] = []
    start = 0
    for index in range(1, len(tokens) + 1):
        if index == len(tokens) or languages[index] != languages[start]:
            runs.append(Run(languages[start], tuple(tokens[start:index])))
            start = index
    return runs


def assign_languages(tokens: list[Token], main_language: Language) -> list[Language]:
    """Letters decide; digits, punctuation and emoji follow the run around them.

    Text with no letters at all is spoken in the main language.
    """
    scripted = [index for index, token in enumerate(tokens) if token.script is not None]
    if not scripted:
        return [main_language] * len(tokens)
    languages: list[Language] = [_script(tokens[scripted[0]])] * len(tokens)
    for index in scripted:
        languages[index] = _script(tokens[index])
    for previous, following in pairwise(scripted):
        _fill_between(tokens, languages, previous, following, main_language)
    for index in range(scripted[-1] + 1, len(tokens)):
        languages[index] = languages[scripted[-1]]
    return languages


def _script(token: Token) -> Language:
    assert token.script is not None
    return token.script


def _fill_between(
    tokens: list[Token], languages: list[Language], previous: int, following: int, main_language: Language
) -> None:
    """Neutral tokens between two letters: kept with both if they share a language, else shared out.

    Between languages, whatever touches the left word (a closing "." or "»") stays with it, whatever touches
    the right word (an opening "«" or "(") goes with it, and a number in the middle is read in the request's
    main language, or in Persian when written in Persian digits.
    """
    left, right = languages[previous], languages[following]
    if left == right:
        languages[previous + 1 : following] = [left] * (following - previous - 1)
        return
    spaces = [index for index in range(previous + 1, following) if tokens[index].kind is TokenKind.SPACE]
    if not spaces:
        languages[previous + 1 : following] = [left] * (following - previous - 1)
        return
    first_space, last_space = spaces[0], spaces[-1]
    middle = tokens[first_space + 1 : last_space + 1]
    middle_language = _middle_language(middle, left, main_language)
    languages[previous + 1 : first_space + 1] = [left] * (first_space - previous)
    languages[first_space + 1 : last_space + 1] = [middle_language] * len(middle)
    languages[last_space + 1 : following] = [right] * (following - last_space - 1)


def _middle_language(middle: list[Token], left: Language, main_language: Language) -> Language:
    if not any(token.kind not in _UNSPOKEN_KINDS for token in middle):
        return left
    if any(has_eastern_digit(token.text) for token in middle):
        return "fa"
    return main_language
