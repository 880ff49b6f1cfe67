"""The interface every TTS backend implements: text in one language (and an optional voice) → mono PCM16."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from schemas.speech import PhonemeMark
from schemas.status import VoiceEntry

Language = Literal["fa", "en"]


class TtsFailure(RuntimeError):
    """The backend could not speak this text; only this request fails."""


class UnknownVoice(TtsFailure):
    """The request named a voice this backend does not have."""


class EngineConfigError(RuntimeError):
    """A backend that was selected is not configured or not installed: raised at start-up, never per request."""


@dataclass(frozen=True)
class Speech:
    pcm: npt.NDArray[np.int16]  # mono
    sample_rate: int
    # (start sample at sample_rate, IPA name) in time order; empty when the backend knows no timings (OpenAI)
    phonemes: tuple[PhonemeMark, ...] = ()
    voice: str | None = None  # the voice that spoke, when the backend chose it (piper: the language's voice)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


class TtsEngine(Protocol):
    name: str
    languages: frozenset[Language]  # what it can speak; other pieces of a request go to another backend

    def check_voice(self, voice: str | None) -> None:
        """Raise UnknownVoice before anything is spoken, so a bad voice fails the request up front."""
        ...

    def synthesize(self, text: str, language: Language, voice: str | None = None, *, rate: float = 1.0) -> Speech:
        """Speak `text`; `rate` is the speaking rate (1 = the voice's own, 2 = twice as fast), the phoneme
        timings measured at that rate."""
        ...


@runtime_checkable
class ListsVoices(Protocol):
    """A backend that can say which voices it has (every built-in one; a test double need not)."""

    def voice_list(self) -> list[VoiceEntry]: ...
