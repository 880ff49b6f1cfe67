"""Frames with a known mouth, for calibrating the detector and as known-good and known-bad clips.

The sample photo shows its teeth, so the existing warp's "opening 0" is not a closed mouth. ``lift_lower_lip``
raises the lower lip (and the skin below it, fading out towards the chin) by a known share of the gap
between the inner lips, column by column: share 1 closes the lips exactly (the teeth between them are
no longer sampled), share 0.5 puts the lower lip halfway up the teeth, as for an f. Opening from there
is the project's own ``mouth_warp`` applied to the closed image with the closed landmarks, so its jaw
drop is known in pixels. ``reference_clip`` turns phone timings into such frames: closed at p/b/m, the
lower lip to the teeth at f/v, opening and width per vowel class, closed in pauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from processors.lipsync.mouth_warp import Pose, WarpPlan, WarpSettings, build_plan, warp_frame
from schemas.avatar import RgbFrame
from scripts.lipsync_quality.phonetics import Phone, Phonetic

FloatArray = npt.NDArray[np.float32]

UPPER_INNER = (60, 61, 62, 63, 64)
LOWER_INNER = (60, 67, 66, 65, 64)
LOWER_LIP_POINTS = (*range(54, 60), 48, 64, 65, 66, 67, 60)  # outer lower contour, inner lower contour
CHIN = 8

# Pose per class: (opening 0..1, width -1..1) of mouth_warp, from the closed image.
CLASS_POSES: dict[Phonetic, tuple[float, float]] = {
    Phonetic.OPEN_VOWEL: (0.9, 0.0),
    Phonetic.MID_VOWEL: (0.5, 0.2),
    Phonetic.ROUNDED: (0.45, -1.0),
    Phonetic.SPREAD: (0.3, 1.0),
    Phonetic.CONSONANT: (0.2, 0.0),
    Phonetic.OTHER: (0.2, 0.0),
}
LABIODENTAL_SHARE = 0.5  # lower lip halfway up the teeth the photo shows
# Lip corners move twice as far as the engine's default: rounding narrows a real mouth by a fifth or more.
REFERENCE_WARP = WarpSettings(max_width=0.2)


@dataclass(frozen=True)
class MouthImages:
    """One avatar frame closed, with its lower lip at the teeth, and the warp plan to open the closed one."""

    closed: RgbFrame
    labiodental: RgbFrame
    closed_landmarks: FloatArray
    plan: WarpPlan
    gap_px: float  # the source's gap between the inner lips at the middle, in pixels


def inner_gap(landmarks: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(x, gap) knots along the mouth: how far the lower inner lip lies below the upper one."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    upper, lower = points[list(UPPER_INNER)], points[list(LOWER_INNER)]
    order = np.argsort(upper[:, 0])
    xs = upper[order, 0]
    gap = np.maximum(np.interp(xs, *_sorted(lower)) - upper[order, 1], 0.0)
    return xs.astype(np.float32), gap.astype(np.float32)


def _sorted(points: FloatArray) -> tuple[FloatArray, FloatArray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


def lift_lower_lip(image: RgbFrame, landmarks: npt.ArrayLike, share: float) -> tuple[RgbFrame, FloatArray]:
    """``image`` with the lower lip raised by ``share`` of the inner-lip gap, and the moved landmarks."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    knots_x, gap = inner_gap(points)
    upper_x, upper_y = _sorted(points[list(UPPER_INNER)])
    height, width = image.shape[:2]
    x0, x1 = int(points[48, 0]) - 4, int(points[54, 0]) + 5
    y0, y1 = int(upper_y.min()) - 2, int(points[CHIN, 1]) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    grid_x, grid_y = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    lift = share * np.interp(grid_x, knots_x, gap, left=0.0, right=0.0)
    lip_line = np.interp(grid_x, upper_x, upper_y)
    below = grid_y >= lip_line  # pixels under the upper inner lip take content from further down
    # Fully lifted down to the lower lip's outer edge, fading to nothing at the chin.
    lip_bottom, chin = float(points[57, 1]), float(points[CHIN, 1])
    fade = np.clip((chin - grid_y) / max(chin - lip_bottom, 1.0), 0.0, 1.0)
    shift = np.where(below, lift * np.minimum(fade, 1.0), 0.0).astype(np.float32)
    out = np.array(image)
    out[y0:y1, x0:x1] = cv2.remap(image, grid_x, grid_y + shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved = points.copy()
    for index in LOWER_LIP_POINTS:
        moved[index, 1] -= share * float(np.interp(points[index, 0], knots_x, gap, left=0.0, right=0.0))
    return out, moved


def mouth_images(image: RgbFrame, landmarks: npt.ArrayLike) -> MouthImages:
    closed, closed_points = lift_lower_lip(image, landmarks, 1.0)
    labiodental, _ = lift_lower_lip(image, landmarks, LABIODENTAL_SHARE)
    plan = build_plan(closed, closed_points, REFERENCE_WARP, idle_motion=False)
    _, gap = inner_gap(landmarks)
    return MouthImages(closed, labiodental, closed_points, plan, float(gap.max()))


def posed(images: MouthImages, opening: float, width: float = 0.0) -> RgbFrame:
    """The closed image opened to ``opening`` (mouth_warp's 0..1) with lip ``width`` -1..1."""
    return warp_frame(images.closed, images.plan, Pose(opening=opening, width=width))


def reference_frame(images: MouthImages, kind: Phonetic | None) -> RgbFrame:
    """The mouth a phone of ``kind`` is said with; ``None`` is a pause (closed)."""
    if kind is None or kind is Phonetic.BILABIAL:
        return images.closed
    if kind is Phonetic.LABIODENTAL:
        return images.labiodental
    opening, width = CLASS_POSES[kind]
    return posed(images, opening, width)


def reference_clip(images: MouthImages, phones: Sequence[Phone], n_frames: int, fps: float,
                   *, delay_s: float = 0.0) -> list[RgbFrame]:
    """Each frame shows the phone sounding at its middle moment (``delay_s`` later: a late picture)."""
    frames: list[RgbFrame] = []
    cache: dict[Phonetic | None, RgbFrame] = {}
    for index in range(n_frames):
        moment = (index + 0.5) / fps - delay_s
        kind = next((phone.kind for phone in phones if phone.start <= moment < phone.end), None)
        if kind not in cache:
            cache[kind] = reference_frame(images, kind)
        frames.append(cache[kind])
    return frames
