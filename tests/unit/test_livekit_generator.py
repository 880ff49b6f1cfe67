"""The LiveKit VideoGenerator's pure parts: frames in LiveKit's types, and what it yields without any service."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="the [livekit] extra is not installed")

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from integrations.avatar_link import SyncedFrame
from integrations.livekit import AvatarVideoGenerator
from integrations.livekit.video_generator import audio_frame, video_frame


def synced(width: int = 8, height: int = 6) -> SyncedFrame:
    image = np.arange(width * height * 4, dtype=np.uint32).astype(np.uint8).reshape(height, width, 4)
    return SyncedFrame("r", 3, image, np.arange(960, dtype=np.int16).astype("<i2").tobytes(), 24_000, False)


def test_a_synced_frame_becomes_an_rgba_video_frame_of_its_size_and_pixels() -> None:
    frame = synced()
    video = video_frame(frame)
    assert (video.width, video.height, video.type) == (8, 6, rtc.VideoBufferType.RGBA)
    assert bytes(video.data) == frame.image.tobytes()


def test_a_synced_frames_audio_becomes_a_40_ms_mono_audio_frame_of_the_same_samples() -> None:
    audio = audio_frame(synced())
    assert (audio.sample_rate, audio.num_channels, audio.samples_per_channel) == (24_000, 1, 960)
    assert audio.duration == pytest.approx(0.04)
    assert np.array_equal(np.frombuffer(audio.data, np.int16), np.arange(960))


def test_the_generator_is_a_livekit_video_generator() -> None:
    assert isinstance(AvatarVideoGenerator(), VideoGenerator)


async def test_a_segment_end_without_audio_before_it_yields_nothing() -> None:
    generator = AvatarVideoGenerator(url="ws://127.0.0.1:9/never-dialled")  # no audio: nothing is dialled
    await generator.push_audio(AudioSegmentEnd())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(aiter(generator)), 0.2)
    assert generator.last_error is None


async def test_closing_the_generator_ends_its_iteration() -> None:
    generator = AvatarVideoGenerator(url="ws://127.0.0.1:9/never-dialled")
    await generator.aclose()
    assert [item async for item in generator] == []
