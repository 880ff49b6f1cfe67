"""An avatar's frames kept JPEG-compressed in memory and decoded on demand, so loading a video avatar is fast."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from schemas.avatar import AvatarFaceData, FaceFrame, RgbFrame

# q90 is visually lossless at these sizes and ~30% smaller than q95: a 10-second 720p clip's frames come
# out of PostgreSQL in ~30 ms instead of ~45 ms, and the lip-sync output is re-encoded anyway.
JPEG_QUALITY = 90
# Decoded frames each pack keeps: a renderer reads a frame's image a few times while drawing it, and the
# LRU bounds a long video to a few frames' worth of raw pixels instead of all of them.
DECODED_FRAMES_KEPT = 8


def encode_frame(image: RgbFrame) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of an avatar frame failed")
    return bytes(jpeg.tobytes())


def decode_frame(jpeg: bytes | memoryview) -> RgbFrame:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("a cached avatar frame is not a decodable JPEG")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


class FramePack:
    """All JPEG frames of one avatar back to back in one buffer, with a small LRU of decoded frames."""

    def __init__(self, jpegs: bytes, sizes: Sequence[int], *, keep_decoded: int = DECODED_FRAMES_KEPT) -> None:
        ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
        if len(ends) == 0 or int(ends[-1]) != len(jpegs):
            raise ValueError(f"frame sizes add up to {int(ends[-1]) if len(ends) else 0}, not {len(jpegs)} bytes")
        self._jpegs = jpegs
        self._starts = np.concatenate([[0], ends[:-1]])
        self._ends = ends
        self._keep = max(1, keep_decoded)
        self._decoded: OrderedDict[int, RgbFrame] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_images(cls, images: Sequence[RgbFrame], **kwargs: int) -> FramePack:
        jpegs = [encode_frame(image) for image in images]
        return cls(b"".join(jpegs), [len(j) for j in jpegs], **kwargs)

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def jpegs(self) -> bytes:
        return self._jpegs

    @property
    def sizes(self) -> list[int]:
        return [int(end - start) for start, end in zip(self._starts, self._ends, strict=True)]

    def jpeg(self, index: int) -> memoryview:
        return memoryview(self._jpegs)[int(self._starts[index]) : int(self._ends[index])]

    def image(self, index: int) -> RgbFrame:
        with self._lock:
            found = self._decoded.get(index)
            if found is not None:
                self._decoded.move_to_end(index)
                return found
        # Decoded outside the lock: sessions rendering other frames of this avatar need not wait.
        image = decode_frame(self.jpeg(index))
        image.flags.writeable = False  # shared by every session: a renderer must copy before drawing
        with self._lock:
            self._decoded[index] = image
            while len(self._decoded) > self._keep:
                self._decoded.popitem(last=False)
        return image

    @property
    def nbytes(self) -> int:
        """Memory held now: the compressed frames plus the decoded ones kept."""
        with self._lock:
            decoded = sum(image.nbytes for image in self._decoded.values())
        return len(self._jpegs) + decoded


class PackedFaceFrame(FaceFrame):
    """A FaceFrame whose ``image`` is decoded from its FramePack when a renderer first reads it."""

    def __init__(self, pack: FramePack, index: int, box: tuple[int, int, int, int],
                 landmarks: npt.NDArray[np.float32]) -> None:
        # FaceFrame is a frozen dataclass: its fields are set the way its own __init__ sets them.
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "pack", pack)
        object.__setattr__(self, "index", index)

    pack: FramePack
    index: int

    @property
    def image(self) -> RgbFrame:
        return self.pack.image(self.index)


def resident_bytes(face_data: AvatarFaceData) -> int:
    """Memory an avatar's face data holds: each frame pack once, or the raw frames of an unpacked avatar."""
    packs: dict[int, FramePack] = {}
    total = 0
    for frame in face_data.frames:
        if isinstance(frame, PackedFaceFrame):
            packs[id(frame.pack)] = frame.pack
        else:
            total += frame.image.nbytes
        total += frame.landmarks.nbytes
    return total + sum(pack.nbytes for pack in packs.values())
