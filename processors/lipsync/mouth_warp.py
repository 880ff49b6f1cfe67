"""Warps one cached avatar frame to a mouth pose: jaw drop, lip corners, mouth cavity, idle sway and blink.

Everything that depends only on the frame and its landmarks (the region of interest, the sampling grid,
one displacement field per pose parameter, the cavity's anchor points and colours) is computed once by
``build_plan``. A pose then costs a few multiply-adds of those fields, one ``cv2.remap`` of the region
and a small alpha blend of the cavity, so no per-pixel Python runs per frame.

The fields are backward maps (output pixel -> where to sample the source). Every field fades to zero
well inside the region's border, so the warped region meets the untouched frame without a seam. The
jaw field steps from 0 to 1 across the lower inner lip: output pixels in that step would show the upper
lip stretched down, and that is exactly the area painted over by the dark mouth cavity.

Two fields close the mouth rather than open it, so a photo that shows its teeth can still say "p":
``press`` brings the upper lip down and the lower lip up until their inner edges meet on a fixed line
inside the gap (the teeth between them disappear; at press 1 the output is cut along that line, which is
the crease where the lips touch), and ``tuck`` raises and thins the lower lip until it rests against the
upper teeth (f, v). Both are linear in their amount, like the other fields, because their meeting lines
are fixed in the output.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from schemas.avatar import RgbFrame

FloatArray = npt.NDArray[np.float32]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
Coordinate = float | np.floating

MOUTH_OUTER = slice(48, 60)
MOUTH_INNER = slice(60, 68)
LOWER_INNER_LIP = (60, 67, 66, 65, 64)  # inner corner, lower inner lip, other inner corner
UPPER_INNER_LIP = (60, 61, 62, 63, 64)
JAW_LINE = tuple(range(3, 14))
# Each eye (corner, upper lid x2, corner, lower lid x2) with the brow above it.
EYES = (((36, 37, 38, 39, 40, 41), (17, 18, 19, 20, 21)), ((42, 43, 44, 45, 46, 47), (22, 23, 24, 25, 26)))
NOSE_BASE, LIP_TOP, LIP_BOTTOM, CHIN = 33, 51, 57, 8
UPPER_INNER_MID, LOWER_INNER_MID = 62, 66

SUBPIXEL_BITS = 3
CAVITY_POINTS = 21  # samples along the lip line; the landmarks alone give a polygonal, jagged mouth
BLINK_EXTRA_PX = 1.0  # landmarks sit just inside the visible eye: the lid travels past them to hide it all
LID_SKIN_SHARE = 0.55  # share of the lid-to-brow distance that stretches down over a closing eye
UPPER_CLOSING_SHARE = 0.35  # of the lip gap, closed by the upper lip; the jaw brings the lower lip the rest
SEAL_PX = 0.4  # the lips press a little past touching, so a closed mouth shows no sliver of teeth
OVERLAP_PX = 0.5  # each lip reaches this far past the meeting line, so no sampled row lies between them
# In f/v the lower lip rises this share of the lip gap, to the upper teeth's edge, and rolls in by this share of
# its height. At 0.65 and 0.3 it covered the teeth, so an f looked (and read, to dlib) like an m; at 0.45 and
# 0.2 the teeth's lower half shows above it, as in the measure's reference f (docs/engines.md "Lip-sync quality").
TUCK_GAP_SHARE = 0.45
TUCK_THINNING = 0.2


@dataclass(frozen=True)
class WarpSettings:
    """How far the face moves at the extremes of the pose, in mouth widths."""

    max_opening: float = 0.28  # drop of the lower lip centre at opening 1
    max_width: float = 0.13  # shift of each lip corner at width +-1
    upper_lip_share: float = 0.12  # the upper lip rises by this share of the drop


@dataclass(frozen=True)
class Pose:
    """One frame's pose: ``opening`` 0..1, ``width`` -1 (rounded)..+1 (spread), head ``sway`` in pixels
    (x, y), ``blink`` 0 (eyes open)..1 (closed), and the closing movements ``press`` and ``tuck``."""

    opening: float = 0.0
    width: float = 0.0
    sway: tuple[float, float] = (0.0, 0.0)
    blink: float = 0.0
    press: float = 0.0  # 0 (as the source) .. 1 (lips closed and pressed)
    tuck: float = 0.0  # 0 .. 1 (lower lip against the upper teeth)


@dataclass(frozen=True)
class CavityPlan:
    """Where the mouth opens: points along the lower inner lip and how each moves per pixel of pose."""

    lip_line: FloatArray  # (n, 2) image x, y of the line the cavity opens along
    upper_per_open: FloatArray  # (n, 2) movement of the cavity's top edge per pixel of opening
    lower_per_open: FloatArray  # (n, 2) movement of its bottom edge (the lower lip) per pixel of opening
    per_width: FloatArray  # (n, 2) movement of both edges per pixel of corner shift
    per_sway: FloatArray  # (n,) share of the head sway the mouth follows
    dark: FloatArray  # (3,) RGB of the throat
    tongue: FloatArray  # (3,) RGB of the bottom of a wide-open mouth
    teeth_px: float  # height of the hint of upper teeth; 0 where the source already shows teeth
    press_top: FloatArray  # (n,) how far the cavity's top edge comes down at press 1
    press_bottom: FloatArray  # (n,) how far its bottom edge comes up at press 1
    tuck_bottom: FloatArray  # (n,) how far its bottom edge comes up at tuck 1


@dataclass(frozen=True)
class EyePlan:
    """One eye for blinking: its block of the plan's region, its axes and its lid lines."""

    rows: slice  # of the plan's region
    cols: slice
    centre: FloatArray
    u_axis: FloatArray  # from the outer corner to the inner one (or back), in image x, y
    down: FloatArray
    upper_u: FloatArray  # upper lid knots, eye coordinates
    upper_v: FloatArray
    lower_u: FloatArray
    lower_v: FloatArray
    brow_u: FloatArray  # brow knots, eye coordinates
    brow_v: FloatArray
    half_width: float


@dataclass(frozen=True)
class WarpPlan:
    """Everything precomputed for one avatar frame; shared read-only between renders and threads."""

    box: Box
    grid_x: FloatArray
    grid_y: FloatArray
    open_x: FloatArray  # displacement per pixel of lower-lip drop
    open_y: FloatArray
    width_x: FloatArray  # displacement per pixel of corner shift
    width_y: FloatArray
    press_x: FloatArray  # displacement at press 1 (already in pixels)
    press_y: FloatArray
    tuck_x: FloatArray  # displacement at tuck 1 (in pixels)
    tuck_y: FloatArray
    head: FloatArray | None  # share of the head sway per pixel; None when idle motion is off
    eyes: tuple[EyePlan, ...]  # empty when idle motion is off
    cavity: CavityPlan
    opening_px: float  # drop at opening 1
    width_px: float  # corner shift at width 1
    rest_opening: float  # the source's own gap between the inner lips, in units of opening (drop at 1)
    press_closing: float  # how much of that gap press 1 closes, lips' overlap included, in the same units

    @property
    def nbytes(self) -> int:
        """Memory held by the per-pixel arrays (what a cache of plans should budget for)."""
        arrays = [self.grid_x, self.grid_y, self.open_x, self.open_y, self.width_x, self.width_y,
                  self.press_x, self.press_y, self.tuck_x, self.tuck_y]
        arrays += [self.head] if self.head is not None else []
        return sum(int(a.nbytes) for a in arrays)


@dataclass(frozen=True)
class _MouthFrame:
    """The face in mouth coordinates: u along the mouth (right), v across it (down), origin at its centre."""

    origin: FloatArray
    u_axis: FloatArray
    v_axis: FloatArray
    mouth_width: float
    inner_half: float
    lower_lip_u: FloatArray
    lower_lip_v: FloatArray
    upper_lip_u: FloatArray  # the upper inner lip
    upper_lip_v: FloatArray
    jaw_u: FloatArray
    jaw_v: FloatArray
    nose_v: float
    lip_top_v: float
    lip_bottom_v: float
    chin_v: float

    def to_uv(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _to_uv(self.origin, self.u_axis, self.v_axis, x, y)


def _to_uv(
    origin: FloatArray, u_axis: FloatArray, v_axis: FloatArray, x: FloatArray, y: FloatArray
) -> tuple[FloatArray, FloatArray]:
    dx, dy = x - origin[0], y - origin[1]
    return dx * u_axis[0] + dy * u_axis[1], dx * v_axis[0] + dy * v_axis[1]


def build_plan(image: RgbFrame, landmarks: npt.ArrayLike, settings: WarpSettings, *, idle_motion: bool) -> WarpPlan:
    """Precompute the warp of one avatar frame; ``idle_motion`` adds the head sway and blink fields."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    mouth = _mouth_frame(points)
    height, width = image.shape[:2]
    box = _mouth_box(mouth, width, height)
    if idle_motion:
        box = _union(box, _head_box(points, width, height))
    grid_x, grid_y = _grid(box)
    open_x, open_y, width_x, width_y = _mouth_fields(mouth, grid_x, grid_y, settings)
    press_x, press_y, tuck_x, tuck_y = _closing_fields(mouth, grid_x, grid_y)
    head = _head_field(points, grid_x, grid_y) if idle_motion else None
    opening_px = settings.max_opening * mouth.mouth_width
    gap = _middle_gap(mouth)
    eyes = tuple(_eye_plan(points[list(eye)], points[list(brow)], box) for eye, brow in EYES) if idle_motion else ()
    return WarpPlan(
        box=box,
        grid_x=grid_x,
        grid_y=grid_y,
        open_x=open_x,
        open_y=open_y,
        width_x=width_x,
        width_y=width_y,
        press_x=press_x,
        press_y=press_y,
        tuck_x=tuck_x,
        tuck_y=tuck_y,
        head=head,
        eyes=eyes,
        cavity=_cavity_plan(image, points, mouth, settings, idle_motion),
        opening_px=opening_px,
        width_px=settings.max_width * mouth.mouth_width,
        rest_opening=gap / opening_px,
        press_closing=(gap + 2.0 * (0.5 * SEAL_PX + OVERLAP_PX)) / opening_px,
    )


def _middle_gap(mouth: _MouthFrame) -> float:
    return float(max(np.interp(0.0, mouth.lower_lip_u, mouth.lower_lip_v)
                     - np.interp(0.0, mouth.upper_lip_u, mouth.upper_lip_v), 0.0))


def fit_to_frame(pose: Pose, plan: WarpPlan) -> Pose:
    """A pose whose ``opening`` is the lip gap wanted (0 closed .. 1 the widest), made into the movement
    this frame needs: a source that already shows a gap opens only by the rest, or closes (press) to a
    smaller one. So a viseme looks the same on a closed-mouth photo, a smiling one and every frame of a
    video."""
    rest = plan.rest_opening
    if pose.opening >= rest:
        return replace(pose, opening=pose.opening - rest)
    closing = (rest - pose.opening) / plan.press_closing * (1.0 - pose.tuck)
    return replace(pose, opening=0.0, press=max(pose.press, closing))


def warp_frame(image: RgbFrame, plan: WarpPlan, pose: Pose) -> RgbFrame:
    """A new frame showing ``image`` in ``pose``; ``image`` itself is never written to."""
    out = image.copy()
    drop = pose.opening * plan.opening_px
    shift = pose.width * plan.width_px
    terms = _displacement_terms(plan, drop, shift, pose)
    if not terms and not (plan.eyes and pose.blink > 1e-3):
        return out
    maps = (plan.grid_x.copy(), plan.grid_y.copy())
    for field, axis, amount in terms:
        # Backward map: the output pixel samples the source where its content came from.
        cv2.scaleAdd(field, -amount, maps[axis], maps[axis])
    if pose.blink > 1e-3:
        for eye in plan.eyes:
            _close_lid(eye, maps, pose.blink)
    x0, y0, x1, y1 = plan.box
    out[y0:y1, x0:x1] = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if drop > 0.25:
        _paint_cavity(out, plan.cavity, drop, shift, pose)
    return out


def _displacement_terms(plan: WarpPlan, drop: float, shift: float, pose: Pose) -> list[tuple[FloatArray, int, float]]:
    """(field, axis 0=x 1=y, amount) for each field this pose moves; empty when the frame is the source."""
    terms: list[tuple[FloatArray, int, float]] = []
    if abs(drop) > 1e-3:
        terms += [(plan.open_x, 0, drop), (plan.open_y, 1, drop)]
    if abs(shift) > 1e-3:
        terms += [(plan.width_x, 0, shift), (plan.width_y, 1, shift)]
    if pose.press > 1e-3:
        terms += [(plan.press_x, 0, pose.press), (plan.press_y, 1, pose.press)]
    if pose.tuck > 1e-3:
        terms += [(plan.tuck_x, 0, pose.tuck), (plan.tuck_y, 1, pose.tuck)]
    if plan.head is not None:
        terms += [(plan.head, axis, pose.sway[axis]) for axis in (0, 1) if abs(pose.sway[axis]) > 1e-3]
    return terms


def _mouth_frame(points: FloatArray) -> _MouthFrame:
    left, right = points[48].astype(np.float64), points[54].astype(np.float64)
    mouth_width = float(max(np.linalg.norm(right - left), 4.0))
    u_axis = ((right - left) / mouth_width).astype(np.float32)
    v_axis = np.array([-u_axis[1], u_axis[0]], dtype=np.float32)  # image y grows down: v points to the chin
    origin = (0.5 * (points[UPPER_INNER_MID] + points[LOWER_INNER_MID])).astype(np.float32)
    u, v = _to_uv(origin, u_axis, v_axis, points[:, 0], points[:, 1])
    lower_u, lower_v = _sorted_knots(u[list(LOWER_INNER_LIP)], v[list(LOWER_INNER_LIP)])
    upper_u, upper_v = _sorted_knots(u[list(UPPER_INNER_LIP)], v[list(UPPER_INNER_LIP)])
    jaw_u, jaw_v = _sorted_knots(u[list(JAW_LINE)], v[list(JAW_LINE)])
    return _MouthFrame(
        origin=origin,
        u_axis=u_axis,
        v_axis=v_axis,
        mouth_width=mouth_width,
        inner_half=float(max(0.5 * (u[64] - u[60]), 0.2 * mouth_width)),
        lower_lip_u=lower_u,
        lower_lip_v=lower_v,
        upper_lip_u=upper_u,
        upper_lip_v=upper_v,
        jaw_u=jaw_u,
        jaw_v=jaw_v,
        nose_v=float(min(v[NOSE_BASE], v[LIP_TOP] - 0.15 * mouth_width)),
        lip_top_v=float(v[LIP_TOP]),
        lip_bottom_v=float(v[LIP_BOTTOM]),
        chin_v=float(max(v[CHIN], v[LIP_BOTTOM] + 0.2 * mouth_width)),
    )


def _sorted_knots(u: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    order = np.argsort(u, kind="stable")
    return u[order].astype(np.float32), v[order].astype(np.float32)


def _mouth_fields(
    mouth: _MouthFrame, x: FloatArray, y: FloatArray, settings: WarpSettings
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per-pixel displacement per pixel of lower-lip drop and per pixel of corner shift, in image x, y."""
    u, v = mouth.to_uv(x, y)
    along_v = _jaw_drop(mouth, u, v) - settings.upper_lip_share * _upper_lip_raise(mouth, u, v)
    along_u = _corner_shift(mouth, u, v)
    return (
        (along_v * mouth.v_axis[0]).astype(np.float32),
        (along_v * mouth.v_axis[1]).astype(np.float32),
        (along_u * mouth.u_axis[0]).astype(np.float32),
        (along_u * mouth.u_axis[1]).astype(np.float32),
    )


def _lip_line_v(mouth: _MouthFrame, u: FloatArray) -> FloatArray:
    return np.interp(u, mouth.lower_lip_u, mouth.lower_lip_v).astype(np.float32)


def _below_lip_line(mouth: _MouthFrame, u: FloatArray, v: FloatArray) -> FloatArray:
    """0 above the lower inner lip, 1 on and below it; the step widens past the corners so cheeks stretch
    smoothly instead of tearing."""
    step = max(0.035 * mouth.mouth_width, 1.0)
    widening = 0.6 * np.maximum(np.abs(u) - mouth.inner_half, 0.0)
    centre = _lip_line_v(mouth, u) - step
    half = step + widening
    return _smoothstep_arr(centre - half, centre + half, v)


def _jaw_drop(mouth: _MouthFrame, u: FloatArray, v: FloatArray) -> FloatArray:
    """How far each pixel follows the lower-lip drop: the lip's middle and the chin fully, the lip corners
    hardly (they are the hinge of the lips), the neck and the cheeks beside the jaw not at all."""
    mw = mouth.mouth_width
    # Elliptical, not cosine: an open mouth keeps a rounded bottom instead of a "V".
    lip_profile = np.maximum(1.0 - (u / (1.05 * mouth.inner_half)) ** 2, 0.0) ** 0.7
    jaw_profile = 1.0 - _smoothstep(0.5 * mw, 1.15 * mw, np.abs(u))
    chin_blend = _smoothstep_arr(
        _lip_line_v(mouth, u),
        np.full_like(u, mouth.lip_bottom_v + 0.5 * (mouth.chin_v - mouth.lip_bottom_v)),
        v,
    )
    lateral = lip_profile + (jaw_profile - lip_profile) * chin_blend
    jaw_line_v = np.interp(u, mouth.jaw_u, mouth.jaw_v).astype(np.float32)
    # The chin slides over the neck; the long fade keeps that a compression, never a fold.
    neck = 1.0 - _smoothstep_arr(jaw_line_v, jaw_line_v + 0.9 * mw, v)
    return (_below_lip_line(mouth, u, v) * lateral * neck).astype(np.float32)


def _upper_lip_raise(mouth: _MouthFrame, u: FloatArray, v: FloatArray) -> FloatArray:
    """1 at the lip line's middle, fading up to the nose and out to the corners."""
    lateral = 0.5 * (1.0 + np.cos(np.pi * np.clip(np.abs(u) / (1.3 * mouth.inner_half), 0.0, 1.0)))
    rise = _smoothstep_arr(np.full_like(v, mouth.nose_v), _lip_line_v(mouth, u), v)
    return ((1.0 - _below_lip_line(mouth, u, v)) * rise * lateral).astype(np.float32)


def _corner_shift(mouth: _MouthFrame, u: FloatArray, v: FloatArray) -> FloatArray:
    """Sideways movement, +1 at the right corner and -1 at the left one, fading into the cheeks."""
    half = 0.5 * mouth.mouth_width
    reach = np.abs(u) / half
    inside = np.minimum(reach, 1.0)
    fade = 1.0 - _smoothstep(1.0, 2.2, reach)
    lateral = np.sign(u) * np.where(reach <= 1.0, inside, fade)
    lower_reach = mouth.lip_bottom_v + 0.6 * (mouth.chin_v - mouth.lip_bottom_v)
    vertical = _smoothstep(mouth.nose_v, mouth.lip_top_v, v) * (1.0 - _smoothstep(mouth.lip_bottom_v, lower_reach, v))
    return (lateral * vertical).astype(np.float32)


def _lip_gap(mouth: _MouthFrame, u: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The upper inner lip's v and the gap below it to the lower inner lip, at each u (0 past the corners).

    Between the landmarks the gap is taken as the larger of the straight line through them and an ellipse
    through the middle gap: an open mouth is rounded, and the straight line would leave a sliver of the
    inside showing near the corners when the lips close.
    """
    upper = np.interp(u, mouth.upper_lip_u, mouth.upper_lip_v).astype(np.float32)
    linear = np.maximum(_lip_line_v(mouth, u) - upper, 0.0)
    rounded = _middle_gap(mouth) * np.sqrt(np.maximum(1.0 - (u / (1.1 * mouth.inner_half)) ** 2, 0.0))
    inside = 1.0 - _smoothstep(1.1 * mouth.inner_half, 1.4 * mouth.inner_half, np.abs(u))
    return upper, (np.maximum(linear, rounded) * inside).astype(np.float32)


def _closing_amounts(mouth: _MouthFrame, u: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per u: the line the lips meet on, how far the upper lip comes down and the lower lip comes up at
    press 1, and how far the lower lip comes up at tuck 1."""
    upper, gap = _lip_gap(mouth, u)
    seal = SEAL_PX * (1.0 - _smoothstep(1.2 * mouth.inner_half, 1.7 * mouth.inner_half, np.abs(u)))
    meeting = upper + UPPER_CLOSING_SHARE * gap
    overlap = 0.5 * seal + OVERLAP_PX * (seal > 0)
    down = UPPER_CLOSING_SHARE * gap + overlap
    up = (1.0 - UPPER_CLOSING_SHARE) * gap + overlap
    return meeting.astype(np.float32), down.astype(np.float32), up.astype(np.float32), \
        (TUCK_GAP_SHARE * gap).astype(np.float32)


def _closing_fields(
    mouth: _MouthFrame, x: FloatArray, y: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Displacement (image x, y) at press 1 and at tuck 1.

    Press: above the meeting line the upper lip comes down (fading up to the nose), below it the lower lip
    and the chin come up (fading into the neck like the jaw). Tuck: below the line where the lower lip
    meets the upper teeth the lower lip comes up, its outer edge further than its inner edge so that it
    thins as it rolls in.
    """
    u, v = mouth.to_uv(x, y)
    meeting, down, up, tuck_rise = _closing_amounts(mouth, u)
    # A hard cut, not a blend: any displacement between "down" and "up" would sample the teeth again.
    lower_side = (v >= meeting).astype(np.float32)
    above = _smoothstep_arr(np.full_like(v, mouth.nose_v), meeting, v)
    jaw_line_v = np.interp(u, mouth.jaw_u, mouth.jaw_v).astype(np.float32)
    below = 1.0 - _smoothstep_arr(jaw_line_v, jaw_line_v + 0.9 * mouth.mouth_width, v)
    # The amounts already end at the corners; this only keeps the cheeks beside the chin from following.
    lateral = 1.0 - _smoothstep(0.75 * mouth.mouth_width, 1.15 * mouth.mouth_width, np.abs(u))
    press_v = (1.0 - lower_side) * down * above - lower_side * up * below * lateral
    lip_line = _lip_line_v(mouth, u)
    tuck_line = lip_line - tuck_rise
    lip_height = max(mouth.lip_bottom_v - float(np.interp(0.0, mouth.lower_lip_u, mouth.lower_lip_v)), 1.0)
    rolled = TUCK_THINNING * lip_height * _smoothstep_arr(lip_line, np.full_like(v, mouth.lip_bottom_v), v)
    tuck_v = np.where(v >= tuck_line, -(tuck_rise + rolled) * below * lateral, 0.0)
    return (
        (press_v * mouth.v_axis[0]).astype(np.float32),
        (press_v * mouth.v_axis[1]).astype(np.float32),
        (tuck_v * mouth.v_axis[0]).astype(np.float32),
        (tuck_v * mouth.v_axis[1]).astype(np.float32),
    )


def _head_field(points: FloatArray, x: FloatArray, y: FloatArray) -> FloatArray:
    """1 over the head (face and hair), 0 on the shoulders and the background away from the head."""
    x0, y0 = points[:, 0].min(), points[:, 1].min()
    face_w, face_h = points[:, 0].max() - x0, points[:, 1].max() - y0
    cx, cy = x0 + 0.5 * face_w, y0 + 0.35 * face_h
    radius = np.sqrt(((x - cx) / (0.95 * face_w)) ** 2 + ((y - cy) / (1.05 * face_h)) ** 2)
    chin_y = points[6:11, 1].max()
    neck = 1.0 - _smoothstep(float(chin_y), float(chin_y + 0.3 * face_h), y)
    return ((1.0 - _smoothstep(0.7, 1.0, radius)) * neck).astype(np.float32)


def _head_box(points: FloatArray, width: int, height: int) -> Box:
    x0, y0 = points[:, 0].min(), points[:, 1].min()
    face_w, face_h = points[:, 0].max() - x0, points[:, 1].max() - y0
    cx, cy = x0 + 0.5 * face_w, y0 + 0.35 * face_h
    return _clip_box(cx - 0.95 * face_w, cy - 1.05 * face_h, cx + 0.95 * face_w, cy + 1.05 * face_h, width, height)


def _eye_plan(eye: FloatArray, brow: FloatArray, box: Box) -> EyePlan:
    corner_a, corner_b = eye[0].astype(np.float64), eye[3].astype(np.float64)
    eye_width = float(max(np.linalg.norm(corner_b - corner_a), 2.0))
    u_axis = ((corner_b - corner_a) / eye_width).astype(np.float32)
    down = np.array([-u_axis[1], u_axis[0]], dtype=np.float32)
    centre = eye.mean(axis=0).astype(np.float32)
    eu, ev = ((eye - centre) @ u_axis).astype(np.float32), ((eye - centre) @ down).astype(np.float32)
    bu, bv = ((brow - centre) @ u_axis).astype(np.float32), ((brow - centre) @ down).astype(np.float32)
    upper_u, upper_v = _sorted_knots(eu[[0, 1, 2, 3]], ev[[0, 1, 2, 3]])
    lower_u, lower_v = _sorted_knots(eu[[0, 5, 4, 3]], ev[[0, 5, 4, 3]])
    brow_u, brow_v = _sorted_knots(bu, bv)
    # The block spans from the highest skin the lid may stretch (below the brow) to under the lower lid.
    top = min(float(bv.min()), float(ev.min()) - 3.0)
    corners = np.array([[-0.7 * eye_width, top], [0.7 * eye_width, top]], dtype=np.float32)
    corners = np.concatenate([corners, corners + np.array([0.0, float(ev.max()) + 3.0 - top], np.float32)])
    xy = centre + corners[:, :1] * u_axis + corners[:, 1:] * down
    # Clipped to the plan's region, whose maps the lid adjusts.
    x0, y0 = max(int(np.floor(xy[:, 0].min())) - 1, box[0]), max(int(np.floor(xy[:, 1].min())) - 1, box[1])
    x1, y1 = min(int(np.ceil(xy[:, 0].max())) + 2, box[2]), min(int(np.ceil(xy[:, 1].max())) + 2, box[3])
    return EyePlan(
        rows=slice(y0 - box[1], max(y1, y0) - box[1]),
        cols=slice(x0 - box[0], max(x1, x0) - box[0]),
        centre=centre,
        u_axis=u_axis,
        down=down,
        upper_u=upper_u,
        upper_v=upper_v,
        lower_u=lower_u,
        lower_v=lower_v,
        brow_u=brow_u,
        brow_v=brow_v,
        half_width=0.5 * eye_width,
    )


def _close_lid(eye: EyePlan, maps: tuple[FloatArray, FloatArray], amount: float) -> None:
    """Lower the upper lid by ``amount`` of the eye's opening, in place on the maps' sample positions.

    The lid skin between the lid and the brow unfolds: that band is stretched down to the lid's new edge,
    so the lashes end up there and the crease moves with it instead of showing twice; below the edge the
    rest of the eye shows unchanged. Working on sample positions (source coordinates) composes
    it with the head sway.
    """
    map_x, map_y = maps[0][eye.rows, eye.cols], maps[1][eye.rows, eye.cols]
    if map_x.size == 0:
        return
    dx, dy = map_x - eye.centre[0], map_y - eye.centre[1]
    u = dx * eye.u_axis[0] + dy * eye.u_axis[1]
    v = dx * eye.down[0] + dy * eye.down[1]
    lid_top = np.interp(u, eye.upper_u, eye.upper_v)
    opening = np.maximum(np.interp(u, eye.lower_u, eye.lower_v) - lid_top, 0.0)
    inside = 1.0 - _smoothstep(1.0 * eye.half_width, 1.25 * eye.half_width, np.abs(u))
    travel = amount * (opening + BLINK_EXTRA_PX) * inside
    skin = np.maximum(LID_SKIN_SHARE * (lid_top - np.interp(u, eye.brow_u, eye.brow_v)), 2.0)
    skin_top, edge = lid_top - skin, lid_top + travel
    # [skin_top, lid_top] maps onto [skin_top, edge] through t**power: monotonic (never folds), continuous
    # at the top, and unstretched at the edge, so the lashes stay a thin line instead of a dark smear.
    power = (skin + travel) / skin
    t = np.clip((v - skin_top) / (skin + travel), 0.0, 1.0)
    stretch = np.where(v > skin_top, v - (skin_top + skin * t**power), 0.0)
    below_edge = _smoothstep_arr(edge - 0.5, edge + 0.5, v)
    shift = (stretch * (1.0 - below_edge)).astype(np.float32)
    map_x -= shift * eye.down[0]
    map_y -= shift * eye.down[1]


def _cavity_plan(
    image: RgbFrame, points: FloatArray, mouth: _MouthFrame, settings: WarpSettings, idle_motion: bool
) -> CavityPlan:
    u = np.linspace(float(mouth.lower_lip_u[0]), float(mouth.lower_lip_u[-1]), CAVITY_POINTS).astype(np.float32)
    v = _lip_line_v(mouth, u)
    line_x, line_y = _from_uv(mouth, u, v)
    # The top edge is the lip content just above the step, so it moves like a pixel above the lip line.
    above_u, above_v = u, v - 2.0 * max(0.035 * mouth.mouth_width, 1.0)
    ax, ay = _from_uv(mouth, above_u, above_v)
    up_ox, up_oy, up_wx, up_wy = _mouth_fields(mouth, ax, ay, settings)
    lo_ox, lo_oy, _, _ = _mouth_fields(mouth, line_x, line_y, settings)
    per_sway = _head_field(points, line_x, line_y) if idle_motion else np.zeros_like(line_x)
    lip_rgb = _lip_colour(image, points)
    gap = float(np.linalg.norm(points[LOWER_INNER_MID] - points[UPPER_INNER_MID]))
    _, press_down, press_up, tuck_rise = _closing_amounts(mouth, u)
    return CavityPlan(
        lip_line=np.stack([line_x, line_y], axis=1).astype(np.float32),
        upper_per_open=np.stack([up_ox, up_oy], axis=1),
        lower_per_open=np.stack([lo_ox, lo_oy], axis=1),
        per_width=np.stack([up_wx, up_wy], axis=1),
        per_sway=per_sway.astype(np.float32),
        dark=(0.18 * lip_rgb + np.array([8.0, 2.0, 3.0])).astype(np.float32),
        tongue=(0.55 * lip_rgb).astype(np.float32),
        # A source that already shows its teeth keeps them above the lip line; drawing more would double them.
        teeth_px=float(max(0.09 * mouth.mouth_width - gap, 0.0)),
        press_top=press_down,
        press_bottom=press_up,
        tuck_bottom=tuck_rise,
    )


def _lip_colour(image: RgbFrame, points: FloatArray) -> FloatArray:
    """Mean colour of the lips (outer contour minus the inner opening), to tint the cavity."""
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points[MOUTH_OUTER]).astype(np.int32)], 255)
    cv2.fillPoly(mask, [np.round(points[MOUTH_INNER]).astype(np.int32)], 0)
    if not mask.any():
        return np.array([150.0, 80.0, 80.0], dtype=np.float32)
    return np.asarray(cv2.mean(image, mask=mask)[:3], dtype=np.float32)


def _paint_cavity(out: RgbFrame, cavity: CavityPlan, drop: float, shift: float, pose: Pose) -> None:
    """Blend the dark inside of the open mouth (and a hint of upper teeth) into ``out`` in place."""
    moved = cavity.lip_line + shift * cavity.per_width + np.outer(cavity.per_sway, pose.sway).astype(np.float32)
    top = moved + drop * cavity.upper_per_open
    bottom = moved + drop * cavity.lower_per_open
    # The closing movements shrink the opening from both edges (along the mouth's v axis, like the drop).
    v_axis = cavity.lower_per_open / np.maximum(np.linalg.norm(cavity.lower_per_open, axis=1, keepdims=True), 1e-6)
    top = top + (pose.press * cavity.press_top)[:, None] * v_axis
    bottom = bottom - (pose.press * cavity.press_bottom + pose.tuck * cavity.tuck_bottom)[:, None] * v_axis
    if float(np.max(np.sum((bottom - top) * v_axis, axis=1))) <= 0.25:
        return  # closed: nothing of the inside shows
    polygon = np.concatenate([top, bottom[::-1]])
    height, width = out.shape[:2]
    x0, y0, x1, y1 = _clip_box(
        polygon[:, 0].min() - 3,
        polygon[:, 1].min() - 3,
        polygon[:, 0].max() + 4,
        polygon[:, 1].max() + 4,
        width,
        height,
    )
    if x1 <= x0 or y1 <= y0:
        return
    alpha = _soft_polygon(polygon - np.array([x0, y0], dtype=np.float32), (y1 - y0, x1 - x0))
    colour = _cavity_colour(cavity, top - np.array([x0, y0], dtype=np.float32), drop, (y1 - y0, x1 - x0))
    region = out[y0:y1, x0:x1].astype(np.float32)
    region += alpha[..., None] * (colour - region)
    out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def _soft_polygon(polygon: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """Anti-aliased, slightly feathered coverage of ``polygon`` (0..1)."""
    mask = np.zeros(shape, dtype=np.uint8)
    # Fixed-point vertices keep the lips' sub-pixel motion smooth instead of stepping a pixel at a time.
    fixed = np.round(polygon * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    return cv2.GaussianBlur(mask, (3, 3), 0.8).astype(np.float32) / 255.0


def _cavity_colour(cavity: CavityPlan, top: FloatArray, drop: float, shape: tuple[int, int]) -> FloatArray:
    """Throat dark under the upper lip, warming towards the tongue lower down, with upper teeth on top."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    cols = np.arange(shape[1], dtype=np.float32)[None, :]
    order = np.argsort(top[:, 0])
    top_y = np.interp(cols, top[order, 0], top[order, 1]).astype(np.float32)
    depth = np.clip((rows - top_y) / max(drop, 1.0), 0.0, 1.0)
    colour = cavity.dark + (cavity.tongue - cavity.dark) * (0.6 * depth * depth)[..., None]
    teeth_px = min(cavity.teeth_px, 0.4 * drop)
    if teeth_px >= 0.5:
        teeth = np.clip(top_y + teeth_px - rows, 0.0, 1.0)[..., None]
        colour = colour + teeth * (np.array([200.0, 196.0, 188.0], dtype=np.float32) - colour)
    return colour.astype(np.float32)


def _from_uv(mouth: _MouthFrame, u: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    x = mouth.origin[0] + u * mouth.u_axis[0] + v * mouth.v_axis[0]
    y = mouth.origin[1] + u * mouth.u_axis[1] + v * mouth.v_axis[1]
    return x.astype(np.float32), y.astype(np.float32)


def _mouth_box(mouth: _MouthFrame, width: int, height: int) -> Box:
    """Where any mouth field is non-zero, with a margin: the jaw fades out by 1.15 mouth widths sideways
    and 0.9 below the jaw line; the upper lip's fields end at the nose."""
    mw = mouth.mouth_width
    bottom = float(mouth.jaw_v.max()) + 0.95 * mw
    corners_u = np.array([-1.3 * mw, 1.3 * mw, -1.3 * mw, 1.3 * mw], dtype=np.float32)
    corners_v = np.array([mouth.nose_v - 2.0, mouth.nose_v - 2.0, bottom, bottom], dtype=np.float32)
    x, y = _from_uv(mouth, corners_u, corners_v)
    return _clip_box(x.min(), y.min(), x.max() + 1, y.max() + 1, width, height)


def _clip_box(x0: Coordinate, y0: Coordinate, x1: Coordinate, y1: Coordinate, width: int, height: int) -> Box:
    return (
        int(np.clip(np.floor(x0), 0, width)),
        int(np.clip(np.floor(y0), 0, height)),
        int(np.clip(np.ceil(x1), 0, width)),
        int(np.clip(np.ceil(y1), 0, height)),
    )


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _grid(box: Box) -> tuple[FloatArray, FloatArray]:
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.ascontiguousarray(grid_x), np.ascontiguousarray(grid_y)


def _smoothstep(edge0: float, edge1: float, x: npt.NDArray[np.floating]) -> FloatArray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _smoothstep_arr(
    edge0: npt.NDArray[np.floating], edge1: npt.NDArray[np.floating], x: npt.NDArray[np.floating]
) -> FloatArray:
    span = np.where(np.abs(edge1 - edge0) < 1e-6, 1e-6, edge1 - edge0)
    t = np.clip((x - edge0) / span, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)
