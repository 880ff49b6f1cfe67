"""Derives the detector thresholds from frames with a known mouth: closed, parted by known amounts, lip raised.

dlib's inner-lip points on a closed mouth are not exactly together, and on a small opening they lag the
pixels (on the sample photo a 2 px slit reads as closed), so "closed" and "parted" are defined by what
the detector reads on frames whose mouth is known by construction (``reference``):

* closed: the lower lip lifted onto the upper one, under sub-pixel shifts and small scalings (the head
  moves, the box is re-used) and through the service's H.264. ``closed`` is the highest reading plus a
  quarter of the distance to ``parted``, so detector noise on a closed mouth stays below it.
* parted: the same closed frames opened by mouth_warp to ``OPEN_POSES``, the smallest being about 0.13
  inter-ocular distances between the lips at the middle (~8 mm on an adult face, a gap a viewer sees at
  once); ``parted`` is the lowest of their readings. A smaller opening (pose 0.3, a 4 px slit on the
  sample) reads 0.025-0.045, inside the closed readings: dlib cannot tell it from closed.
* raised: half the smallest raise read for a known tuck (the lower lip lifted half the teeth gap, ~5 mm
  on an adult face, against the same frames opened to a half-open vowel), and at least
  ``RAISE_SIGMAS`` standard deviations of the lower-lip reading on still closed frames (its noise under
  shifts, scaling and H.264), so a raise that passes is both visible and not detector jitter.

* tucked: the highest opening read on that known tuck (the teeth's lower half showing above the lower lip),
  plus half the distance to the lowest reading of the half-open vowel. An f/v reads between ``closed`` and
  ``tucked``: above it the mouth is simply open (a mouth following the loudness is, on every f), below
  ``closed`` it is shut (a mouth that says f as m).

``calibrate`` redoes this on any avatar frame; ``SAMPLE_THRESHOLDS`` is its result on the sample photo,
written down so the benchmark and the tests agree (a test checks the two still match). There: closed
frames read 0.000-0.045 (not 0: the points of a shut mouth sit a little apart), the smallest known
opening reads 0.075 and up, the known tuck raises the lower lip 0.045-0.08 against a half-open vowel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import dlib
import numpy as np
import numpy.typing as npt

from schemas.avatar import RgbFrame
from scripts.lipsync_quality.landmarks import face_box, lip_reading
from scripts.lipsync_quality.media import round_trip
from scripts.lipsync_quality.metrics import Thresholds
from scripts.lipsync_quality.reference import lift_lower_lip, mouth_images, posed

SHIFTS_PX = (-0.5, 0.0, 0.5)
SCALES = (0.98, 1.0, 1.02)
OPEN_POSES = (0.45, 0.6, 0.9)  # mouth_warp openings "parted" must catch
RAISED_POSE = 0.45
CLOSED_MARGIN = 0.25
RAISED_SHARE = 0.5
RAISE_SIGMAS = 3.0
TUCKED_MARGIN = 0.5

SAMPLE_THRESHOLDS = Thresholds(closed=0.052, parted=0.075, raised=0.023, tucked=0.107)


@dataclass(frozen=True)
class Calibration:
    """The readings the thresholds were derived from, and the thresholds."""

    closed_readings: tuple[float, ...]
    parted_readings: tuple[float, ...]
    raise_readings: tuple[float, ...]
    thresholds: Thresholds


def jittered(image: RgbFrame) -> Iterator[RgbFrame]:
    """``image`` moved by sub-pixel shifts and scaled slightly about its centre."""
    height, width = image.shape[:2]
    for scale in SCALES:
        for dx in SHIFTS_PX:
            for dy in SHIFTS_PX:
                matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, scale)
                matrix[:, 2] += np.array([dx, dy])
                moved = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT)
                yield np.asarray(moved, dtype=np.uint8)


def readings(frames: Sequence[RgbFrame], box: dlib.rectangle) -> npt.NDArray[np.float64]:
    """(opening, width, lower_lip) of each frame and of each after the H.264 round trip."""
    viewed = [*frames, *round_trip(frames)]
    return np.array([lip_reading(frame, box) for frame in viewed])


def calibrate(image: RgbFrame, points: npt.ArrayLike) -> Calibration:
    """The thresholds for frames like ``image`` (an avatar frame with its 68 registered ``points``)."""
    images = mouth_images(image, points)
    box = face_box(image)  # found once, as on a clip's first frame; the jitter then moves the face in it
    closed = readings(list(jittered(images.closed)), box)
    parted = np.concatenate([readings(list(jittered(posed(images, pose))), box)[:, 0] for pose in OPEN_POSES])
    tuck_read = readings(list(jittered(lift_lower_lip(image, points, RAISED_SHARE)[0])), box)
    vowel_read = readings(list(jittered(posed(images, RAISED_POSE))), box)
    tucked, vowel = tuck_read[:, 2], vowel_read[:, 2]
    parted_at = float(parted.min())
    highest_closed = float(closed[:, 0].max())
    closed_at = highest_closed + CLOSED_MARGIN * max(parted_at - highest_closed, 0.0)
    highest_tuck = float(tuck_read[:, 0].max())
    tucked_at = highest_tuck + TUCKED_MARGIN * max(float(vowel_read[:, 0].min()) - highest_tuck, 0.0)
    thresholds = Thresholds(closed=round(closed_at, 3), parted=round(parted_at, 3),
                            raised=round(max(0.5 * float((vowel - tucked).min()),
                                                  RAISE_SIGMAS * float(closed[:, 2].std())), 3),
                            tucked=round(tucked_at, 3))
    return Calibration(tuple(closed[:, 0].tolist()), tuple(parted.tolist()), tuple((vowel - tucked).tolist()),
                       thresholds)
