"""What a viewer sees of the articulated embedded engine: lips re-detected with dlib on the rendered frames."""

from __future__ import annotations

import functools

import dlib
import numpy as np
import numpy.typing as npt
import pytest

from processors.lipsync.engines.base import RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.mouth_warp import Pose, WarpSettings, build_plan, warp_frame
from processors.lipsync.visemes import PAUSE, UnknownPhonemes, viseme_onsets
from schemas.avatar import AvatarFaceData, RgbFrame
from tests.unit.face_fixtures import _predictor, astronaut_photo, face_frame

FPS = 25
# "ɑ b ɑ f ɑ u ɑ i" with a pause after: one frame in the middle of each phoneme is at 0.1 s steps
SPEECH = [(0.0, "ɑ"), (0.2, "b"), (0.26, "ɑ"), (0.5, "f"), (0.58, "ɑ"), (0.8, "uː"), (1.0, "ɑ"), (1.2, "iː"),
          (1.4, PAUSE)]
CLOSED_AT, OPEN_AT, LABIODENTAL_AT, ROUNDED_AT, SPREAD_AT, REST_AT = 0.23, 0.38, 0.54, 0.9, 1.3, 1.8


@functools.cache
def sample() -> AvatarFaceData:
    return astronaut_photo()


@functools.cache
def talking_video() -> AvatarFaceData:
    """A video avatar whose own mouth moves: frames of the photo opened by different amounts, each
    landmarked again by dlib, as registration would."""
    base = sample().frames[0]
    plan = build_plan(base.image, base.landmarks, WarpSettings(), idle_motion=False)
    openings = (0.0, 0.25, 0.5, 0.25)
    frames = tuple(face_frame(warp_frame(base.image, plan, Pose(opening=opening))) for opening in openings)
    return AvatarFaceData(avatar_id="talking", frames=frames, source_fps=25.0)


def lips(frame: RgbFrame, avatar: AvatarFaceData) -> npt.NDArray[np.float64]:
    x0, y0, x1, y1 = avatar.frames[0].box
    shape = _predictor()(frame, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def gap(points: npt.NDArray[np.float64]) -> float:
    """Inner-lip opening in mouth widths (dlib points 61-67 against 63-65)."""
    width = float(np.linalg.norm(points[54] - points[48]))
    return float(np.mean([np.linalg.norm(points[a] - points[b]) for a, b in ((61, 67), (62, 66), (63, 65))]) / width)


def rendered(avatar: AvatarFaceData, first_frame: int = 0) -> list[RgbFrame]:
    onsets = viseme_onsets(SPEECH, UnknownPhonemes())
    audio = np.zeros(int(2.0 * 16000), np.float32)
    return EmbeddedEngine().render(RenderJob(avatar, audio, first_frame, 2 * FPS, onsets))


def at(frames: list[RgbFrame], seconds: float) -> RgbFrame:
    return frames[int(seconds * FPS)]


@pytest.mark.parametrize("avatar", [sample, talking_video], ids=["photo showing teeth", "talking video"])
def test_the_lips_close_for_a_bilabial_and_in_a_pause_and_part_for_a_vowel(avatar: type[AvatarFaceData]) -> None:
    face = avatar()  # type: ignore[call-arg]
    for start in range(len(face.frames)):  # every source frame of the video under each phoneme
        frames = rendered(face, first_frame=start)
        assert gap(lips(at(frames, CLOSED_AT), face)) < 0.05
        assert gap(lips(at(frames, REST_AT), face)) < 0.05
        assert gap(lips(at(frames, OPEN_AT), face)) > 0.15


def test_the_sample_photo_shows_its_teeth_at_rest_so_closing_is_a_real_movement() -> None:
    assert gap(sample().frames[0].landmarks.astype(np.float64)) > 0.1


def test_rounded_vowels_are_narrower_than_spread_ones_on_screen() -> None:
    frames = rendered(sample())
    rounded = lips(at(frames, ROUNDED_AT), sample())
    spread = lips(at(frames, SPREAD_AT), sample())
    ratio = np.linalg.norm(rounded[54] - rounded[48]) / np.linalg.norm(spread[54] - spread[48])
    assert ratio < 0.85


def test_a_labiodental_raises_the_lower_lip_above_the_vowels_around_it() -> None:
    frames = rendered(sample())
    lower_lip_y = {name: lips(at(frames, when), sample())[57, 1] for name, when in
                   (("f", LABIODENTAL_AT), ("before", OPEN_AT), ("after", 0.68))}
    assert lower_lip_y["f"] < min(lower_lip_y["before"], lower_lip_y["after"]) - 2.0
