"""Re-reads the lips on rendered frames: dlib's 68 points per frame, reduced to opening, width and lower-lip height.

Every measure is divided by the inter-ocular distance (the distance between the two eye centres), which
the mouth's movement does not change, so figures compare across avatars and frame sizes. The face is
found once per clip (the first frame) and the predictor re-reads every frame inside that box, grown by
a margin so a video avatar's small head motion stays inside it: detection is ~25 ms, a re-read ~2 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np
import numpy.typing as npt

from processors.registration.faces import default_predictor_path
from schemas.avatar import RgbFrame

FloatArray = npt.NDArray[np.float64]

RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper inner lip point, the lower one facing it
MOUTH_CORNERS = (48, 54)
LOWER_LIP_OUTER = (56, 57, 58)  # the lower lip's outer edge, where a tuck under the teeth shows
NOSE_BASE = 33
BOX_MARGIN = 0.1  # of the face box, on each side: room for a video avatar's sway
BOX_NUDGE = 0.03
READ_WIDTH_PX = 360  # the face box is enlarged to this width before the points are read


@dataclass(frozen=True)
class LipTrack:
    """Per frame, in inter-ocular distances: inner-lip ``opening``, mouth ``width`` (corner to corner) and
    ``lower_lip`` (nose base down to the lower lip's outer edge: smaller means the lower lip is higher)."""

    opening: FloatArray
    width: FloatArray
    lower_lip: FloatArray

    def __len__(self) -> int:
        return int(self.opening.shape[0])


def landmark_model_path() -> Path:
    """The 68-point model file the registration uses (shipped in ``face-recognition-models``), checked to exist."""
    path = default_predictor_path()
    if not path.is_file():
        raise RuntimeError(f"68-point landmark model missing at {path}")
    return path


@functools.cache
def _detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def _predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(landmark_model_path()))


def face_box(frame: RgbFrame) -> dlib.rectangle:
    """The most confident face in ``frame``, grown by ``BOX_MARGIN``; ValueError if there is none."""
    rects, scores, _ = _detector().run(np.ascontiguousarray(frame), 1, 0.0)
    if not rects:
        raise ValueError("no face found in the frame")
    best = rects[int(np.argmax(scores))]
    grow_x, grow_y = round(BOX_MARGIN * best.width()), round(BOX_MARGIN * best.height())
    return dlib.rectangle(best.left() - grow_x, best.top() - grow_y, best.right() + grow_x, best.bottom() + grow_y)


def landmarks(frame: RgbFrame, box: dlib.rectangle, nudges: Sequence[tuple[int, int]] = ((0, 0),)) -> FloatArray:
    """The 68 (x, y) points of the face inside ``box`` (one set per box moved by each of ``nudges``, in
    pixels), to a fraction of a pixel: shape (len(nudges), 68, 2).

    dlib reports whole pixels; on a 90 px face one pixel is 0.02 of the inter-ocular distance, as much as
    the gap of a slightly parted mouth. So the box's region is enlarged to ``READ_WIDTH_PX`` first (once
    for all nudges) and the points scaled back.
    """
    height, width = frame.shape[:2]
    reach = max((max(abs(dx), abs(dy)) for dx, dy in nudges), default=0) + 2
    x0, y0 = max(box.left() - reach, 0), max(box.top() - reach, 0)
    x1, y1 = min(box.right() + 1 + reach, width), min(box.bottom() + 1 + reach, height)
    scale = READ_WIDTH_PX / max(box.width(), 1)
    crop = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_CUBIC)
    predictor = _predictor()
    sets = []
    for dx, dy in nudges:
        region = dlib.rectangle(round((box.left() + dx - x0) * scale), round((box.top() + dy - y0) * scale),
                                round((box.right() + dx - x0) * scale), round((box.bottom() + dy - y0) * scale))
        shape = predictor(crop, region)
        sets.append([[point.x, point.y] for point in shape.parts()])
    # The centre of an enlarged pixel, mapped back: +0.5 then -0.5 in the two pixel grids.
    return (np.array(sets, dtype=np.float64) + 0.5) / scale - 0.5 + np.array([x0, y0])


def lip_measures(points: FloatArray) -> tuple[float, float, float]:
    """(opening, width, lower_lip) of one face's 68 points, in inter-ocular distances."""
    eyes = float(np.linalg.norm(points[RIGHT_EYE].mean(axis=0) - points[LEFT_EYE].mean(axis=0)))
    scale = max(eyes, 1.0)
    # Three facing pairs, not just the middle one: a lip pressed at the centre but parted at one side
    # still reads as a little open, as a viewer sees it.
    gap = float(np.mean([np.linalg.norm(points[upper] - points[lower]) for upper, lower in INNER_LIP_PAIRS]))
    width = float(np.linalg.norm(points[MOUTH_CORNERS[0]] - points[MOUTH_CORNERS[1]]))
    # Vertical distance along the face's own down axis (perpendicular to the eye line), so a tilt of the
    # head does not read as a moving lip.
    across = points[LEFT_EYE].mean(axis=0) - points[RIGHT_EYE].mean(axis=0)
    down = np.array([-across[1], across[0]]) / scale
    lower = float((points[list(LOWER_LIP_OUTER)].mean(axis=0) - points[NOSE_BASE]) @ down)
    return gap / scale, width / scale, lower / scale


def nudges(box: dlib.rectangle) -> list[tuple[int, int]]:
    """No move, and moves by ``BOX_NUDGE`` of the box's width left, right, down and up."""
    step = max(round(BOX_NUDGE * box.width()), 1)
    return [(0, 0), (step, 0), (-step, 0), (0, step), (0, -step)]


def lip_reading(frame: RgbFrame, box: dlib.rectangle) -> tuple[float, float, float]:
    """(opening, width, lower_lip) of ``frame``, averaged over the nudged boxes.

    dlib's regression trees start from the box, and on a mouth a pixel of box difference moves the
    inner-lip reading by up to 0.04 inter-ocular distances, as much as a small opening: over five
    nudged boxes a still closed mouth reads within 0.017-0.028 under sub-pixel motion (one box:
    0.013-0.058), see ``calibration``.
    """
    values = np.array([lip_measures(points) for points in landmarks(frame, box, nudges(box))])
    opening, width, lower = values.mean(axis=0)
    return float(opening), float(width), float(lower)


def lip_track(frames: Sequence[RgbFrame], box: dlib.rectangle | None = None) -> LipTrack:
    """Opening, width and lower-lip height of every frame, the face found once in the first frame."""
    if not frames:
        empty = np.zeros(0)
        return LipTrack(empty, empty, empty)
    region = box if box is not None else face_box(frames[0])
    values = np.array([lip_reading(frame, region) for frame in frames], dtype=np.float64)
    return LipTrack(opening=values[:, 0], width=values[:, 1], lower_lip=values[:, 2])
