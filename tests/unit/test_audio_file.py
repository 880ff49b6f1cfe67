"""Whole audio files (WAV, MP3, OGG/Opus) decode to PCM16 mono at a rate the service takes; bad files are refused."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from producers.audio import AudioError
from producers.audio_file import decode_audio_file


def encoded(container: str, codec: str, rate: int, seconds: float = 1.0, channels: int = 1) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    tone = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    layout = "mono" if channels == 1 else "stereo"
    samples = np.tile(tone, (1, 1)) if channels == 1 else np.repeat(tone, 2).reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, "w", format=container) as file:
        stream = file.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            file.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(("container", "codec", "rate", "expected_rate"), [
    ("wav", "pcm_s16le", 16_000, 16_000),
    ("wav", "pcm_s16le", 44_100, 48_000),  # not taken as it is: resampled to 48 kHz
    ("mp3", "libmp3lame", 24_000, 24_000),
    ("ogg", "libopus", 48_000, 48_000),
])
def test_a_file_decodes_to_mono_pcm16_of_its_length(container: str, codec: str, rate: int,
                                                    expected_rate: int) -> None:
    decoded = decode_audio_file(encoded(container, codec, rate), max_seconds=60)
    assert decoded.sample_rate == expected_rate
    assert decoded.duration_s == pytest.approx(1.0, abs=0.08)
    assert 6000 < np.abs(decoded.pcm).max() <= 9000, "the tone's level survives"


def test_stereo_is_mixed_down_to_mono() -> None:
    decoded = decode_audio_file(encoded("wav", "pcm_s16le", 22_050, channels=2), max_seconds=60)
    assert decoded.pcm.ndim == 1 and decoded.duration_s == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 100, encoded("wav", "pcm_s16le", 16_000)[:30]])
def test_a_corrupt_file_is_unreadable_audio(data: bytes) -> None:
    with pytest.raises(AudioError) as raised:
        decode_audio_file(data, max_seconds=60)
    assert raised.value.code == "unreadable_audio" and raised.value.message


def test_a_file_longer_than_the_bound_is_refused_while_decoding() -> None:
    with pytest.raises(AudioError) as raised:
        decode_audio_file(encoded("wav", "pcm_s16le", 16_000, seconds=3.0), max_seconds=2.0)
    assert raised.value.code == "audio_too_long"
