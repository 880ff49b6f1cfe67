"""The offline TTS backend: espeak-ng (Debian package) speaking Persian and English."""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np

from processors.tts.engines.base import EngineConfigError, Language, Speech, TtsFailure, UnknownVoice

DEFAULT_VOICES: dict[Language, str] = {"fa": "fa", "en": "en-us"}


class EspeakConfigError(EngineConfigError):
    """espeak-ng is missing or lacks a voice: raised at start-up."""


def wav_to_pcm(wav: bytes) -> tuple[np.ndarray, int]:
    """Parse espeak-ng's streamed WAV (its size fields are placeholders, so read to the end)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise TtsFailure("espeak-ng did not produce a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(wav):
        chunk_id, size = wav[pos : pos + 4], struct.unpack_from("<I", wav, pos + 4)[0]
        if chunk_id == b"fmt ":
            channels, rate = struct.unpack_from("<HI", wav, pos + 10)
            if channels != 1:
                raise TtsFailure(f"expected mono speech, got {channels} channels")
        elif chunk_id == b"data":
            data = wav[pos + 8 :]
            return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16), rate
        pos += 8 + size
    raise TtsFailure("espeak-ng's WAV stream has no data chunk")


def _listing(binary: str, option: str) -> list[list[str]]:
    """The rows of `espeak-ng --voices=…`, split into columns (header dropped)."""
    output = subprocess.run([binary, option], capture_output=True, text=True, timeout=10, check=False).stdout
    return [line.split() for line in output.splitlines()[1:] if line.strip()]


def installed_languages(binary: str) -> set[str]:
    return {row[1] for row in _listing(binary, "--voices") if len(row) > 1}


def installed_variants(binary: str) -> set[str]:
    """Voice variants ("f3", "klatt", "Annie", …): a request's `voice` picks one, for either language."""
    return {row[4].removeprefix("!v/") for row in _listing(binary, "--voices=variant") if len(row) > 4}


class EspeakEngine:
    """Runs espeak-ng once per piece of text; ~2 ms of CPU per second of speech.

    A request's `voice` is an espeak-ng variant (e.g. "f3" for a female voice) applied on top of the language
    voice, so one request can say its Persian and its English pieces in the same variant.
    """

    name = "espeak"
    languages: frozenset[Language] = frozenset({"fa", "en"})

    def __init__(self, binary: str = "espeak-ng", *, rate_wpm: int = 165, pitch: int = 50,
                 voices: dict[Language, str] | None = None, timeout_s: float = 20.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise EspeakConfigError(f"'{binary}' not found: install the Debian package espeak-ng (make run does)")
        self.binary = path
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        self.voices = {**DEFAULT_VOICES, **(voices or {})}
        self.timeout_s = timeout_s
        self._check_voices()
        self.variants = installed_variants(self.binary)

    def _check_voices(self) -> None:
        available = installed_languages(self.binary)
        for language, voice in self.voices.items():
            if voice.split("+")[0] not in available:
                raise EspeakConfigError(f"espeak-ng has no voice '{voice}' for language '{language}' "
                                        f"(ESPEAK_VOICE_{language.upper()}); see `espeak-ng --voices`")

    def check_voice(self, voice: str | None) -> None:
        if voice is not None and voice not in self.variants:
            raise UnknownVoice(f"espeak-ng has no voice variant '{voice}'; try one of "
                               f"{', '.join(sorted(self.variants)[:8])}, … (`espeak-ng --voices=variant`)")

    def synthesize(self, text: str, language: Language, voice: str | None = None) -> Speech:
        self.check_voice(voice)
        espeak_voice = self.voices[language] + (f"+{voice}" if voice else "")
        command = [self.binary, "-v", espeak_voice, "-s", str(self.rate_wpm), "-p", str(self.pitch),
                   "--stdout", "-b", "1"]  # -b 1: the text on stdin is UTF-8
        try:
            done = subprocess.run(command, input=text.encode(), capture_output=True, timeout=self.timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as error:
            raise TtsFailure(f"espeak-ng took longer than {self.timeout_s} s") from error
        if done.returncode != 0:
            raise TtsFailure(f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()[:200]}")
        pcm, rate = wav_to_pcm(done.stdout)
        return Speech(pcm, rate)
