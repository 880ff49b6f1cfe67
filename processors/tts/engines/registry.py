"""Builds the configured TTS backends at start-up and picks one for each piece of a request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from infra.settings import Settings
from processors.tts.engines.base import EngineConfigError, Language, ListsVoices, TtsEngine
from processors.tts.engines.espeak import EspeakEngine
from processors.tts.engines.espeak_library import EspeakLibraryError, shared_library
from schemas.status import VoiceEntry

ENGINE_NAMES = ("espeak", "openai", "piper")
ALL_LANGUAGES: tuple[Language, ...] = ("fa", "en")


@dataclass(frozen=True)
class EngineSet:
    """The backends one processor runs; the first is the default."""

    engines: dict[str, TtsEngine]

    @classmethod
    def of(cls, *engines: TtsEngine) -> EngineSet:
        return cls({engine.name: engine for engine in engines})

    @property
    def default(self) -> TtsEngine:
        return next(iter(self.engines.values()))

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    def get(self, name: str | None) -> TtsEngine | None:
        return self.default if name is None else self.engines.get(name)

    def speaker_of(self, language: Language, preferred: TtsEngine) -> TtsEngine | None:
        """The chosen backend when it speaks the language, else the first (default-first) that does."""
        if language in preferred.languages:
            return preferred
        return next((engine for engine in self.engines.values() if language in engine.languages), None)

    def voice_list(self) -> list[VoiceEntry]:
        """Every backend's voices, default backend first (what the heartbeats announce)."""
        return [entry for engine in self.engines.values() if isinstance(engine, ListsVoices)
                for entry in engine.voice_list()]

    def uncovered_languages(self) -> list[Language]:
        return [language for language in ALL_LANGUAGES
                if not any(language in engine.languages for engine in self.engines.values())]


def build_engine(name: str, settings: Settings) -> TtsEngine:
    """One backend from its settings; EngineConfigError says what is missing."""
    if name == "espeak":
        return EspeakEngine(rate_wpm=settings.espeak_rate_wpm, pitch=settings.espeak_pitch,
                            voices={"fa": settings.espeak_voice_fa, "en": settings.espeak_voice_en})
    if name == "openai":
        from processors.tts.engines.openai_tts import OpenAiEngine

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAiEngine(key, model=settings.openai_tts_model, voice=settings.openai_tts_voice,
                            base_url=settings.openai_base_url, timeout_s=settings.openai_timeout_s,
                            max_retries=settings.openai_max_retries)
    if name == "piper":
        from processors.tts.engines.piper import build_piper

        return build_piper(settings.piper_voice_folder, settings.piper_model,
                           defaults={"fa": settings.piper_voice_fa, "en": settings.piper_voice_en},
                           threads=settings.piper_threads, cache_dir=settings.data_dir / "models" / "piper")
    raise EngineConfigError(f"unknown TTS engine '{name}'; known: {', '.join(ENGINE_NAMES)}")


def build_engines(settings: Settings) -> EngineSet:
    """Every selected backend, plus espeak-ng as the voice of a language none of them speaks (piper: Persian).

    Raises EngineConfigError, naming the setting, when a selected backend is not configured or installed.
    """
    engines: list[TtsEngine] = []
    for name in settings.selected_tts_engines:
        try:
            engines.append(build_engine(name, settings))
        except EngineConfigError as error:
            raise EngineConfigError(f"TTS engine '{name}' (TTS_ENGINE / TTS_EXTRA_ENGINES) is not usable: "
                                    f"{error}") from error
    engine_set = EngineSet.of(*engines)
    missing = engine_set.uncovered_languages()
    if missing:
        engine_set = EngineSet.of(*engines, _fallback_speaker(settings, engine_set.names, missing))
    return engine_set


def _fallback_speaker(settings: Settings, selected: Iterable[str], missing: list[Language]) -> TtsEngine:
    try:
        shared_library()
    except EspeakLibraryError as error:
        raise EngineConfigError(f"no selected TTS engine ({', '.join(selected)}) speaks {', '.join(missing)}: "
                                f"install espeak-ng or add openai to TTS_EXTRA_ENGINES ({error})") from error
    return build_engine("espeak", settings)
