"""Audio a WebSocket client sends (``audio_input`` messages, binary frames) read into checked PCM16 chunks."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gateway.speak import Refusal, check_message_length
from infra.settings import Settings
from producers.audio import AudioError, Pcm16, pcm16_samples
from schemas.websocket import AudioFrameError, AudioInput, unpack_audio_frame

# Containers people send by mistake instead of raw PCM: named, so the error says what to do.
CONTAINER_MAGICS = {b"RIFF": "WAV", b"OggS": "Ogg", b"ID3": "MP3", b"fLaC": "FLAC", b"\x1aE\xdf\xa3": "WebM"}


@dataclass(frozen=True)
class AudioChunk:
    """Samples of one message, with what the message says about them."""

    pcm: Pcm16
    sample_rate: int
    sample_format: str = "pcm_s16le"
    channels: int = 1
    language: str | None = None
    text: str | None = None


def chunk_of_message(settings: Settings, message: AudioInput) -> AudioChunk:
    """An ``audio_input`` message's samples; Refusal ``invalid_audio_data``, ``odd_byte_count``, ... otherwise."""
    try:
        data = base64.b64decode(message.data, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("invalid_audio_data", "audio_input.data is not base64") from None
    return AudioChunk(_samples(settings, data, message.sample_rate), message.sample_rate, message.format,
                      message.channels, message.language, message.text)


def chunk_of_frame(settings: Settings, frame: bytes) -> AudioChunk:
    """A binary frame's samples: the ``PCM1`` header (schemas/websocket.py), then PCM16LE mono."""
    for magic, kind in CONTAINER_MAGICS.items():
        if frame.startswith(magic):
            raise Refusal("unsupported_sample_format", f"this binary frame is a {kind} file; send raw PCM16LE mono "
                                                       "after the PCM1 header (or the whole file to POST "
                                                       "/avatar/process)")
    try:
        sample_rate, data = unpack_audio_frame(frame)
    except AudioFrameError as error:
        raise Refusal("missing_audio_header", str(error)) from None
    return AudioChunk(_samples(settings, data, sample_rate), sample_rate)


def _samples(settings: Settings, data: bytes, sample_rate: int) -> Pcm16:
    if sample_rate > 0:  # an unsupported rate is refused by the door itself, with its own code
        check_message_length(settings, len(data), sample_rate)
    try:
        return pcm16_samples(data)
    except AudioError as error:
        raise Refusal.of_audio(error) from None
