"""An agent's audio becomes speech segments: whole frames, in order, soon, with a 16 kHz copy; bad audio refused."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from producers.audio import (
    AUDIBLE_PEAK,
    MAX_SEGMENT_FRAMES,
    AudioError,
    Utterance,
    UtteranceTarget,
    check_format,
    check_utterance,
    pcm16_samples,
    whole_utterance,
)
from schemas.speech import SpeechSegment

BIG = 10**9


def target(rate: int = 16_000) -> UtteranceTarget:
    return UtteranceTarget(request_id="r1", session_id="s1", avatar_id="sample", sample_rate=rate, text="سلام")


def voice(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (6000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)


def streamed(utterance: Utterance, audio: np.ndarray, piece: int) -> list[SpeechSegment]:
    segments = []
    for start in range(0, len(audio), piece):
        segments += utterance.add(audio[start : start + piece])
    return segments + utterance.end()


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 48_000])
def test_segments_are_whole_frames_in_order_and_tile_the_utterance(rate: int) -> None:
    audio = voice(1.03, rate)
    segments = streamed(Utterance(target(rate), max_samples=BIG), audio, rate // 10)
    frame = rate // 25
    metas = [s.meta for s in segments]
    assert [m.segment_index for m in metas] == list(range(len(metas)))
    assert [m.is_last for m in metas] == [False] * (len(metas) - 1) + [True]
    assert all(m.sample_count % frame == 0 and m.phonemes is None for m in metas)
    assert [m.start_sample for m in metas[1:]] == [(m.start_sample or 0) + m.sample_count for m in metas[:-1]]
    played = np.concatenate([np.frombuffer(s.pcm16, "<i2") for s in segments])
    assert np.array_equal(played[: len(audio)], audio) and not played[len(audio) :].any(), "padded to a frame"
    assert [m.text for m in metas][:2] == ["سلام", ""], "the subtitle opens the utterance"
    for segment in segments:
        assert SpeechSegment.from_kafka(segment.to_kafka()) == segment


def test_a_100_ms_chunk_leaves_at_once_and_20_ms_chunks_are_gathered_into_80_ms() -> None:
    utterance = Utterance(target(), max_samples=BIG)
    first = utterance.add(voice(0.1))
    assert [s.meta.sample_count for s in first] == [1280], "two whole frames at once; 20 ms wait for the next"
    small = Utterance(target(), max_samples=BIG)
    counts = [len(small.add(piece)) for piece in np.split(voice(0.16), 8)]
    assert counts == [0, 0, 0, 1, 0, 0, 0, 1]


def test_a_long_message_is_split_into_bounded_segments() -> None:
    segments = Utterance(target(48_000), max_samples=BIG).add(voice(5.0, 48_000))
    assert len(segments) == 3 and max(s.meta.sample_count for s in segments) == MAX_SEGMENT_FRAMES * 1920


def test_the_16_khz_copy_is_exact_per_frame_and_joins_as_one_resampled_signal() -> None:
    audio = voice(2.0, 48_000)
    segments = streamed(Utterance(target(48_000), max_samples=BIG), audio, 4800)
    assert all(s.meta.lipsync_sample_rate == 16_000 and s.meta.lipsync_sample_count == s.meta.sample_count // 3
               for s in segments)
    copy = np.concatenate([np.frombuffer(s.lipsync_pcm16, "<i2") for s in segments]).astype(np.float32)
    reference = resample_poly(audio.astype(np.float32), 1, 3)
    inner = slice(640, len(reference) - 640)  # away from the utterance's own two ends
    assert np.max(np.abs(copy[inner] - reference[inner])) < 0.02 * np.max(np.abs(reference)), "no seams"


def test_at_16_khz_the_playback_audio_is_the_lipsync_audio() -> None:
    segments = whole_utterance(target(), voice(0.5), max_samples=BIG)
    assert all(s.lipsync_pcm16 == b"" and s.meta.lipsync_sample_rate is None for s in segments)


def test_leading_silence_is_dropped_but_one_frame_before_the_voice() -> None:
    audio = np.concatenate([np.zeros(16_000, np.int16), voice(0.4)])
    segments = streamed(Utterance(target(), max_samples=BIG), audio, 1600)
    played = np.concatenate([np.frombuffer(s.pcm16, "<i2") for s in segments])
    first_loud = int(np.flatnonzero(np.abs(voice(0.4)) >= AUDIBLE_PEAK)[0])
    assert np.flatnonzero(np.abs(played) >= AUDIBLE_PEAK)[0] == 640, "one frame of margin before the voice"
    assert np.array_equal(played[640 : 640 + 6400 - first_loud], voice(0.4)[first_loud:])
    assert segments[0].meta.start_sample == 0


@pytest.mark.parametrize(("audio", "code"), [
    (np.zeros(16_000, np.int16), "silent_audio"),
    (np.full(16_000, 50, np.int16), "silent_audio"),  # -56 dBFS of hum is no speech
    (np.zeros(0, np.int16), "no_audio"),
])
def test_an_utterance_without_audible_audio_is_refused_at_its_end(audio: np.ndarray, code: str) -> None:
    utterance = Utterance(target(), max_samples=BIG)
    assert utterance.add(audio) == []
    with pytest.raises(AudioError) as raised:
        utterance.end()
    assert raised.value.code == code
    with pytest.raises(AudioError) as whole:
        check_utterance(audio, 16_000, max_samples=BIG)
    assert whole.value.code == code


def test_audio_past_the_utterance_bound_is_refused_and_what_came_before_stays() -> None:
    utterance = Utterance(target(), max_samples=16_000)
    kept = utterance.add(voice(0.9))
    with pytest.raises(AudioError) as raised:
        utterance.add(voice(0.2))
    assert raised.value.code == "audio_too_long" and "AUDIO_MAX_UTTERANCE_S" in raised.value.message
    rest = utterance.end()
    assert sum(s.meta.sample_count for s in kept + rest) == 0.92 * 16_000


@pytest.mark.parametrize(("rate", "sample_format", "channels", "code"), [
    (44_100, "pcm_s16le", 1, "unsupported_sample_rate"),
    (8_000, "pcm_s16le", 1, "unsupported_sample_rate"),
    (16_000, "pcm_f32le", 1, "unsupported_sample_format"),
    (16_000, "pcm_s16le", 2, "unsupported_sample_format"),
])
def test_only_pcm16_mono_at_the_four_rates_is_taken(rate: int, sample_format: str, channels: int, code: str) -> None:
    with pytest.raises(AudioError) as raised:
        check_format(rate, sample_format, channels)
    assert raised.value.code == code


def test_an_odd_byte_count_is_no_pcm16() -> None:
    with pytest.raises(AudioError) as raised:
        pcm16_samples(b"\x00\x01\x02")
    assert raised.value.code == "odd_byte_count"
    assert list(pcm16_samples(b"\x01\x00\xff\xff")) == [1, -1]
