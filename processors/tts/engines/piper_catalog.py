"""The piper voice catalog: which voices a folder holds, each one's name, language and rate read from its .json.

A piper voice is two files, ``<name>.onnx`` and ``<name>.onnx.json``; the JSON is piper's own config
(``language.code`` such as ``fa_IR``/``en_US``, ``dataset``, ``audio.sample_rate`` and ``audio.quality``,
``espeak.voice``, the phoneme map). Reading the catalog needs no ONNX Runtime (``scripts/download_models.py
--verify-only`` lists it too); the TTS processor announces it in its heartbeats, which the gateway lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from processors.tts.engines.base import Language

SPOKEN: frozenset[str] = frozenset({"fa", "en"})
CONFIG_SUFFIX = ".json"  # appended to the .onnx file name, as piper names it


# Why a file was passed over, as a code a tool can act on (scripts/validate_system.py picks its fix by it).
Problem = Literal["no_voice_file", "no_config", "bad_config", "other_language", "duplicate_name"]


class VoiceConfigError(ValueError):
    """A voice's .json is missing, unreadable, or names nothing this service can speak."""

    def __init__(self, message: str, problem: Problem) -> None:
        super().__init__(message)
        self.problem: Problem = problem


class PassedOver(NamedTuple):
    """A file the catalog did not take: the file, what is wrong with it in words, and as a code."""

    path: Path
    reason: str
    problem: Problem


@dataclass(frozen=True)
class PiperVoiceInfo:
    """One voice of the catalog, as its config describes it."""

    name: str  # the file name without .onnx: what a request's `voice` names
    language: Language
    locale: str  # piper's language.code, e.g. fa_IR
    dataset: str
    quality: str
    sample_rate: int
    model: Path
    config: dict[str, Any] = field(repr=False, compare=False)

    @property
    def config_path(self) -> Path:
        return config_path_of(self.model)


@dataclass(frozen=True)
class Catalog:
    """The voices found, in priority order, and the files that were passed over with the reason."""

    voices: tuple[PiperVoiceInfo, ...]
    skipped: tuple[PassedOver, ...] = ()

    def named(self, name: str) -> PiperVoiceInfo | None:
        return next((voice for voice in self.voices if voice.name == name), None)

    def of_language(self, language: Language) -> list[PiperVoiceInfo]:
        return [voice for voice in self.voices if voice.language == language]

    @property
    def languages(self) -> frozenset[Language]:
        return frozenset(voice.language for voice in self.voices)


def config_path_of(model: Path) -> Path:
    return model.with_name(model.name + CONFIG_SUFFIX)


def language_of(config: dict[str, Any]) -> tuple[Language, str]:
    """(service language, piper locale) from ``language.code``, else the espeak voice piper phonemises with."""
    language_block = config.get("language")
    code = str(language_block.get("code") or "") if isinstance(language_block, dict) else ""
    if not code:
        espeak = config.get("espeak")
        code = str(espeak.get("voice") or "") if isinstance(espeak, dict) else ""
    base = code.replace("-", "_").split("_")[0].lower()
    if base not in SPOKEN:
        raise VoiceConfigError(f"speaks '{code or 'an unnamed language'}'; this service speaks only fa and en",
                               "other_language")
    return ("fa" if base == "fa" else "en"), code


def read_voice(model: Path) -> PiperVoiceInfo:
    """One voice's description from its .json; VoiceConfigError says what is wrong with it."""
    path = config_path_of(model)
    if not model.is_file():
        raise VoiceConfigError(f"no voice file {model}", "no_voice_file")
    if not path.is_file():
        raise VoiceConfigError(f"{model.name} has no {path.name} beside it (piper needs both files)", "no_config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VoiceConfigError(f"{path.name} is not readable JSON: {error}", "bad_config") from None
    if not isinstance(config, dict):
        raise VoiceConfigError(f"{path.name} is not a piper voice config (not a JSON object)", "bad_config")
    language, locale = language_of(config)
    audio_block = config.get("audio")
    audio: dict[str, Any] = audio_block if isinstance(audio_block, dict) else {}
    rate = audio.get("sample_rate")
    if not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise VoiceConfigError(f"{path.name}: audio.sample_rate must be 8000-48000 Hz (got {rate!r})", "bad_config")
    if not isinstance(config.get("phoneme_id_map"), dict) or not config["phoneme_id_map"]:
        raise VoiceConfigError(f"{path.name} has no phoneme_id_map", "bad_config")
    return PiperVoiceInfo(name=model.name.removesuffix(".onnx"), language=language, locale=locale,
                          dataset=str(config.get("dataset") or ""), quality=str(audio.get("quality") or ""),
                          sample_rate=rate, model=model, config=config)


def voice_files(folder: Path) -> list[Path]:
    """The folder's .onnx files in name order (so the first voice of a language is the same on every host),
    without the alignment-patched copies the backend caches."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.glob("*.onnx") if ".aligned-" not in path.name)


def read_catalog(models: Iterable[Path]) -> Catalog:
    """The voices of these files in the order given, a later file with an earlier one's name passed over."""
    voices: list[PiperVoiceInfo] = []
    skipped: list[PassedOver] = []
    for model in models:
        try:
            voice = read_voice(model)
        except VoiceConfigError as error:
            skipped.append(PassedOver(model, str(error), error.problem))
            continue
        if any(known.name == voice.name for known in voices):
            skipped.append(PassedOver(model, f"a voice named '{voice.name}' is already in the catalog",
                                      "duplicate_name"))
            continue
        voices.append(voice)
    return Catalog(tuple(voices), tuple(skipped))


def default_voice(catalog: Catalog, language: Language, configured: str) -> PiperVoiceInfo | None:
    """The voice that speaks `language` when the request names none: the configured one, else the first."""
    if configured:
        return catalog.named(configured)
    candidates = catalog.of_language(language)
    return candidates[0] if candidates else None


def names_no_voice_of(catalog: Catalog, language: Language, configured: str) -> bool:
    """True when a configured default (PIPER_VOICE_FA / _EN) names no voice of its language in the catalog."""
    voice = default_voice(catalog, language, configured)
    return bool(configured) and (voice is None or voice.language != language)
