"""Cuts a language run into pieces: sentences, a short first piece for latency, long sentences split."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from processors.tts.text.months import ENGLISH_MONTHS_BY_NAME, PERSIAN_MONTHS
from processors.tts.text.tokens import Token, TokenKind
from processors.tts.text.verbalise import is_speakable, needs_spoken_gap

SENTENCE_ENDS = frozenset(".!?؟…‼⁇⁈⁉")
CLAUSE_MARKS = frozenset("،؛,;:")
# Words that open a subordinate or contrasting clause: with no punctuation in reach, cutting just before
# one keeps each piece a natural phrase. "و"/"and"/"or" are left out (they mostly join nouns), and so is
# "تا", which is as often a counter ("دو تا کتاب") as a conjunction.
CONJUNCTIONS = frozenset(
    {"که", "اما", "ولی", "زیرا", "چون", "چراکه", "اگر", "اگرچه", "سپس", "بنابراین", "درحالی‌که"}
    | {"but", "because", "which", "who", "when", "while", "although", "though", "if", "where", "unless"}
)
# A conjunction right at the start would leave a fragment (a lone subject) as the piece.
_SHORTEST_PHRASE_SHARE = 3
# Closing quotes and brackets belong to the sentence they close: a cut goes after them, not before.
_CLOSERS = frozenset("»)]}\"'”’›")
_NUMBER_KINDS = frozenset({TokenKind.NUMBER, TokenKind.ORDINAL, TokenKind.DAY, TokenKind.DAY_BEFORE_MONTH})
_DAY_KINDS = frozenset({TokenKind.DAY, TokenKind.DAY_BEFORE_MONTH})


class Boundary(IntEnum):
    """How good a place a space is to cut at; NONE means never cut here."""

    NONE = 0
    WORD = 1
    PHRASE = 2
    CLAUSE = 3
    SENTENCE = 4


@dataclass(frozen=True, slots=True)
class Span:
    """Tokens [start, end) of a run; never starts or ends on a space."""

    start: int
    end: int


class RunLayout:
    """One run's tokens with what is needed to choose cuts: boundary strengths, widths, speech presence."""

    def __init__(self, tokens: Sequence[Token], spoken: Sequence[str]) -> None:
        self.tokens = tokens
        self.boundaries = [_boundary_at(tokens, index) for index in range(len(tokens))]
        self._display_widths = _prefix_sums(_display_width(token) for token in tokens)
        self._spoken_widths = _prefix_sums(
            len(words) + needs_spoken_gap(tokens[index - 1] if index else None, tokens[index])
            for index, words in enumerate(spoken)
        )
        self._speakable_counts = _prefix_sums(int(is_speakable(words)) for words in spoken)

    def width(self, span: Span) -> int:
        """The longer of the shown and the spoken text: number expansion can make speech much longer."""
        display = self._display_widths[span.end] - self._display_widths[span.start]
        spoken = self._spoken_widths[span.end] - self._spoken_widths[span.start]
        return max(display, spoken)

    def has_speech(self, start: int, end: int) -> bool:
        return self._speakable_counts[end] > self._speakable_counts[start]

    def can_cut_at(self, start: int, cut: int, end: int) -> bool:
        """A cut must be at a real boundary and leave something to say on both sides."""
        return self.boundaries[cut] > Boundary.NONE and self.has_speech(start, cut) and self.has_speech(
            cut + 1, end
        )

    def trimmed(self) -> Span | None:
        """The run without leading and trailing spaces, or None if it is only spaces."""
        content = [index for index, token in enumerate(self.tokens) if token.kind is not TokenKind.SPACE]
        return Span(content[0], content[-1] + 1) if content else None


def split_run(layout: RunLayout, *, first_limit: int, later_limit: int) -> list[Span]:
    """Sentences in order; the first piece fits `first_limit`, every other piece `later_limit`."""
    whole = layout.trimmed()
    if whole is None or not layout.has_speech(whole.start, whole.end):
        return []
    pieces: list[Span] = []
    for sentence in split_sentences(layout, whole):
        remaining: Span | None = sentence
        while remaining is not None:
            limit = later_limit if pieces else first_limit
            piece, remaining = cut_piece(layout, remaining, limit)
            pieces.append(piece)
    return pieces


def split_sentences(layout: RunLayout, whole: Span) -> list[Span]:
    sentences: list[Span] = []
    start = whole.start
    for index in range(whole.start + 1, whole.end):
        if layout.boundaries[index] == Boundary.SENTENCE and layout.can_cut_at(start, index, whole.end):
            sentences.append(Span(start, index))
            start = index + 1
    sentences.append(Span(start, whole.end))
    return sentences


def cut_piece(layout: RunLayout, span: Span, limit: int) -> tuple[Span, Span | None]:
    """The longest prefix within `limit` ending at a clause (else word) boundary, and what is left.

    A first word longer than the limit is kept whole: a piece never ends inside a word.
    """
    if layout.width(span) <= limit:
        return span, None
    cut = _best_cut(layout, span, limit)
    if cut is None:
        return span, None
    return Span(span.start, cut), Span(cut + 1, span.end)


def _best_cut(layout: RunLayout, span: Span, limit: int) -> int | None:
    """Scans cut candidates left to right, stopping at the first one past the limit (widths only grow)."""
    first_candidate: int | None = None
    last_clause = last_phrase = last_word = None
    for index in range(span.start + 1, span.end):
        if layout.tokens[index].kind is not TokenKind.SPACE or not layout.can_cut_at(span.start, index, span.end):
            continue
        first_candidate = index if first_candidate is None else first_candidate
        width = layout.width(Span(span.start, index))
        if width > limit:
            break
        last_word = index
        if layout.boundaries[index] >= Boundary.CLAUSE:
            last_clause = index
        elif layout.boundaries[index] == Boundary.PHRASE and width * _SHORTEST_PHRASE_SHARE >= limit:
            last_phrase = index
    return next((cut for cut in (last_clause, last_phrase, last_word, first_candidate) if cut is not None), None)


def _boundary_at(tokens: Sequence[Token], index: int) -> Boundary:
    """The boundary a space makes, judged by the last real token before it (skipping closers and emoji)."""
    if tokens[index].kind is not TokenKind.SPACE:
        return Boundary.NONE
    # Emoji belong with the words before them: "خوبی؟ 😀" is one piece, not a piece with nothing to say.
    if index + 1 < len(tokens) and tokens[index + 1].kind is TokenKind.EMOJI:
        return Boundary.NONE
    if "\n" in tokens[index].text:
        return Boundary.SENTENCE
    if _joins_day_and_month(tokens, index):
        return Boundary.NONE  # "January | fifteenth" said as two pieces sounds like two sentences
    previous = _last_meaningful_before(tokens, index)
    if previous is not None and previous.kind is TokenKind.PUNCTUATION:
        if previous.text in SENTENCE_ENDS:
            return Boundary.SENTENCE
        if previous.text in CLAUSE_MARKS and not _separates_numbers(tokens, index):
            return Boundary.CLAUSE
    if index + 1 < len(tokens) and tokens[index + 1].text.lower() in CONJUNCTIONS:
        return Boundary.PHRASE
    return Boundary.WORD


def _joins_day_and_month(tokens: Sequence[Token], index: int) -> bool:
    """The space of "January 15" / "15 January" / "۱۲ اردیبهشت": a day and its month stay in one piece."""
    if index == 0 or index + 1 >= len(tokens):
        return False
    before, after = tokens[index - 1], tokens[index + 1]
    return (before.kind in _DAY_KINDS and _is_month(after)) or (_is_month(before) and after.kind in _DAY_KINDS)


def _is_month(token: Token) -> bool:
    return token.kind is TokenKind.MONTH or token.text in ENGLISH_MONTHS_BY_NAME or token.text in PERSIAN_MONTHS


def _separates_numbers(tokens: Sequence[Token], index: int) -> bool:
    """The comma in "May 3rd, 2024" or "1, 2, 3" is part of a number expression, not a clause break."""
    before = tokens[index - 2] if index >= 2 else None
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    return before is not None and after is not None and before.kind in _NUMBER_KINDS and after.kind in _NUMBER_KINDS


def _last_meaningful_before(tokens: Sequence[Token], index: int) -> Token | None:
    for earlier in range(index - 1, -1, -1):
        token = tokens[earlier]
        if token.kind not in (TokenKind.SPACE, TokenKind.EMOJI) and token.text not in _CLOSERS:
            return token
    return None


def _display_width(token: Token) -> int:
    return 1 if token.kind is TokenKind.SPACE else len(token.text)


def _prefix_sums(values: Iterable[int]) -> list[int]:
    sums = [0]
    for value in values:
        sums.append(sums[-1] + value)
    return sums
