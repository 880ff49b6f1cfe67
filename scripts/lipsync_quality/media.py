"""What a viewer receives: frames through the service's own H.264 fMP4 writer, and the video decoded back."""

from __future__ import annotations

import io
from collections.abc import Sequence

import av
import numpy as np
import numpy.typing as npt

from processors.lipsync.media import FragmentedMp4Writer
from schemas.avatar import RgbFrame


def encode(frames: Sequence[RgbFrame], audio: npt.NDArray[np.int16] | None = None, *, fps: int = 25,
           audio_rate: int = 16_000, crf: int = 23) -> bytes:
    """One fragmented MP4 of ``frames`` (and ``audio``, silence if none) as the lip-sync processor writes it."""
    height, width = frames[0].shape[:2]
    writer = FragmentedMp4Writer(width, height, fps=fps, audio_rate=audio_rate, crf=crf)
    pcm = audio if audio is not None else np.zeros(len(frames) * audio_rate // fps, np.int16)
    return writer.write(list(frames), pcm) + writer.close()


def decode(data: bytes) -> list[RgbFrame]:
    """Every video frame of an MP4 as RGB."""
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        return [np.ascontiguousarray(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def round_trip(frames: Sequence[RgbFrame], *, crf: int = 23) -> list[RgbFrame]:
    """``frames`` as a viewer sees them after the service's H.264 encoding."""
    return decode(encode(frames, crf=crf))
