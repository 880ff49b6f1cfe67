"""Utterances to score: espeak-ng speech with its phoneme events, framed in silence, at the engines' rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scripts.lipsync_quality.phonetics import Phone, pauses, phones_from_events, speech_span

ENGINE_RATE = 16_000
LEAD_SILENCE_S = 0.4  # a request starts from rest and ends in it: both are pause frames to judge
TAIL_SILENCE_S = 0.4


@dataclass(frozen=True)
class Utterance:
    """One sentence as spoken: engine audio, the timings of its phones and its pauses (seconds)."""

    language: str
    text: str
    audio: npt.NDArray[np.float32]  # mono at ENGINE_RATE
    phones: tuple[Phone, ...]
    pauses: tuple[tuple[float, float], ...]
    events: tuple[tuple[float, str], ...]  # (onset seconds, phoneme name) as the TTS gave them

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / ENGINE_RATE

    @property
    def pcm16(self) -> npt.NDArray[np.int16]:
        return (np.clip(self.audio, -1.0, 1.0) * 32767).astype(np.int16)


def resample(pcm: npt.NDArray[np.int16], rate: int, target: int = ENGINE_RATE) -> npt.NDArray[np.float32]:
    """int16 at ``rate`` → float32 at ``target``, as the lip-sync core converts speech (linear interpolation)."""
    audio = pcm.astype(np.float32) / 32768.0
    if rate == target or audio.size == 0:
        return audio
    count = round(audio.size * target / rate)
    return np.interp(np.arange(count) * (rate / target), np.arange(audio.size), audio).astype(np.float32)


def utterance(language: str, text: str, pcm: npt.NDArray[np.int16], rate: int,
              events: Sequence[tuple[int, str]]) -> Utterance:
    """An utterance from TTS output: int16 ``pcm`` at ``rate`` and (sample offset, phoneme) ``events``."""
    lead = np.zeros(int(LEAD_SILENCE_S * ENGINE_RATE), np.float32)
    tail = np.zeros(int(TAIL_SILENCE_S * ENGINE_RATE), np.float32)
    audio = np.concatenate([lead, resample(pcm, rate), tail])
    onsets = tuple((LEAD_SILENCE_S + sample / rate, name) for sample, name in events)
    _, speech_end = speech_span(audio, ENGINE_RATE)
    phones = tuple(phones_from_events(onsets, speech_end))
    return Utterance(language, text, audio, phones, tuple(pauses(audio, ENGINE_RATE)), onsets)


def espeak_utterance(language: str, text: str, *, rate_wpm: int = 175) -> Utterance:
    """``text`` spoken by libespeak-ng (``en`` → en-us, ``fa``) with its own phoneme events."""
    from processors.tts.engines.espeak_library import shared_library

    spoken = shared_library().synthesize(text, "en-us" if language == "en" else language, rate_wpm=rate_wpm)
    return utterance(language, text, spoken.pcm, spoken.sample_rate,
                     [(event.sample, event.phoneme) for event in spoken.phonemes])
