"""The avatars a benchmark renders: the bundled sample photo and a short video of it, both registered by the
project's own analysis (``analyse_upload``), exactly as an admin's upload would be."""

from __future__ import annotations

import io
import math

import av
import cv2
import numpy as np
import skimage.data

from processors.registration.analyse import analyse_upload
from schemas.avatar import AvatarFaceData, RgbFrame

VIDEO_FRAMES = 30  # 1.2 s at 25 fps, the head drifting on a small ellipse and breathing in scale
VIDEO_SWAY_PX = (3.0, 2.0)
VIDEO_SCALE = 0.01


def sample_photo() -> AvatarFaceData:
    """scikit-image's astronaut (the service's bundled sample), registered as a PNG upload."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return analyse_upload(png.tobytes(), avatar_id="sample-photo", filename="astronaut.png").face_data


def moving_frames(image: RgbFrame, count: int = VIDEO_FRAMES) -> list[RgbFrame]:
    """``image`` with a slow head-like motion: sub-pixel sway on an ellipse and a slight zoom."""
    height, width = image.shape[:2]
    frames = []
    for index in range(count):
        angle = 2 * math.pi * index / count
        matrix = cv2.getRotationMatrix2D((width / 2, height / 3), 0.0, 1.0 + VIDEO_SCALE * math.sin(2 * angle))
        matrix[:, 2] += np.array([VIDEO_SWAY_PX[0] * math.sin(angle), VIDEO_SWAY_PX[1] * math.cos(angle)])
        moved = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.asarray(moved, dtype=np.uint8))
    return frames


def mp4_bytes(frames: list[RgbFrame], fps: int = 25) -> bytes:
    """An ordinary H.264 MP4 (what a phone would upload), not the service's streaming fMP4."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def sample_video() -> AvatarFaceData:
    """A 512x512 video avatar of the astronaut moving a little, registered as an MP4 upload."""
    content = mp4_bytes(moving_frames(np.ascontiguousarray(skimage.data.astronaut())))
    return analyse_upload(content, avatar_id="sample-video", filename="astronaut.mp4").face_data
