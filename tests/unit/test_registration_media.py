"""Upload sniffing, header checks and decoding of avatar registration, on real encoded bytes."""

from __future__ import annotations

import io
import itertools
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from gateway.registration_status import http_status
from processors.registration import RegistrationError, sniff_media_kind
from processors.registration.media import DecodedMedia, decode_media, normalised_size
from schemas.avatar import RgbFrame


def decode(
    content: bytes,
    *,
    max_pixels: int = 40_000_000,
    max_frames: int = 300,
    stride: int | None = None,
    max_duration_s: float = 30.0,
    progress: Callable[[float], None] | None = None,
) -> DecodedMedia:
    return decode_media(
        content,
        max_pixels=max_pixels,
        max_side=720,
        max_frames=max_frames,
        stride=stride,
        max_duration_s=max_duration_s,
        progress=progress,
    )


# ---- builders shared with test_registration_analysis -------------------------------------------------


def png_bytes(rgb: RgbFrame) -> bytes:
    return bytes(cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))[1].tobytes())


def jpeg_bytes(rgb: RgbFrame, quality: int = 92) -> bytes:
    encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
    return bytes(encoded.tobytes())


def resized(rgb: RgbFrame, size: tuple[int, int]) -> RgbFrame:
    interpolation = cv2.INTER_AREA if size[0] < rgb.shape[1] else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(rgb, size, interpolation=interpolation), dtype=np.uint8)


def gif_bytes(frames: Sequence[RgbFrame], frame_ms: int = 40) -> bytes:
    buffer = io.BytesIO()
    # Octree quantisation is ~40× faster than Pillow's default median cut and good enough for faces.
    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE) for f in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def video_bytes(
    frames: Sequence[RgbFrame], *, fps: int = 25, container: str = "mp4", index_first: bool = False
) -> bytes:
    """Encode with PyAV: H.264 for mp4/mov, VP8 for webm; ``index_first`` puts the moov atom up front."""
    if index_first:
        # The faststart pass rewrites the file, which needs a real file rather than a BytesIO.
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"clip.{container}"
            _encode_video(str(path), frames, fps, container, {"movflags": "faststart"})
            return path.read_bytes()
    buffer = io.BytesIO()
    _encode_video(buffer, frames, fps, container, {})
    return buffer.getvalue()


def _encode_video(
    target: str | io.BytesIO, frames: Sequence[RgbFrame], fps: int, container: str, muxer_options: dict[str, str]
) -> None:
    codec, options = ("libvpx", {"deadline": "realtime", "cpu-used": "8"}) if container == "webm" else (
        "libx264", {"preset": "veryfast", "crf": "18"})
    with av.open(target, "w", format=container, options=muxer_options) as output:
        stream = output.add_stream(codec, rate=fps, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        output.mux(stream.encode())


def gradient_frames(count: int, width: int = 64, height: int = 48) -> list[RgbFrame]:
    """Frames whose brightness encodes their index, so kept frames can be identified after decoding."""
    assert count <= 45, "brightness 20 + 5 * index must fit in a byte"
    base = np.zeros((height, width, 3), dtype=np.uint8)
    return [np.full_like(base, 20 + 5 * i) for i in range(count)]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk and nothing else: any decoder would fail on the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


# ---- sniffing ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> RgbFrame:
    return np.asarray(data.astronaut(), dtype=np.uint8)


def test_sniff_names_each_supported_format_from_its_content(astronaut: RgbFrame) -> None:
    small = astronaut[:64, :64]
    samples = {
        "png": png_bytes(small),
        "jpeg": jpeg_bytes(small),
        "gif": gif_bytes([small, small[::-1]]),
        "mp4": video_bytes([small] * 3),
        "mov": video_bytes([small] * 3, container="mov"),
        "webm": video_bytes([small] * 3, container="webm"),
    }
    assert {kind: sniff_media_kind(content[:64]) for kind, content in samples.items()} == {
        kind: kind for kind in samples
    }


def test_sniff_refuses_zero_bytes_as_empty_file() -> None:
    with pytest.raises(RegistrationError) as caught:
        sniff_media_kind(b"")
    assert (caught.value.code, http_status(caught.value.code)) == ("empty_file", 400)


def test_sniff_refuses_random_bytes_as_unsupported() -> None:
    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(RegistrationError) as caught:
        sniff_media_kind(noise)
    assert (caught.value.code, http_status(caught.value.code)) == ("unsupported_media_type", 415)


def test_text_file_named_png_is_refused_as_text() -> None:
    with pytest.raises(RegistrationError) as caught:
        decode(b"name,photo\nalice,face.png\n")
    assert caught.value.code == "unsupported_media_type"
    assert "text" in caught.value.message


def test_heic_container_is_refused_with_a_hint_not_decoded_as_video() -> None:
    heic_head = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic"
    with pytest.raises(RegistrationError) as caught:
        sniff_media_kind(heic_head)
    assert caught.value.code == "unsupported_media_type"
    assert "HEIC" in caught.value.message


# ---- refusing broken and oversized files ---------------------------------------------------------------


def test_truncated_png_is_corrupt(astronaut: RgbFrame) -> None:
    content = png_bytes(astronaut)
    with pytest.raises(RegistrationError) as caught:
        decode(content[: len(content) // 2])
    assert (caught.value.code, http_status(caught.value.code)) == ("corrupt_file", 400)


def test_png_cut_inside_its_header_is_corrupt(astronaut: RgbFrame) -> None:
    with pytest.raises(RegistrationError) as caught:
        decode(png_bytes(astronaut)[:20])
    assert caught.value.code == "corrupt_file"


def test_truncated_jpeg_is_corrupt(astronaut: RgbFrame) -> None:
    content = jpeg_bytes(astronaut)
    with pytest.raises(RegistrationError) as caught:
        decode(content[: len(content) // 2])
    assert caught.value.code == "corrupt_file"


def test_truncated_mp4_is_corrupt(astronaut: RgbFrame) -> None:
    content = video_bytes([astronaut[:64, :64]] * 10)
    with pytest.raises(RegistrationError) as caught:
        decode(content[: len(content) // 2])
    assert caught.value.code == "corrupt_file"


def test_mp4_cut_off_after_its_index_is_corrupt(astronaut: RgbFrame) -> None:
    content = video_bytes([astronaut[:64, :64], astronaut[64:128, :64]] * 10, index_first=True)
    with pytest.raises(RegistrationError) as caught:
        decode(content[: int(len(content) * 0.6)])
    assert caught.value.code == "corrupt_file"
    assert "truncated" in caught.value.message


def test_truncated_gif_is_corrupt() -> None:
    content = gif_bytes(gradient_frames(12))
    with pytest.raises(RegistrationError) as caught:
        decode(content[: len(content) // 2])
    assert caught.value.code == "corrupt_file"


def test_mp4_with_only_audio_has_no_decodable_frames() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=16_000)
        assert isinstance(stream, av.AudioStream)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        silence.sample_rate = 16_000
        for _ in range(4):
            output.mux(stream.encode(silence))
        output.mux(stream.encode())
    with pytest.raises(RegistrationError) as caught:
        decode(buffer.getvalue())
    assert (caught.value.code, http_status(caught.value.code)) == ("no_decodable_frames", 422)


def test_png_header_declaring_100000_square_is_refused_from_the_header_alone() -> None:
    # The file holds no pixel data at all: refusing it as too large proves nothing was decoded.
    with pytest.raises(RegistrationError) as caught:
        decode(png_header_only(100_000, 100_000))
    assert (caught.value.code, http_status(caught.value.code)) == ("image_too_large", 413)
    assert "100000×100000" in caught.value.message


def test_jpeg_frame_header_declaring_huge_size_is_refused_before_decoding() -> None:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 60_000, 60_000, 3) + bytes([1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1])
    with pytest.raises(RegistrationError) as caught:
        decode(b"\xff\xd8" + app0 + sof0 + b"\xff\xd9")
    assert caught.value.code == "image_too_large"


def test_gif_screen_declaring_huge_size_is_refused_before_decoding() -> None:
    header = b"GIF89a" + struct.pack("<HHBBB", 65_535, 65_535, 0, 0, 0) + b";"
    with pytest.raises(RegistrationError) as caught:
        decode(header)
    assert caught.value.code == "image_too_large"


def test_video_stream_larger_than_the_pixel_limit_is_refused(astronaut: RgbFrame) -> None:
    content = video_bytes([astronaut[:64, :96]] * 3)
    with pytest.raises(RegistrationError) as caught:
        decode(content, max_pixels=64 * 96 - 1)
    assert caught.value.code == "image_too_large"


def test_video_longer_than_the_limit_is_refused() -> None:
    content = video_bytes(gradient_frames(10), fps=5)
    with pytest.raises(RegistrationError) as caught:
        decode(content, max_duration_s=1.0)
    assert (caught.value.code, http_status(caught.value.code)) == ("video_too_long", 413)


# ---- normalisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [((512, 512), (512, 512)), ((383, 511), (382, 510)), ((1280, 720), (720, 404)), ((1001, 1501), (480, 720))],
)
def test_normalised_size_caps_the_longer_side_and_makes_both_even(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert normalised_size(*size, max_side=720) == expected


def test_odd_sized_photo_is_cropped_by_one_pixel_not_resampled(astronaut: RgbFrame) -> None:
    odd = astronaut[:511, :383]
    decoded = decode(png_bytes(odd))
    assert (decoded.source_width, decoded.source_height) == (383, 511)
    assert np.array_equal(decoded.frames[0], odd[:510, :382])


def test_large_jpeg_is_downscaled_to_the_output_limit(astronaut: RgbFrame) -> None:
    large = resized(astronaut, (1001, 1501))
    frame = decode(jpeg_bytes(large)).frames[0]
    assert frame.shape == (720, 480, 3)
    assert frame.dtype == np.uint8


def test_video_frames_are_downscaled_to_even_sizes(astronaut: RgbFrame) -> None:
    frames = [resized(astronaut, (1000, 562))] * 3
    decoded = decode(video_bytes(frames))
    assert {f.shape for f in decoded.frames} == {(404, 720, 3)}
    assert (decoded.source_width, decoded.source_height) == (1000, 562)


# ---- animations and videos ---------------------------------------------------------------------------


def _frame_indices(decoded: DecodedMedia) -> list[int]:
    return [round((float(f.mean()) - 20) / 5) for f in decoded.frames]


def test_gif_decodes_every_frame_with_its_rate() -> None:
    decoded = decode(gif_bytes(gradient_frames(12), frame_ms=50))
    assert decoded.category == "gif"
    assert _frame_indices(decoded) == list(range(12))
    assert decoded.source_fps == pytest.approx(20.0)


def test_automatic_stride_keeps_at_most_max_frames_evenly_spaced() -> None:
    content = video_bytes(gradient_frames(40), fps=25)
    decoded = decode(content, max_frames=10)
    assert decoded.stride == 4
    assert _frame_indices(decoded) == list(range(0, 40, 4))
    assert decoded.source_fps == pytest.approx(25.0)
    assert decoded.frame_fps == pytest.approx(25.0 / 4)


def test_explicit_stride_too_small_for_max_frames_is_doubled_while_decoding() -> None:
    content = video_bytes(gradient_frames(40), fps=25)
    decoded = decode(content, max_frames=10, stride=1)
    indices = _frame_indices(decoded)
    assert len(indices) <= 10
    assert decoded.stride == 4
    assert indices == list(range(0, 40, decoded.stride))


def test_webm_video_decodes() -> None:
    decoded = decode(video_bytes(gradient_frames(8), container="webm"))
    assert (decoded.kind, decoded.category, len(decoded.frames)) == ("webm", "video", 8)


def _rotate_mp4_display_matrix(content: bytes) -> bytes:
    """Rewrite the track header's matrix the way phones mark a portrait recording (90° clockwise)."""
    patched = bytearray(content)
    at = patched.find(b"tkhd")
    version = patched[at + 4]
    matrix_at = at + 8 + (32 if version == 1 else 20) + 16
    patched[matrix_at : matrix_at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    return bytes(patched)


def test_phone_video_with_a_rotation_matrix_comes_out_upright() -> None:
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frame[:, :32] = 200  # bright left half: after a clockwise turn it becomes the top half
    decoded = decode(_rotate_mp4_display_matrix(video_bytes([frame] * 3)))
    upright = decoded.frames[0]
    assert upright.shape == (64, 48, 3)
    assert (decoded.source_width, decoded.source_height) == (48, 64)
    assert upright[:28].mean() > 150 > 50 > upright[36:].mean()


def test_decode_reports_monotonic_progress_ending_at_one() -> None:
    seen: list[float] = []
    decode(video_bytes(gradient_frames(30)), progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert all(0.0 <= a <= b <= 1.0 for a, b in itertools.pairwise(seen))
