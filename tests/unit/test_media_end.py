"""An upload's own bytes end where its format says (JPEG EOI, PNG IEND, GIF trailer; an MP4/MOV's last top-level
box, a WebM's Segment): a ZIP or a script appended to a real image or video is cut off, the file itself left
byte for byte, and a truncated one left alone."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from infra.media_end import media_end, without_trailing_bytes
from infra.media_kind import MediaKind, sniff_media_kind
from processors.registration.media import decode_media
from tests.unit.test_registration_media import gradient_frames, video_bytes

SCRIPT = b"<script>alert(1)</script>\n#!/bin/sh\nrm -rf /\n"


def zip_payload() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.sh", SCRIPT)
    return buffer.getvalue()


def face_bgr() -> np.ndarray:
    return cv2.cvtColor(data.astronaut()[:160, 120:280], cv2.COLOR_RGB2BGR)


def jpeg(progressive: bool = False) -> bytes:
    ok, encoded = cv2.imencode(".jpg", face_bgr(), [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return encoded.tobytes()


def png() -> bytes:
    ok, encoded = cv2.imencode(".png", face_bgr())
    assert ok
    return encoded.tobytes()


def gif() -> bytes:
    frames = [Image.fromarray(data.astronaut()[:64, i * 8 : i * 8 + 64]) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0,
                   comment=b"a comment block")
    return buffer.getvalue()


def with_exif_thumbnail_eoi(image: bytes) -> bytes:
    """An APP1 segment right after SOI whose payload holds a whole thumbnail, EOI marker included."""
    thumbnail = jpeg()[:200] + b"\xff\xd9"
    payload = b"Exif\x00\x00" + thumbnail
    return image[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + image[2:]


IMAGES: dict[str, tuple[MediaKind, bytes]] = {
    "baseline JPEG": ("jpeg", jpeg()),
    "progressive JPEG": ("jpeg", jpeg(progressive=True)),
    "JPEG with an EXIF thumbnail": ("jpeg", with_exif_thumbnail_eoi(jpeg())),
    "PNG": ("png", png()),
    "animated GIF": ("gif", gif()),
}


@pytest.mark.parametrize("payload", [zip_payload(), SCRIPT], ids=["zip", "script"])
@pytest.mark.parametrize("name", list(IMAGES))
def test_bytes_appended_after_the_image_are_cut_off_and_the_image_kept_whole(name: str, payload: bytes) -> None:
    kind, image = IMAGES[name]
    assert media_end(image, kind) == len(image)
    assert without_trailing_bytes(image + payload, kind) == image


def test_a_truncated_image_is_left_as_it_is() -> None:
    for kind, image in IMAGES.values():
        cut = image[: len(image) * 2 // 3]
        assert media_end(cut, kind) is None and without_trailing_bytes(cut, kind) == cut


def test_a_gif_with_a_zip_appended_decodes_as_the_gif_alone() -> None:
    # Before the cut, the GIF's last byte was the ZIP's, and the decoder took it for a truncated GIF.
    decoded = decode_media(gif() + zip_payload(), max_pixels=10**6, max_side=720, max_frames=30, stride=None,
                           max_duration_s=30.0)
    assert decoded.kind == "gif" and len(decoded.frames) == 3


def decode(video: bytes) -> list[np.ndarray]:
    decoded = decode_media(video, max_pixels=10**6, max_side=720, max_frames=30, stride=1, max_duration_s=30.0)
    return decoded.frames


# Real files from PyAV's muxers: an MP4 with its moov after the media (the default) and one with it first
# (faststart), a QuickTime MOV and a WebM (VP8, whose Segment declares its size).
VIDEOS: dict[str, tuple[MediaKind, bytes]] = {
    "MP4": ("mp4", video_bytes(gradient_frames(6))),
    "MP4, index first": ("mp4", video_bytes(gradient_frames(6), index_first=True)),
    "MOV": ("mov", video_bytes(gradient_frames(6), container="mov")),
    "WebM": ("webm", video_bytes(gradient_frames(6), container="webm")),
}


@pytest.mark.parametrize("payload", [zip_payload(), SCRIPT], ids=["zip", "script"])
@pytest.mark.parametrize("name", list(VIDEOS))
def test_bytes_appended_after_a_video_are_cut_off_and_the_video_kept_whole(name: str, payload: bytes) -> None:
    kind, video = VIDEOS[name]
    assert sniff_media_kind(video[:64]) == kind
    assert media_end(video, kind) == len(video)
    kept = without_trailing_bytes(video + payload, kind)
    assert kept == video
    assert [frame.mean() for frame in decode(kept)] == [frame.mean() for frame in decode(video)]


def test_a_payload_that_starts_like_a_box_is_cut_off_too() -> None:
    # Four letters and a size running past the data: no box of this file, so the movie ends before it.
    kind, video = VIDEOS["MP4"]
    assert without_trailing_bytes(video + b"\x7f\xff\xff\xffjunk" + SCRIPT, kind) == video
    small_box = len(SCRIPT).to_bytes(4, "big") + b"free" + SCRIPT[8:]
    assert without_trailing_bytes(video + small_box, kind) == video + small_box, "a whole box is the file's own"


@pytest.mark.parametrize("name", list(VIDEOS))
def test_a_truncated_video_is_left_as_it_is_for_the_decoder_to_refuse(name: str) -> None:
    kind, video = VIDEOS[name]
    cut = video[: len(video) * 2 // 3]
    assert media_end(cut, kind) is None and without_trailing_bytes(cut, kind) == cut


def test_a_webm_of_unknown_size_is_left_as_it_is() -> None:
    _, video = VIDEOS["WebM"]
    header_end = video.index(b"\x18\x53\x80\x67") + 4
    size_length = 9 - video[header_end].bit_length()
    unknown = b"\x01" + b"\xff" * 7  # an 8-byte size with every value bit set: "to the end of the stream"
    streamed = video[:header_end] + unknown + video[header_end + size_length :]
    assert media_end(streamed, "webm") is None
    assert without_trailing_bytes(streamed + zip_payload(), "webm") == streamed + zip_payload()


def test_an_mp4_whose_last_box_runs_to_the_end_of_the_file_is_kept_whole() -> None:
    kind, video = VIDEOS["MP4, index first"]  # ftyp, moov, free, mdat: mdat last
    mdat = video.rindex(b"mdat") - 4
    to_the_end = video[:mdat] + b"\x00\x00\x00\x00" + video[mdat + 4 :]
    assert media_end(to_the_end + SCRIPT, kind) == len(to_the_end + SCRIPT)
