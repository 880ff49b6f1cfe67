"""A registered avatar's stored data: its cached face data and its default voice.

The face data is what registration writes and the lip-sync engines read. Everything the engines need is
there, so inference never detects a face. The format is versioned: a cache entry written with another
``FACE_DATA_VERSION`` is recomputed from the source, never misread. The default voice (issue 5) is what
the avatar's requests speak with when they name no TTS backend or voice of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from schemas.requests import TtsEngineName, VoiceName

FACE_DATA_VERSION = 1
LANDMARK_COUNT = 68  # iBUG 300-W layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67

RgbFrame = npt.NDArray[np.uint8]  # (height, width, 3), RGB


@dataclass(frozen=True)
class FaceFrame:
    """One avatar frame with its face: pixel box and 68 landmarks in frame coordinates."""

    image: RgbFrame
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    landmarks: npt.NDArray[np.float32]  # (68, 2) x, y


@dataclass(frozen=True)
class AvatarFaceData:
    """All frames of an avatar (one for a photo, many for a GIF or video), ready for rendering."""

    avatar_id: str
    frames: tuple[FaceFrame, ...]
    source_fps: float | None = None  # None for a still photo
    version: int = FACE_DATA_VERSION
    extras: dict[str, bytes] = field(default_factory=dict)  # engine-specific precomputed data

    @property
    def width(self) -> int:
        return int(self.frames[0].image.shape[1])

    @property
    def height(self) -> int:
        return int(self.frames[0].image.shape[0])

    @property
    def is_still(self) -> bool:
        return len(self.frames) == 1


class VoiceChoice(BaseModel):
    """A TTS backend and a voice of it, as a request or an avatar's default names them; absent = not chosen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tts: TtsEngineName | None = Field(default=None, description="TTS backend: espeak, openai or piper")
    voice: VoiceName | None = Field(default=None, description="a voice of that backend (espeak: a variant like f3)")
