"""The offline TTS backend: espeak-ng (libespeak-ng, in-process) speaking Persian and English, with phoneme timings."""

from __future__ import annotations

from processors.tts.engines.base import EngineConfigError, Language, Speech, TtsFailure, UnknownVoice
from processors.tts.engines.espeak_library import EspeakLibrary, EspeakLibraryError, SpokenText, shared_library
from schemas.speech import MAX_PHONEME_NAME_CHARS, PhonemeMark
from schemas.status import VoiceEntry

DEFAULT_VOICES: dict[Language, str] = {"fa": "fa", "en": "en-us"}
MIN_WPM, MAX_WPM = 80, 450  # espeak-ng's espeakRATE_MINIMUM / espeakRATE_MAXIMUM


class EspeakConfigError(EngineConfigError):
    """libespeak-ng is missing or lacks a voice: raised at start-up."""


class EspeakEngine:
    """Speaks each piece through the process's libespeak-ng; ~1.5 ms of CPU per second of speech.

    The library rather than the espeak-ng CLI: no process per piece (the CLI cost ~20–40 ms of start-up on
    every piece, on the first segment's critical path), and its synth callback reports where each phoneme
    starts, which the lip-sync articulates from. A request's `voice` is an espeak-ng variant (e.g. "f3" for a
    female voice) applied on top of the language voice, so one request can say its Persian and its English
    pieces in the same variant.
    """

    name = "espeak"
    languages: frozenset[Language] = frozenset({"fa", "en"})

    def __init__(self, library: EspeakLibrary | None = None, *, rate_wpm: int = 165, pitch: int = 50,
                 voices: dict[Language, str] | None = None, timeout_s: float = 20.0) -> None:
        self.library = library or _open_library()
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        self.voices = {**DEFAULT_VOICES, **(voices or {})}
        self.timeout_s = timeout_s
        self.variants = self.library.variants()
        self._check_voices()

    def _check_voices(self) -> None:
        """Each language's voice (a language such as ``en-gb`` or a voice file, with an optional ``+variant``)
        exists; espeak-ng itself would quietly speak an unknown variant as the plain voice."""
        for language, voice in self.voices.items():
            base, _, variant = voice.partition("+")
            if not self.library.has_voice(base) or (variant and variant not in self.variants):
                raise EspeakConfigError(f"espeak-ng has no voice '{voice}' for language '{language}' "
                                        f"(ESPEAK_VOICE_{language.upper()}); see `espeak-ng --voices`")

    def words_per_minute(self, rate: float) -> int:
        """ESPEAK_RATE_WPM scaled by the request's rate, within what espeak-ng can do (it would clamp
        silently)."""
        return max(MIN_WPM, min(MAX_WPM, round(self.rate_wpm * rate)))

    def voice_list(self) -> list[VoiceEntry]:
        """Its variants, each applied to both languages' voices (ESPEAK_VOICE_FA / _EN)."""
        return [VoiceEntry(tts=self.name, voice=variant, languages=["fa", "en"]) for variant in sorted(self.variants)]

    def check_voice(self, voice: str | None) -> None:
        if voice is not None and voice not in self.variants:
            raise UnknownVoice(f"espeak-ng has no voice variant '{voice}'; try one of "
                               f"{', '.join(sorted(self.variants)[:8])}, … (`espeak-ng --voices=variant`)")

    def synthesize(self, text: str, language: Language, voice: str | None = None, *, rate: float = 1.0) -> Speech:
        self.check_voice(voice)
        espeak_voice = self.voices[language] + (f"+{voice}" if voice else "")
        try:
            spoken = self.library.synthesize(text, espeak_voice, rate_wpm=self.words_per_minute(rate), pitch=self.pitch,
                                             timeout_s=self.timeout_s)
        except EspeakLibraryError as error:
            raise TtsFailure(str(error)) from error
        return Speech(spoken.pcm, spoken.sample_rate, phoneme_marks(spoken))


def phoneme_marks(spoken: SpokenText) -> tuple[PhonemeMark, ...]:
    """The library's phoneme events as (sample, IPA) marks at the speech's own rate.

    Names are espeak-ng's (at most 8 bytes); blanks inside one are dropped so every mark is a valid
    avatar.speech phoneme name.
    """
    marks: list[PhonemeMark] = []
    for event in spoken.phonemes:
        name = "".join(event.phoneme.split())
        if name:
            marks.append((event.sample, name[:MAX_PHONEME_NAME_CHARS]))
    return tuple(marks)


def _open_library() -> EspeakLibrary:
    try:
        return shared_library()
    except EspeakLibraryError as error:
        raise EspeakConfigError(str(error)) from error
