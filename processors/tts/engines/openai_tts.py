"""The cloud TTS backend: OpenAI's speech endpoint (or any OpenAI-compatible server), streamed as raw PCM."""

from __future__ import annotations

import httpx2
import numpy as np
import openai

from processors.tts.engines.base import EngineConfigError, Language, Speech, TtsFailure
from schemas.status import VoiceEntry

PCM_RATE = 24_000  # `response_format="pcm"` is 24 kHz, 16-bit little-endian, mono
_READ_BYTES = 8192


class OpenAiEngine:
    """One HTTP request per piece; the response is read as it streams, each read bounded by the timeout.

    Retries (connection errors, timeouts, 408/409/429/5xx, honouring Retry-After) are the `openai` client's,
    with exponential back-off; a failure after the last retry, or mid-stream, fails only this request.
    """

    name = "openai"
    languages: frozenset[Language] = frozenset({"fa", "en"})  # its voices are multilingual

    def __init__(self, api_key: str | None, *, model: str, voice: str, base_url: str | None = None,
                 timeout_s: float = 15.0, max_retries: int = 2) -> None:
        if not api_key:
            raise EngineConfigError("the openai TTS backend needs OPENAI_API_KEY (and OPENAI_BASE_URL for an "
                                    "OpenAI-compatible server)")
        self.model = model
        self.voice = voice
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url or None, max_retries=max_retries,
                                    timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 5.0)))

    def voice_list(self) -> list[VoiceEntry]:
        """Only the configured voice: the server knows its others (a request may name any; the server judges)."""
        return [VoiceEntry(tts=self.name, voice=self.voice, languages=["fa", "en"], default=True)]

    def check_voice(self, voice: str | None) -> None:
        """Voice names differ between OpenAI and compatible servers: the server is the judge (a 400 fails it)."""

    def synthesize(self, text: str, language: Language, voice: str | None = None, *, rate: float = 1.0) -> Speech:
        try:
            pcm = self._stream_pcm(text, voice or self.voice, rate)
        except openai.APIStatusError as error:
            raise TtsFailure(f"OpenAI TTS answered {error.status_code}: {_short(error.message)}") from error
        except openai.APITimeoutError as error:
            raise TtsFailure("OpenAI TTS timed out (OPENAI_TIMEOUT_S), retries exhausted") from error
        except openai.APIConnectionError as error:
            raise TtsFailure(f"OpenAI TTS unreachable, retries exhausted: {_short(str(error))}") from error
        except httpx2.HTTPError as error:  # the body broke off after the headers: no retry, audio is partial
            raise TtsFailure(f"OpenAI TTS stream broke off: {type(error).__name__}: {_short(str(error))}") from error
        if len(pcm) == 0:
            raise TtsFailure("OpenAI TTS returned no audio")
        return Speech(pcm, PCM_RATE)

    def _stream_pcm(self, text: str, voice: str, rate: float) -> np.ndarray:
        body = bytearray()
        # `speed` only when asked: some OpenAI-compatible servers refuse fields they do not know.
        with self.client.audio.speech.with_streaming_response.create(
            model=self.model, voice=voice, input=text, response_format="pcm",
            speed=rate if rate != 1.0 else openai.omit,
        ) as response:
            for chunk in response.iter_bytes(_READ_BYTES):
                body.extend(chunk)
        usable = len(body) // 2 * 2
        return np.frombuffer(bytes(body[:usable]), dtype="<i2").astype(np.int16)


def _short(message: str) -> str:
    return " ".join(message.split())[:200]
