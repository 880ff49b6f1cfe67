"""Test helper: real speech audio as a voice agent would send it (espeak-ng, resampled to the rate asked for)."""

from __future__ import annotations

import io
import wave

import numpy as np
from scipy.signal import resample_poly

from processors.tts.engines.espeak_library import shared_library

ENGLISH = "Hello there. This is the agent speaking with its own voice, and the avatar moves its mouth."
PERSIAN = "سلام، من دستیار صوتی شما هستم و با صدای خودم صحبت می‌کنم."


def speech_pcm(rate: int, text: str = ENGLISH, voice: str = "en-us") -> np.ndarray:
    """int16 mono speech at ``rate``."""
    spoken = shared_library().synthesize(text, voice, rate_wpm=165)
    audio = spoken.pcm.astype(np.float32)
    if rate != spoken.sample_rate:
        audio = resample_poly(audio, rate, spoken.sample_rate)
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def chunks(pcm: np.ndarray, rate: int, ms: int = 100) -> list[bytes]:
    """The audio as PCM16LE byte chunks of ``ms`` each (the last one shorter)."""
    step = rate * ms // 1000
    return [pcm[i : i + step].astype("<i2").tobytes() for i in range(0, len(pcm), step)]


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()
