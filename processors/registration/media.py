"""Upload sniffing and decoding: bytes in, normalised RGB frames out, with bombs refused before decoding."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import av
import av.error
import cv2
import numpy as np

from infra.media_end import without_trailing_bytes
from infra.media_kind import SNIFF_BYTES, MediaKind, UnsupportedMedia
from infra.media_kind import sniff_media_kind as infra_sniff
from processors.registration.errors import RegistrationError
from schemas.avatar import RgbFrame

MediaCategory = Literal["image", "gif", "video"]
Progress = Callable[[float], None]

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not frames.
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
# Demuxer names for PyAV, so an in-memory file is never mis-probed as something else.
_DEMUXERS: dict[str, str] = {"gif": "gif", "mp4": "mov", "mov": "mov", "webm": "matroska"}
_DURATION_SLACK_S = 0.5  # container durations round up by a frame or an audio packet
_FALLBACK_FPS = 25.0


@dataclass
class DecodedMedia:
    """Normalised frames of one upload: longer side <= the limit, both sides even, all the same size."""

    kind: MediaKind
    frames: list[RgbFrame]
    source_width: int  # as displayed, i.e. after any rotation the container asks for
    source_height: int
    source_fps: float | None = None  # the file's frame rate; None for a still image
    frame_fps: float | None = None  # the rate of the frames kept (source rate / stride)
    stride: int = 1

    @property
    def category(self) -> MediaCategory:
        return media_category(self.kind)


def sniff_media_kind(head: bytes) -> MediaKind:
    """Name the format from its leading bytes (pass at least ``SNIFF_BYTES``); never trusts a file name."""
    try:
        return infra_sniff(head)
    except UnsupportedMedia as refused:
        raise RegistrationError(refused.code, refused.message) from None


def media_category(kind: MediaKind) -> MediaCategory:
    if kind in ("jpeg", "png"):
        return "image"
    return "gif" if kind == "gif" else "video"


def decode_media(
    data: bytes,
    *,
    max_pixels: int,
    max_side: int,
    max_frames: int,
    stride: int | None,
    max_duration_s: float,
    progress: Progress | None = None,
) -> DecodedMedia:
    """Sniff, check the declared dimensions, then decode ``data`` into normalised RGB frames."""
    kind = sniff_media_kind(data[:SNIFF_BYTES])
    # The gateway stages only the file's own bytes; an upload staged otherwise decodes the same, payload unread.
    data = without_trailing_bytes(data, kind)
    if kind in ("jpeg", "png"):
        return decode_image(data, kind, max_pixels=max_pixels, max_side=max_side)
    if kind == "gif":
        width, height = gif_dimensions(data)
        check_pixel_count(width, height, max_pixels)
        if not data.rstrip(b"\x00").endswith(b";"):
            # ffmpeg stops quietly at the cut, so a partial last frame would otherwise pass as real.
            raise RegistrationError("corrupt_file", "The GIF file is truncated (its end marker is missing).")
    return decode_animation(
        data,
        kind,
        max_pixels=max_pixels,
        max_side=max_side,
        max_frames=max_frames,
        stride=stride,
        max_duration_s=max_duration_s,
        progress=progress,
    )


def png_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format requires to come first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise RegistrationError("corrupt_file", "The PNG file is truncated or has no IHDR header.")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return _require_positive(width, height, "PNG")


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment, walking the marker segments before it."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        if marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return _require_positive(width, height, "JPEG")
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise RegistrationError("corrupt_file", "The JPEG file is truncated or has no frame header.")


def gif_dimensions(data: bytes) -> tuple[int, int]:
    """The logical screen size, the canvas every GIF frame is composited onto."""
    if len(data) < 13:
        raise RegistrationError("corrupt_file", "The GIF file is truncated before its screen descriptor.")
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return _require_positive(width, height, "GIF")


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RegistrationError(
            "image_too_large",
            f"The media is {width}×{height} pixels ({width * height / 1e6:.1f} MP); "
            f"at most {max_pixels / 1e6:.1f} MP is accepted.",
        )


def normalised_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The output size: longer side <= ``max_side``, never upscaled, both sides even (H.264 needs it)."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def normalise_frame(rgb: RgbFrame, size: tuple[int, int]) -> RgbFrame:
    """Bring a frame to ``size``; a frame only one pixel too big is cropped so it is not resampled."""
    width, height = size
    src_h, src_w = rgb.shape[:2]
    if 0 <= src_w - width <= 1 and 0 <= src_h - height <= 1:
        return np.ascontiguousarray(rgb[:height, :width])
    interpolation = cv2.INTER_AREA if src_w > width else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(rgb, (width, height), interpolation=interpolation), dtype=np.uint8)


def decode_image(data: bytes, kind: MediaKind, *, max_pixels: int, max_side: int) -> DecodedMedia:
    """Decode a JPEG or PNG with OpenCV after checking its header dimensions against ``max_pixels``."""
    width, height = png_dimensions(data) if kind == "png" else jpeg_dimensions(data)
    check_pixel_count(width, height, max_pixels)
    # IMREAD_COLOR applies the EXIF orientation, so phone photos come out upright.
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RegistrationError("corrupt_file", f"The {kind.upper()} file is truncated or corrupt.")
    rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    src_h, src_w = rgb.shape[:2]
    frame = normalise_frame(rgb, normalised_size(src_w, src_h, max_side))
    return DecodedMedia(kind=kind, frames=[frame], source_width=src_w, source_height=src_h)


def decode_animation(
    data: bytes,
    kind: MediaKind,
    *,
    max_pixels: int,
    max_side: int,
    max_frames: int,
    stride: int | None,
    max_duration_s: float,
    progress: Progress | None = None,
) -> DecodedMedia:
    """Decode a GIF or video with PyAV from memory, keeping every ``stride``-th frame, at most ``max_frames``."""
    with _open_container(data, kind) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: decoding is the bulk of a video's cost
        check_pixel_count(stream.codec_context.width, stream.codec_context.height, max_pixels)
        duration = _declared_duration(container, stream)
        if duration is not None and duration > max_duration_s + _DURATION_SLACK_S:
            raise _too_long(duration, max_duration_s)
        declared_fps = float(stream.average_rate) if stream.average_rate else None
        sampler = _FrameSampler(
            max_frames=max_frames,
            stride=stride or _automatic_stride(stream.frames, duration, declared_fps, max_frames),
            max_side=max_side,
            max_pixels=max_pixels,
        )
        _decode_into(sampler, _decoded_frames(container, stream), duration, max_duration_s, progress)
        _check_complete(kind, stream.frames, sampler)
    source_fps = declared_fps or sampler.measured_fps()
    return DecodedMedia(
        kind=kind,
        frames=sampler.frames,
        source_width=sampler.display_size[0],
        source_height=sampler.display_size[1],
        source_fps=source_fps,
        frame_fps=(source_fps or _FALLBACK_FPS) / sampler.stride,
        stride=sampler.stride,
    )


def _open_container(data: bytes, kind: MediaKind) -> av.container.InputContainer:
    try:
        container = av.open(io.BytesIO(data), mode="r", format=_DEMUXERS[kind])
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise RegistrationError("corrupt_file", f"The {kind.upper()} file cannot be opened: {exc}.") from exc
    if not container.streams.video:
        container.close()
        raise RegistrationError("no_decodable_frames", f"The {kind.upper()} file has no video stream.")
    return container


def _check_complete(kind: MediaKind, declared_frames: int, sampler: _FrameSampler) -> None:
    if not sampler.frames:
        raise RegistrationError("no_decodable_frames", f"No frame of the {kind.upper()} file could be decoded.")
    if declared_frames - sampler.decoded > max(2, declared_frames // 20):
        # A cut-off file whose index survived: its header promises frames the data no longer holds.
        raise RegistrationError(
            "corrupt_file",
            f"The {kind.upper()} file is truncated: it declares {declared_frames} frames "
            f"but only {sampler.decoded} could be decoded.",
        )


class _FrameSampler:
    """Keeps every ``stride``-th decoded frame; doubles the stride whenever more than ``max_frames`` pile up.

    Doubling keeps the kept frames evenly spaced in time and bounds memory even when the container did
    not say how many frames it holds.
    """

    def __init__(self, *, max_frames: int, stride: int, max_side: int, max_pixels: int) -> None:
        self.max_frames = max(1, max_frames)
        self.stride = max(1, stride)
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.frames: list[RgbFrame] = []
        self.times: list[float] = []
        self.decoded = 0
        self.display_size = (0, 0)
        self._indices: list[int] = []
        self._out_size: tuple[int, int] | None = None

    def offer(self, frame: av.VideoFrame) -> None:
        index = self.decoded
        self.decoded += 1
        if index % self.stride:
            return
        self.frames.append(self._to_rgb(frame))
        self.times.append(float(frame.time) if frame.time is not None else index / _FALLBACK_FPS)
        self._indices.append(index)
        if len(self.frames) > self.max_frames:
            self._halve()

    def measured_fps(self) -> float | None:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return None
        return (self._indices[-1] - self._indices[0]) / (self.times[-1] - self.times[0])

    def _halve(self) -> None:
        self.stride *= 2
        keep = [i for i, index in enumerate(self._indices) if index % self.stride == 0]
        self.frames = [self.frames[i] for i in keep]
        self.times = [self.times[i] for i in keep]
        self._indices = [self._indices[i] for i in keep]

    def _to_rgb(self, frame: av.VideoFrame) -> RgbFrame:
        check_pixel_count(frame.width, frame.height, self.max_pixels)
        turns = round(frame.rotation / 90) % 4  # the display matrix asks for a counter-clockwise turn
        if self._out_size is None:
            display = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
            self.display_size = display
            self._out_size = normalised_size(display[0], display[1], self.max_side)
        out_w, out_h = self._out_size
        coded_w, coded_h = (out_h, out_w) if turns % 2 else (out_w, out_h)
        # One swscale call converts and downsizes; frames of a different size mid-stream follow the first.
        rgb = frame.to_ndarray(format="rgb24", width=coded_w, height=coded_h, interpolation="AREA")
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else np.asarray(rgb, dtype=np.uint8)


def _decoded_frames(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    for packet in container.demux(stream):
        yield from packet.decode()


def _decode_into(
    sampler: _FrameSampler,
    frames: Iterator[av.VideoFrame],
    duration: float | None,
    max_duration_s: float,
    progress: Progress | None,
) -> None:
    """Feed decoded frames to ``sampler``, enforcing the duration limit on the frames' own timestamps."""
    first_time: float | None = None
    try:
        for frame in frames:
            elapsed = 0.0
            if frame.time is not None:
                first_time = float(frame.time) if first_time is None else first_time
                elapsed = float(frame.time) - first_time
                if elapsed > max_duration_s + _DURATION_SLACK_S:
                    raise _too_long(elapsed, max_duration_s)
            sampler.offer(frame)
            if progress is not None and duration and sampler.decoded % 10 == 0:
                progress(min(1.0, elapsed / duration))
    except av.error.FFmpegError as exc:
        raise RegistrationError(
            "corrupt_file", f"The file is corrupt: decoding failed after {sampler.decoded} frames ({exc})."
        ) from exc
    if progress is not None:
        progress(1.0)


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _automatic_stride(frame_count: int, duration: float | None, fps: float | None, max_frames: int) -> int:
    """The smallest stride that keeps at most ``max_frames`` frames, from what the header declares."""
    estimate = frame_count or (duration * fps if duration and fps else 0)
    return max(1, math.ceil(estimate / max(1, max_frames)))


def _too_long(duration: float, max_duration_s: float) -> RegistrationError:
    return RegistrationError(
        "video_too_long", f"The clip lasts {duration:.1f} s; at most {max_duration_s:.0f} s is accepted."
    )


def _require_positive(width: int, height: int, fmt: str) -> tuple[int, int]:
    if width <= 0 or height <= 0:
        raise RegistrationError("corrupt_file", f"The {fmt} header declares an empty {width}×{height} image.")
    return width, height
