"""Face analysis: the detector/landmark interface, its dlib backend, and face tracking through a clip."""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np
import numpy.typing as npt

from schemas.avatar import LANDMARK_COUNT, RgbFrame

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive, like schemas.avatar.FaceFrame
FloatBox = tuple[float, float, float, float]
Landmarks = npt.NDArray[np.float32]  # (68, 2) x, y

# A tracked box that overlaps its predecessor less than this has slipped off the face.
_TRACK_MIN_IOU = 0.5
# A detection overlapping the tracked face at least this much is the same person.
_SAME_FACE_MIN_IOU = 0.3
# Detections scoring below this fraction of the frame's best are ignored: HOG's false hits on clothing
# and backgrounds score an order of magnitude below a real face, yet can be larger than it.
_MIN_RELATIVE_SCORE = 0.25


@dataclass(frozen=True)
class DetectedFace:
    """One detector hit. ``box`` may extend past the frame: landmark models expect the detector's own box."""

    box: Box
    score: float

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


class FaceAnalyser(Protocol):
    """A face detector plus a 68-point (iBUG 300-W layout) landmark model."""

    name: str

    def detect(self, rgb: RgbFrame) -> list[DetectedFace]: ...

    def landmarks(self, rgb: RgbFrame, box: Box) -> Landmarks: ...


def default_predictor_path() -> Path:
    """Where face-recognition-models keeps the 68-point model, found without importing the package.

    Importing it needs ``pkg_resources`` (setuptools), which current virtual environments do not ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed; it provides the 68-point landmark model.")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return package_dir / "models" / "shape_predictor_68_face_landmarks.dat"


class DlibFaceAnalyser:
    """dlib's HOG face detector and 68-point shape predictor, loaded once and reused for every call."""

    name = "dlib-hog-68"

    def __init__(self, predictor_path: str | Path | None = None, *, retry_upsample_max_side: int = 1024) -> None:
        path = Path(predictor_path) if predictor_path is not None else default_predictor_path()
        if not path.is_file():
            raise RuntimeError(f"68-point landmark model not found at {path}")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        # Upsampling finds faces down to ~40 px but costs 4×; only small frames can afford it.
        self._retry_upsample_max_side = retry_upsample_max_side

    def detect(self, rgb: RgbFrame) -> list[DetectedFace]:
        gray = _gray(rgb)
        rects, scores, _ = self._detector.run(gray, 0, 0.0)
        if not rects and max(gray.shape) <= self._retry_upsample_max_side:
            rects, scores, _ = self._detector.run(gray, 1, 0.0)
        return [
            DetectedFace((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]

    def landmarks(self, rgb: RgbFrame, box: Box) -> Landmarks:
        x0, y0, x1, y1 = to_int_box(box)
        shape = self._predictor(_gray(rgb), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32).reshape(LANDMARK_COUNT, 2)


def _gray(rgb: RgbFrame) -> npt.NDArray[np.uint8]:
    # dlib converts to grayscale internally; doing it once in OpenCV is faster, and HOG on gray makes
    # fewer weak false hits than on colour.
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), dtype=np.uint8)


@dataclass(frozen=True)
class FaceChoice:
    """The face picked among a frame's detections."""

    face: DetectedFace | None
    others: int = 0  # detections that were not picked
    ambiguous: bool = False  # another face is about as large, so size alone cannot say which is meant


def choose_face(faces: Sequence[DetectedFace], *, dominance: float, near: FloatBox | None = None) -> FaceChoice:
    """Pick the face to use: the one continuing ``near`` if any, else the largest if it dominates by area."""
    if not faces:
        return FaceChoice(None)
    best_score = max(f.score for f in faces)
    faces = [f for f in faces if f.score >= best_score * _MIN_RELATIVE_SCORE]
    if near is not None:
        best = max(faces, key=lambda f: iou(f.box, near))
        if iou(best.box, near) >= _SAME_FACE_MIN_IOU:
            return FaceChoice(best, others=len(faces) - 1)
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    ambiguous = len(ranked) > 1 and ranked[0].area < dominance * ranked[1].area
    return FaceChoice(ranked[0], others=len(ranked) - 1, ambiguous=ambiguous)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def to_int_box(box: Sequence[float]) -> Box:
    return (round(box[0]), round(box[1]), round(box[2]), round(box[3]))


def to_float_box(box: Sequence[float]) -> FloatBox:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def box_template(box: Sequence[float], landmarks: Landmarks) -> FloatBox:
    """The detector box expressed relative to the landmarks' bounding box, to re-derive it while tracking."""
    lx0, ly0 = landmarks.min(axis=0)
    lx1, ly1 = landmarks.max(axis=0)
    lw, lh = max(float(lx1 - lx0), 1.0), max(float(ly1 - ly0), 1.0)
    return ((box[0] - lx0) / lw, (box[1] - ly0) / lh, (box[2] - lx1) / lw, (box[3] - ly1) / lh)


def box_from_landmarks(landmarks: Landmarks, template: FloatBox) -> FloatBox:
    lx0, ly0 = (float(v) for v in landmarks.min(axis=0))
    lx1, ly1 = (float(v) for v in landmarks.max(axis=0))
    lw, lh = max(lx1 - lx0, 1.0), max(ly1 - ly0, 1.0)
    return (lx0 + template[0] * lw, ly0 + template[1] * lh, lx1 + template[2] * lw, ly1 + template[3] * lh)


@dataclass(frozen=True)
class FaceObservation:
    """The face in one frame, with a float box so it can be smoothed before rounding."""

    box: FloatBox
    landmarks: Landmarks


@dataclass
class TrackResult:
    """Per-frame observations (None where the face was lost) and what the detector saw on the way."""

    observations: list[FaceObservation | None]
    detections: int = 0  # detector calls made
    detect_every: int = 1
    ambiguous: bool = False  # two similar faces with no track to tell them apart: the caller refuses
    max_faces: int = 0
    other_face_frames: set[int] = field(default_factory=set)  # frames where smaller faces were ignored

    @property
    def lost(self) -> int:
        return sum(o is None for o in self.observations)

    @property
    def found(self) -> int:
        return len(self.observations) - self.lost


def _lost_so_far(result: TrackResult, index: int) -> int:
    return sum(o is None for o in result.observations[: index + 1])


@dataclass
class _TrackState:
    previous: FaceObservation | None = None
    template: FloatBox = (0.0, 0.0, 0.0, 0.0)
    last_detection: int = -1
    detect_seconds: list[float] = field(default_factory=list)


class FaceTracker:
    """Detect on keyframes and follow the face in between by running the landmark model in the last box.

    A keyframe whose detection disagrees with the track (lost, or somewhere else) re-checks the frames
    tracked since the previous keyframe with the detector, so a cut or an occlusion is not papered over.
    """

    def __init__(
        self,
        analyser: FaceAnalyser,
        *,
        dominance: float,
        detect_every: int | None = None,
        detection_budget_s: float = 2.0,
        max_lost: int | None = None,
    ) -> None:
        self.analyser = analyser
        self.dominance = dominance
        self.fixed_detect_every = detect_every
        self.detection_budget_s = detection_budget_s
        self.max_lost = max_lost

    def track(self, frames: Sequence[RgbFrame], progress: Callable[[float], None] | None = None) -> TrackResult:
        result = TrackResult(observations=[None] * len(frames))
        state = _TrackState()
        for i, frame in enumerate(frames):
            if i == 1:
                result.detect_every = self._detect_every(len(frames), state)
            due = i == 0 or state.previous is None or i - state.last_detection >= result.detect_every
            if due or not self._follow(i, frame, result, state):
                self._keyframe(i, frames, result, state)
            if result.ambiguous:
                break
            if self.max_lost is not None and _lost_so_far(result, i) > self.max_lost:
                break  # already more lost than may be dropped: the clip will be refused anyway
            if progress is not None and i % 5 == 4:
                progress((i + 1) / len(frames))
        return result

    def _detect_every(self, n_frames: int, state: _TrackState) -> int:
        """Detect on every frame when the detector fits the time budget, else on evenly spaced keyframes."""
        if self.fixed_detect_every is not None:
            return max(1, self.fixed_detect_every)
        per_detection = min(state.detect_seconds) if state.detect_seconds else 0.0
        return max(1, math.ceil(n_frames * per_detection / max(self.detection_budget_s, 1e-6)))

    def _keyframe(self, i: int, frames: Sequence[RgbFrame], result: TrackResult, state: _TrackState) -> None:
        gap_start = state.last_detection + 1
        agreed = self._detect(i, frames[i], result, state)
        if agreed or i - gap_start < 1:
            return
        # The track disagrees with the detector: re-check the frames only tracked since the last keyframe.
        state.previous = result.observations[gap_start - 1] if gap_start > 0 else None
        for j in range(gap_start, i + 1):
            self._detect(j, frames[j], result, state)

    def _detect(self, i: int, frame: RgbFrame, result: TrackResult, state: _TrackState) -> bool:
        """Detect in frame ``i``; returns whether the detection agrees with the track so far."""
        started = time.perf_counter()
        faces = self.analyser.detect(frame)
        state.detect_seconds.append(time.perf_counter() - started)
        result.detections += 1
        state.last_detection = i
        predicted = box_from_landmarks(state.previous.landmarks, state.template) if state.previous else None
        choice = choose_face(faces, dominance=self.dominance, near=predicted)
        if choice.face is None:
            result.observations[i] = state.previous = None
            return predicted is None
        result.max_faces = max(result.max_faces, choice.others + 1)
        result.ambiguous = result.ambiguous or (choice.ambiguous and predicted is None)
        if choice.others:
            result.other_face_frames.add(i)
        landmarks = self.analyser.landmarks(frame, choice.face.box)
        state.template = box_template(choice.face.box, landmarks)
        observation = FaceObservation(to_float_box(choice.face.box), landmarks)
        result.observations[i] = state.previous = observation
        return predicted is None or iou(predicted, observation.box) >= _TRACK_MIN_IOU

    def _follow(self, i: int, frame: RgbFrame, result: TrackResult, state: _TrackState) -> bool:
        """Track frame ``i`` from the previous one; False when the face slipped and a detection is needed."""
        assert state.previous is not None
        box = box_from_landmarks(state.previous.landmarks, state.template)
        landmarks = self.analyser.landmarks(frame, to_int_box(box))
        followed = box_from_landmarks(landmarks, state.template)
        if iou(box, followed) < _TRACK_MIN_IOU:
            return False
        result.observations[i] = state.previous = FaceObservation(followed, landmarks)
        return True
