"""Face quality checks (size, sharpness, pose, mouth, exposure) and the report an admin sees."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from processors.registration.errors import RegistrationError
from schemas.avatar import RgbFrame

Severity = Literal["error", "warning"]
Landmarks = npt.NDArray[np.float32]

# iBUG 300-W indices.
_INNER_FACE = slice(17, 68)  # brows, eyes, nose, mouth: skin and features, little background
_MOUTH = slice(48, 68)
_OUTER_LIPS = slice(48, 60)
_CHIN = 8  # the jaw moves when the avatar speaks, so the chin must be in the picture too
_RIGHT_EYE, _LEFT_EYE = slice(36, 42), slice(42, 48)  # the subject's right eye is on the image's left
_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER, _NOSE_TIP = 36, 45, 30
_UPPER_LIP_TOP = 51

# Pose from a generic head. The nose tip stands ~0.4 outer-eye-corner widths in front of those corners,
# and ~0.4 eye-to-lip heights in front of the eye and upper-lip lines. In the 68-point model's own mean
# (frontal) shape the nose tip sits 57% of the way down from the eye line to the top of the upper lip;
# the lip top, unlike the mouth corners, barely moves when the avatar smiles.
_YAW_DEPTH_RATIO = 0.4
_PITCH_NOSE_POSITION = 0.57
_PITCH_DEPTH_RATIO = 0.4

SHARPNESS_CROP_PX = 96  # faces are compared at the size a lip-sync model sees them (Wav2Lip: 96×96)
_CLIP_LOW, _CLIP_HIGH = 5, 250


@dataclass(frozen=True)
class QualityThresholds:
    """Where a measure turns into a warning and where it refuses the upload."""

    min_face_px: float = 80.0
    warn_face_px: float = 128.0
    min_sharpness: float = 15.0
    warn_sharpness: float = 50.0
    max_yaw_deg: float = 35.0
    warn_yaw_deg: float = 20.0
    max_pitch_deg: float = 35.0
    warn_pitch_deg: float = 20.0
    warn_roll_deg: float = 25.0
    min_mouth_in_frame: float = 0.9  # fraction of frames whose whole mouth and chin are inside the picture
    min_mouth_brightness: float = 25.0
    warn_mouth_brightness: float = 45.0
    min_mouth_contrast: float = 4.0
    warn_mouth_contrast: float = 8.0
    min_brightness: float = 40.0
    warn_low_brightness: float = 70.0
    max_brightness: float = 225.0
    warn_high_brightness: float = 200.0
    max_clipped: float = 0.35
    warn_clipped: float = 0.10
    max_lost_fraction: float = 0.2
    face_dominance: float = 2.0  # a face this many times larger (by area) than any other is the one meant


@dataclass(frozen=True)
class QualityCheck:
    """One measured property; ``ok`` is False for a warning or an error, ``severity`` says which."""

    name: str
    value: float | None
    threshold: float | None  # the limit crossed, or for a passing check the nearest limit it cleared
    ok: bool
    severity: Severity | None  # None when ok
    message: str
    code: str | None = None  # the RegistrationError code raised when this check is an error

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["value"] = _json_number(self.value)
        out["threshold"] = _json_number(self.threshold)
        return out


@dataclass(frozen=True)
class QualityReport:
    """All checks of one upload; ``passed`` is False when any check is an error."""

    passed: bool
    checks: list[QualityCheck]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.to_dict() for c in self.checks], "warnings": list(self.warnings)}

    def first_error(self) -> QualityCheck | None:
        return next((c for c in self.checks if c.severity == "error"), None)

    def check(self, name: str) -> QualityCheck | None:
        return next((c for c in self.checks if c.name == name), None)


def make_report(checks: Sequence[QualityCheck], extra_warnings: Sequence[str] = ()) -> QualityReport:
    warnings = [*extra_warnings, *(c.message for c in checks if c.severity == "warning")]
    return QualityReport(passed=all(c.severity != "error" for c in checks), checks=list(checks), warnings=warnings)


def raise_for_errors(report: QualityReport) -> None:
    """Raise the first failing error check as a RegistrationError carrying the whole report."""
    failed = report.first_error()
    if failed is not None:
        raise RegistrationError(failed.code or "quality_check_failed", failed.message, report=report)


@dataclass(frozen=True)
class FaceMetrics:
    """Everything measured on one frame's face."""

    face_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    mouth_in_frame: bool
    mouth_brightness: float
    mouth_contrast: float
    brightness: float
    clipped: float


def measure_face(rgb: RgbFrame, landmarks: Landmarks) -> FaceMetrics:
    gray = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    extent = landmarks.max(axis=0) - landmarks.min(axis=0)
    inner = _crop(gray, landmarks[_INNER_FACE])
    lips = _inside_polygon(gray, landmarks[_OUTER_LIPS])
    yaw, pitch, roll = head_pose(landmarks)
    height, width = gray.shape
    mouth_points = np.vstack([landmarks[_MOUTH], landmarks[_CHIN]])
    return FaceMetrics(
        face_px=float(max(extent)),
        sharpness=sharpness(inner),
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        mouth_in_frame=bool(np.all((mouth_points >= 0) & (mouth_points <= [width - 1, height - 1]))),
        mouth_brightness=_mean(lips),
        mouth_contrast=float(lips.std()) if lips.size else 0.0,
        brightness=_mean(inner),
        clipped=float(np.mean((inner <= _CLIP_LOW) | (inner >= _CLIP_HIGH))) if inner.size else 1.0,
    )


def sharpness(gray_crop: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian after scaling the crop's longer side to ``SHARPNESS_CROP_PX``.

    Fixing the scale makes the number depend on blur relative to the face, not on the face's pixel size.
    """
    if min(gray_crop.shape[:2], default=0) < 4:
        return 0.0
    scale = SHARPNESS_CROP_PX / max(gray_crop.shape[:2])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(gray_crop, None, fx=scale, fy=scale, interpolation=interpolation)
    return float(cv2.Laplacian(resized, cv2.CV_64F).var())


def head_pose(landmarks: Landmarks) -> tuple[float, float, float]:
    """Approximate (yaw, pitch, roll) in degrees from 2-D landmark ratios; 0 is facing the camera.

    Roll is the eye line's angle. After levelling it out, the nose tip's horizontal offset from the
    middle of the outer eye corners gives yaw, and its vertical place between the eye and mouth lines
    gives pitch (positive: looking down), each via the nose's depth in a generic head.
    """
    points = landmarks.astype(np.float64)
    right_eye, left_eye = points[_RIGHT_EYE].mean(axis=0), points[_LEFT_EYE].mean(axis=0)
    roll = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    centre = (right_eye + left_eye) / 2
    cos, sin = math.cos(-roll), math.sin(-roll)
    level = (points - centre) @ np.array([[cos, sin], [-sin, cos]])
    outer_r, outer_l, nose = level[_RIGHT_EYE_OUTER], level[_LEFT_EYE_OUTER], level[_NOSE_TIP]
    eye_span = max(outer_l[0] - outer_r[0], 1e-6)
    yaw_offset = (nose[0] - (outer_r[0] + outer_l[0]) / 2) / eye_span
    eye_y = (outer_r[1] + outer_l[1]) / 2
    mouth_y = level[_UPPER_LIP_TOP][1]
    nose_position = (nose[1] - eye_y) / max(mouth_y - eye_y, 1e-6)
    yaw = math.degrees(math.atan(yaw_offset / _YAW_DEPTH_RATIO))
    pitch = math.degrees(math.atan((nose_position - _PITCH_NOSE_POSITION) / _PITCH_DEPTH_RATIO))
    return yaw, pitch, math.degrees(roll)


def evaluate(
    metrics: Sequence[FaceMetrics], thresholds: QualityThresholds, *, frames: int = 1
) -> list[QualityCheck]:
    """The per-face checks; for a clip each measure is the median over the sampled frames.

    The median lets a few motion-blurred or mid-blink frames pass while a clip that is soft throughout
    does not.
    """
    t = thresholds
    face_px = _median([m.face_px for m in metrics])
    sharp = _median([m.sharpness for m in metrics])
    yaw = _median([abs(m.yaw_deg) for m in metrics])
    pitch = _median([abs(m.pitch_deg) for m in metrics])
    roll = _median([abs(m.roll_deg) for m in metrics])
    in_frame = float(np.mean([m.mouth_in_frame for m in metrics]))
    return [
        _at_least("face_size", "face_too_small", face_px, t.min_face_px, t.warn_face_px,
                  f"The face is {face_px:.0f} px across",
                  "move the camera closer or upload a higher-resolution file", " px"),
        *_exposure(metrics, t),
        _at_least("sharpness", "too_blurry", sharp, t.min_sharpness, t.warn_sharpness,
                  f"Face sharpness (variance of Laplacian at {SHARPNESS_CROP_PX} px) is {sharp:.1f}",
                  "the face is out of focus or motion-blurred; use a sharper shot"),
        _at_most("yaw", "extreme_pose", yaw, t.max_yaw_deg, t.warn_yaw_deg,
                 f"The head is turned {yaw:.0f}° sideways", "face the camera", "°"),
        _at_most("pitch", "extreme_pose", pitch, t.max_pitch_deg, t.warn_pitch_deg,
                 f"The head is tilted {pitch:.0f}° up or down", "keep the head level", "°"),
        _at_most("roll", None, roll, None, t.warn_roll_deg,
                 f"The head is tilted {roll:.0f}° towards a shoulder", "keep the head upright", "°"),
        _mouth_in_frame(in_frame, t.min_mouth_in_frame, frames),
        *_mouth_visibility(metrics, t),
    ]


def detection_checks(
    *, found: int, total: int, ambiguous: bool, max_faces: int, frames_with_others: int, max_lost_fraction: float
) -> list[QualityCheck]:
    """Checks on what the detector saw: a face at all, a single dominant one, kept through the clip."""
    if found == 0:
        return [_failed("face_found", "no_face", 0.0, 1.0,
                        "No face was found; upload a photo or clip showing one face clearly, facing the camera.")]
    checks = [QualityCheck("face_found", 1.0, 1.0, True, None, "A face was found.", "no_face")]
    checks.append(_single_face(ambiguous, max_faces, frames_with_others, total))
    if total > 1:
        checks.append(_face_tracked(found, total, max_lost_fraction))
    return checks


def _single_face(ambiguous: bool, max_faces: int, frames_with_others: int, total: int) -> QualityCheck:
    if ambiguous:
        return _failed("single_face", "multiple_faces", float(max_faces), 1.0,
                       f"{max_faces} faces of similar size were found; upload media showing only the avatar's face.")
    if frames_with_others:
        where = "" if total == 1 else f" in {frames_with_others} frame(s)"
        return QualityCheck("single_face", float(max_faces), 1.0, False, "warning",
                            f"Smaller faces{where} were ignored; the largest face is used.", "multiple_faces")
    return QualityCheck("single_face", 1.0, 1.0, True, None, "Exactly one face.", "multiple_faces")


def _face_tracked(found: int, total: int, max_lost_fraction: float) -> QualityCheck:
    fraction = found / total
    minimum = 1.0 - max_lost_fraction
    text = f"The face was found in {found} of {total} analysed frames"
    if fraction < minimum:
        return _failed("face_tracked", "face_lost", fraction, minimum,
                       f"{text}; at least {minimum:.0%} are needed. Keep the face in view throughout the clip.")
    if found < total:
        return QualityCheck("face_tracked", fraction, 1.0, False, "warning",
                            f"{text}; the {total - found} frame(s) without it were dropped.", "face_lost")
    return QualityCheck("face_tracked", fraction, 1.0, True, None, f"{text}.", "face_lost")


def _mouth_in_frame(fraction: float, minimum: float, frames: int) -> QualityCheck:
    advice = "frame the shot so the mouth and chin are fully visible"
    if frames > 1:
        text = f"The mouth and chin are inside the picture in {fraction:.0%} of frames"
        return _at_least("mouth_in_frame", "mouth_not_visible", fraction, minimum, 1.0, text, advice, "%")
    if fraction < 1:
        return _failed("mouth_in_frame", "mouth_not_visible", fraction, 1.0,
                       f"Part of the mouth or chin is outside the picture: {advice}.")
    return QualityCheck("mouth_in_frame", fraction, 1.0, True, None,
                        "The mouth and chin are inside the picture.", "mouth_not_visible")


def _mouth_visibility(metrics: Sequence[FaceMetrics], t: QualityThresholds) -> list[QualityCheck]:
    brightness = _median([m.mouth_brightness for m in metrics])
    contrast = _median([m.mouth_contrast for m in metrics])
    return [
        _at_least("mouth_brightness", "mouth_not_visible", brightness, t.min_mouth_brightness,
                  t.warn_mouth_brightness, f"The lips' mean brightness is {brightness:.0f}/255",
                  "light the lower face"),
        _at_least("mouth_contrast", "mouth_occluded", contrast, t.min_mouth_contrast, t.warn_mouth_contrast,
                  f"The contrast within the lips is {contrast:.1f}",
                  "the mouth looks covered or featureless; remove anything in front of it"),
    ]


def _exposure(metrics: Sequence[FaceMetrics], t: QualityThresholds) -> list[QualityCheck]:
    brightness = _median([m.brightness for m in metrics])
    clipped = _median([m.clipped for m in metrics])
    text = f"The face's mean brightness is {brightness:.0f}/255"
    dark = _at_least("brightness", "too_dark", brightness, t.min_brightness, t.warn_low_brightness, text,
                     "the face is underexposed; add light")
    bright = _at_most("brightness", "too_bright", brightness, t.max_brightness, t.warn_high_brightness, text,
                      "the face is overexposed; reduce light or exposure")
    worse = dark if brightness < (t.min_brightness + t.max_brightness) / 2 else bright
    return [
        worse,
        _at_most("clipping", "poor_exposure", clipped, t.max_clipped, t.warn_clipped,
                 f"{clipped:.0%} of the face's pixels are clipped to black or white",
                 "avoid harsh light and deep shadow on the face", "%"),
    ]


def _at_least(
    name: str,
    code: str | None,
    value: float,
    error_below: float | None,
    warn_below: float,
    text: str,
    advice: str,
    unit: str = "",
) -> QualityCheck:
    if error_below is not None and value < error_below:
        return QualityCheck(name, value, error_below, False, "error",
                            f"{text}; at least {_fmt(error_below, unit)} is required: {advice}.", code)
    if value < warn_below:
        return QualityCheck(name, value, warn_below, False, "warning",
                            f"{text}; {_fmt(warn_below, unit)} or more is recommended: {advice}.", code)
    return QualityCheck(name, value, warn_below, True, None, f"{text}.", code)


def _at_most(
    name: str,
    code: str | None,
    value: float,
    error_above: float | None,
    warn_above: float,
    text: str,
    advice: str,
    unit: str = "",
) -> QualityCheck:
    if error_above is not None and value > error_above:
        return QualityCheck(name, value, error_above, False, "error",
                            f"{text}; at most {_fmt(error_above, unit)} is accepted: {advice}.", code)
    if value > warn_above:
        return QualityCheck(name, value, warn_above, False, "warning",
                            f"{text}; {_fmt(warn_above, unit)} or less is recommended: {advice}.", code)
    return QualityCheck(name, value, warn_above, True, None, f"{text}.", code)


def _failed(name: str, code: str, value: float, threshold: float, message: str) -> QualityCheck:
    return QualityCheck(name, value, threshold, False, "error", message, code)


def _crop(gray: npt.NDArray[np.uint8], points: Landmarks) -> npt.NDArray[np.uint8]:
    left, top, right, bottom = _bounds(gray, points)
    return gray[top:bottom, left:right]


def _inside_polygon(gray: npt.NDArray[np.uint8], points: Landmarks) -> npt.NDArray[np.uint8]:
    """The pixels inside the polygon ``points`` (e.g. the outer lip line), as a flat array."""
    left, top, right, bottom = _bounds(gray, points)
    if right <= left or bottom <= top:
        return np.zeros(0, dtype=np.uint8)
    mask = np.zeros((bottom - top, right - left), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points - [left, top]).astype(np.int32)], 1)
    return gray[top:bottom, left:right][mask.astype(bool)]


def _bounds(gray: npt.NDArray[np.uint8], points: Landmarks) -> tuple[int, int, int, int]:
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    height, width = gray.shape
    return max(0, int(x0)), max(0, int(y0)), min(width, math.ceil(x1) + 1), min(height, math.ceil(y1) + 1)


def _mean(crop: npt.NDArray[np.uint8]) -> float:
    return float(crop.mean()) if crop.size else 0.0


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _fmt(value: float, unit: str) -> str:
    return f"{value:.0%}" if unit == "%" else f"{value:g}{unit}"


def _json_number(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)
