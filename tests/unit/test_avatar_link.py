"""The pure parts of the adapters' shared link: each video frame's audio, the service's cut mirrored, the rates."""

from __future__ import annotations

import numpy as np
import pytest

from integrations.avatar_link import RESAMPLE_RATE, UtteranceMirror, frame_audio, to_service_pcm
from producers.audio import AUDIBLE_PEAK

RATE = 24_000
FRAME = RATE // 25


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (6000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def test_a_frames_audio_is_its_40_ms_of_the_timeline_and_silence_past_the_end() -> None:
    timeline = np.arange(FRAME * 2 + 10, dtype=np.int16).astype("<i2").tobytes()
    assert np.array_equal(np.frombuffer(frame_audio(timeline, 1, RATE), np.int16), np.arange(FRAME, 2 * FRAME))
    last = np.frombuffer(frame_audio(timeline, 2, RATE), np.int16)
    assert len(last) == FRAME and np.array_equal(last[:10], np.arange(2 * FRAME, 2 * FRAME + 10))
    assert not last[10:].any()
    assert frame_audio(timeline, 5, RATE) == bytes(2 * FRAME), "a frame past the audio shows silence"


def test_the_mirror_drops_leading_silence_but_one_frame_and_keeps_whole_frames_until_the_end() -> None:
    speech = tone(0.5)
    pcm = np.concatenate([np.zeros(3 * FRAME + 100, np.int16), speech])
    mirror = UtteranceMirror(RATE)
    for start in range(0, len(pcm), 480):  # 20 ms pieces, as an agent's TTS gives them
        mirror.add(pcm[start : start + 480].astype("<i2").tobytes())
    assert len(mirror.timeline) % (2 * FRAME) == 0, "only whole frames before the end"
    mirror.end()
    timeline = np.frombuffer(bytes(mirror.timeline), np.int16)
    first_loud = int(np.flatnonzero(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK)[0])
    kept = pcm[first_loud - FRAME :]
    assert len(timeline) % FRAME == 0 and np.array_equal(timeline[: len(kept)], kept)
    assert not timeline[len(kept) :].any(), "the last frame padded with silence"


def test_the_mirror_of_audio_the_service_refuses_stops_instead_of_raising() -> None:
    mirror = UtteranceMirror(RATE)
    mirror.add(bytes(2 * RATE))  # a second of silence: the service answers silent_audio at the end
    mirror.end()
    mirror.add(tone(0.2).astype("<i2").tobytes())
    assert mirror.timeline == bytearray()


def test_audio_at_a_rate_the_service_takes_goes_unchanged() -> None:
    pcm = tone(0.1).astype("<i2").tobytes()
    rate, out, resampler = to_service_pcm(pcm, RATE, 1, None)
    assert (rate, out, resampler) == (RATE, pcm, None)


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (8_000, 1), (RATE, 2)])
def test_other_rates_and_stereo_are_resampled_to_24_khz_mono_keeping_the_duration(rate: int, channels: int) -> None:
    mono = tone(1.0, rate)
    pcm = np.repeat(mono, channels).astype("<i2").tobytes()  # interleaved
    resampler = None
    out = b""
    for start in range(0, len(pcm), 2 * channels * rate // 10):  # the resampler carries over between pieces
        got_rate, piece, resampler = to_service_pcm(pcm[start : start + 2 * channels * rate // 10], rate, channels,
                                                    resampler)
        assert got_rate == RESAMPLE_RATE
        out += piece
    assert abs(len(out) // 2 - RESAMPLE_RATE) <= RESAMPLE_RATE * 0.02
    assert np.abs(np.frombuffer(out, np.int16)).max() > 3000, "the sound, not silence"
