"""An image's own bytes end at its end marker (JPEG EOI, PNG IEND, GIF trailer): a ZIP or a script appended to a
real JPEG, PNG or GIF is cut off, the image itself left byte for byte, and a truncated image left alone."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from infra.image_end import image_end, without_trailing_bytes
from infra.media_kind import MediaKind
from processors.registration.media import decode_media

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
    assert image_end(image, kind) == len(image)
    assert without_trailing_bytes(image + payload, kind) == image


def test_a_truncated_image_or_a_video_is_left_as_it_is() -> None:
    for kind, image in IMAGES.values():
        cut = image[: len(image) * 2 // 3]
        assert image_end(cut, kind) is None and without_trailing_bytes(cut, kind) == cut
    assert without_trailing_bytes(b"\x00\x00\x00\x18ftypmp42" + zip_payload(), "mp4").endswith(zip_payload())


def test_a_gif_with_a_zip_appended_decodes_as_the_gif_alone() -> None:
    # Before the cut, the GIF's last byte was the ZIP's, and the decoder took it for a truncated GIF.
    decoded = decode_media(gif() + zip_payload(), max_pixels=10**6, max_side=720, max_frames=30, stride=None,
                           max_duration_s=30.0)
    assert decoded.kind == "gif" and len(decoded.frames) == 3
