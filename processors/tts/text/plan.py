"""plan_speech: raw request text → the pieces the TTS engine says, in order, each in one language."""

from __future__ import annotations

from dataclasses import dataclass

from processors.tts.text.language import Language, detect_language
from processors.tts.text.runs import Run, split_into_runs
from processors.tts.text.segment import RunLayout, Span, split_run
from processors.tts.text.tokens import Token, TokenKind, tokenise
from processors.tts.text.verbalise import needs_spoken_gap, speak

_NOT_LANGUAGE_EVIDENCE = frozenset({TokenKind.URL, TokenKind.EMAIL})


@dataclass(frozen=True)
class SpeechText:
    spoken: str  # what the TTS engine should say (numbers expanded to words, normalised)
    display: str  # the original text of this piece, for subtitles (only Persian letters/spacing normalised)
    language: Language


def plan_speech(
    text: str, language: Language | None = None, *, first_max_chars: int = 60, max_chars: int = 220
) -> list[SpeechText]:
    """Normalise, read numbers/URLs/symbols as words, split by language and size; [] if nothing to say.

    `language` is the request's main language (auto-detected when None): it decides how numbers between
    runs of different scripts and text with no letters are read. Letters always speak their own script, so
    "Python" inside Persian text is an English piece; so are URLs and e-mail addresses, which are said by
    their domain in English ("example dot com") whatever the surrounding language, because a Persian voice
    cannot pronounce Latin letters. Emoji are silent but kept in `display`. Piece sizes count the longer of
    the shown and the spoken text; only a single word longer than the limit can exceed it.
    """
    if first_max_chars < 1 or max_chars < 1:
        raise ValueError("first_max_chars and max_chars must be positive")
    tokens = tokenise(text)
    main_language = language or _main_language(tokens)
    pieces: list[SpeechText] = []
    for run in split_into_runs(tokens, main_language):
        first_limit = max_chars if pieces else first_max_chars
        pieces.extend(_plan_run(run, first_limit=first_limit, later_limit=max_chars))
    return pieces


def _main_language(tokens: list[Token]) -> Language:
    """Detected from the words only: a long Latin URL must not make a Persian request English."""
    return detect_language("".join(token.text for token in tokens if token.kind not in _NOT_LANGUAGE_EVIDENCE))


def _plan_run(run: Run, *, first_limit: int, later_limit: int) -> list[SpeechText]:
    spoken = [speak(token, run.language) for token in run.tokens]
    layout = RunLayout(run.tokens, spoken)
    spans = split_run(layout, first_limit=first_limit, later_limit=later_limit)
    return [_render(run, spoken, span) for span in spans]


def _render(run: Run, spoken: list[str], span: Span) -> SpeechText:
    tokens = run.tokens[span.start : span.end]
    words = spoken[span.start : span.end]
    return SpeechText(
        spoken=_render_spoken(tokens, words), display=_render_display(tokens), language=run.language
    )


def _render_display(tokens: tuple[Token, ...]) -> str:
    return "".join(" " if token.kind is TokenKind.SPACE else token.text for token in tokens)


def _render_spoken(tokens: tuple[Token, ...], words: list[str]) -> str:
    parts: list[str] = []
    for index, (token, said) in enumerate(zip(tokens, words, strict=True)):
        if needs_spoken_gap(tokens[index - 1] if index else None, token):
            parts.append(" ")
        parts.append(said)
    # Removed emoji leave double spaces behind; the engine should get single ones.
    return " ".join("".join(parts).split())
