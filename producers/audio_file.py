"""A whole audio file (WAV, MP3, OGG/Opus, anything FFmpeg reads) decoded with PyAV to PCM16 mono for speech.

The file keeps its own rate when the service takes it (16, 22.05, 24 or 48 kHz); any other rate (44.1 kHz
MP3, 8 kHz telephone audio) is resampled by FFmpeg to 48 kHz, which loses nothing of it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from producers.audio import SUPPORTED_RATES, AudioError, Pcm16

FALLBACK_RATE = 48_000


@dataclass(frozen=True)
class DecodedAudio:
    pcm: Pcm16
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


def decode_audio_file(data: bytes, *, max_seconds: float) -> DecodedAudio:
    """The file's first audio stream as PCM16 mono; AudioError ``unreadable_audio`` for anything else.

    ``max_seconds`` bounds the decoded audio (``audio_too_long``), checked as it is decoded, so a small
    file that expands to hours is refused without holding hours of samples.
    """
    if not data:
        raise AudioError("unreadable_audio", "the file is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioError("unreadable_audio", "the file holds no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate if stream.rate in SUPPORTED_RATES else FALLBACK_RATE
            return DecodedAudio(_decode(container, stream, rate, max_seconds), rate)
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, IndexError, EOFError) as error:  # PyAV's decode failures
        raise AudioError("unreadable_audio", f"the file is not audio FFmpeg can decode: {error}") from None


def _decode(container: av.container.InputContainer, stream: av.AudioStream, rate: int,
            max_seconds: float) -> Pcm16:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    limit = int(max_seconds * rate)
    parts: list[Pcm16] = []
    total = 0
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            total += _take(parts, out)
        if total > limit:
            raise AudioError("audio_too_long", f"the audio is longer than {max_seconds:g} s "
                                               "(AUDIO_MAX_UTTERANCE_S)")
    for out in resampler.resample(None):  # what the resampler still holds
        total += _take(parts, out)
    if total == 0:
        raise AudioError("unreadable_audio", "the file's audio stream holds no samples")
    if total > limit:
        raise AudioError("audio_too_long", f"the audio is longer than {max_seconds:g} s (AUDIO_MAX_UTTERANCE_S)")
    return np.concatenate(parts)


def _take(parts: list[Pcm16], frame: av.AudioFrame) -> int:
    samples = frame.to_ndarray().reshape(-1).astype(np.int16)
    parts.append(samples)
    return len(samples)
