"""Test helper: decode a whole fragmented MP4 and report its streams, frame count and durations."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class DecodedMp4:
    video_codec: str
    audio_codec: str
    video_frames: int
    video_duration_s: float
    audio_duration_s: float


def decode_mp4(data: bytes) -> DecodedMp4:
    """Decode every frame of both streams; raises if the MP4 is not valid."""
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = 0
        last_video = last_audio = 0.0
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                frames += 1
                last_video = max(last_video, float(frame.time or 0.0) + 1 / float(video.average_rate or 25))
            elif isinstance(frame, av.AudioFrame):
                last_audio = max(last_audio, float(frame.time or 0.0) + frame.samples / frame.sample_rate)
        return DecodedMp4(video.codec_context.name, audio.codec_context.name, frames, last_video, last_audio)
