"""The insightface backend: a local model pack's SCRFD detector and 68-point landmark ONNX, run by onnxruntime.

Pack layout (a folder, e.g. insightface's ``buffalo_l``; nothing is ever downloaded):

- detector: ``det_*.onnx`` or ``scrfd*.onnx`` — SCRFD, one NCHW float input (RGB, (x - 127.5) / 128) and
  3 × (scores, box distances[, 5 key points]) outputs for strides 8, 16, 32 in that order (6 or 9 outputs;
  10 or 15 for the 5-stride variants). Scores are probabilities; box distances are in stride units.
- landmarks: ``1k3d68.onnx`` (or any ``*68*.onnx``) — one 1×3×S×S input (RGB crop of 1.5 × the face box,
  raw 0-255 pixels by default) and one output of 68 points in the iBUG 300-W order, either 1×3309 (the
  3-D model: the last 68 of 1103 x, y, z rows) or 1×136 / 1×204, coordinates in [-1, 1] of the crop.
- optional ``pack.json``: {"detector": "file.onnx", "landmarks": "file.onnx", "detector_mean": 127.5,
  "detector_std": 128.0, "landmark_mean": 0.0, "landmark_std": 1.0, "score_threshold": 0.5}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from processors.registration.faces import Box, DetectedFace, Landmarks
from schemas.avatar import LANDMARK_COUNT, RgbFrame

DETECTOR_PATTERNS = ("det_*.onnx", "scrfd*.onnx")
LANDMARK_PATTERNS = ("1k3d68.onnx", "*68*.onnx")
DEFAULT_DETECTOR_SIZE = 640  # for detectors exported with a dynamic input size
NMS_IOU = 0.4
CROP_SCALE = 1.5  # the landmark model sees the face box enlarged this much, centred
_OUTPUTS_PER_STRIDE_SET = {6: (8, 16, 32), 9: (8, 16, 32), 10: (8, 16, 32, 64, 128), 15: (8, 16, 32, 64, 128)}


class ModelPackError(RuntimeError):
    """The insightface model pack is missing, incomplete or not what this backend expects."""


@dataclass(frozen=True)
class PackConfig:
    detector: Path
    landmarks: Path
    detector_mean: float = 127.5
    detector_std: float = 128.0
    landmark_mean: float = 0.0
    landmark_std: float = 1.0
    score_threshold: float = 0.5


def read_pack(folder: Path) -> PackConfig:
    """Find the pack's two models (named in pack.json, or by insightface's file names)."""
    if not folder.is_dir():
        raise ModelPackError(f"insightface model pack {str(folder)!r} is not a directory")
    options: dict[str, Any] = {}
    manifest = folder / "pack.json"
    if manifest.is_file():
        try:
            options = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelPackError(f"{manifest} is not valid JSON: {error}") from None
    detector = _model_file(folder, options.get("detector"), DETECTOR_PATTERNS, "SCRFD detector")
    landmarks = _model_file(folder, options.get("landmarks"), LANDMARK_PATTERNS, "68-point landmark model")
    numbers = {k: float(options[k]) for k in ("detector_mean", "detector_std", "landmark_mean", "landmark_std",
                                              "score_threshold") if k in options}
    return PackConfig(detector=detector, landmarks=landmarks, **numbers)


def _model_file(folder: Path, named: str | None, patterns: tuple[str, ...], what: str) -> Path:
    if named is not None:
        path = folder / Path(named).name  # pack.json names files inside the pack, never elsewhere
        if not path.is_file():
            raise ModelPackError(f"pack.json names {what} {named!r}, but {path} does not exist")
        return path
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise ModelPackError(f"no {what} in {folder} (expected {' or '.join(patterns)}); "
                         "see docs/avatars.md for the pack layout")


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several exception types for unreadable models
        raise ModelPackError(f"{path} is not a loadable ONNX model: {error}") from None


def _fixed_side(dim: object, default: int) -> int:
    return dim if isinstance(dim, int) and dim > 0 else default


class ScrfdDetector:
    """SCRFD face detection: letterbox into the model's input, decode anchor distances, non-maximum suppression."""

    def __init__(self, path: Path, *, mean: float = 127.5, std: float = 128.0, score_threshold: float = 0.5,
                 threads: int = 2) -> None:
        self.session = _session(path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
            raise ModelPackError(f"{path.name}: an SCRFD detector has one N×3×H×W input, not "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        if len(outputs) not in _OUTPUTS_PER_STRIDE_SET:
            raise ModelPackError(f"{path.name}: an SCRFD detector has 6, 9, 10 or 15 outputs, not {len(outputs)}")
        self.input_name = inputs[0].name
        self.input_height = _fixed_side(inputs[0].shape[2], DEFAULT_DETECTOR_SIZE)
        self.input_width = _fixed_side(inputs[0].shape[3], DEFAULT_DETECTOR_SIZE)
        self.strides = _OUTPUTS_PER_STRIDE_SET[len(outputs)]
        self.mean, self.std, self.score_threshold = mean, std, score_threshold

    def detect(self, rgb: RgbFrame) -> list[DetectedFace]:
        blob, scale = self._blob(rgb)
        outputs = self.session.run(None, {self.input_name: blob})
        boxes, scores = self._decode(outputs)
        if not len(scores):
            return []
        boxes /= scale
        keep = _nms(boxes, scores, NMS_IOU)
        return [DetectedFace(_round_box(boxes[i]), float(scores[i])) for i in keep]

    def _blob(self, rgb: RgbFrame) -> tuple[npt.NDArray[np.float32], float]:
        """The frame scaled to fit the input (aspect kept), top-left aligned, zero padded, normalised."""
        height, width = rgb.shape[:2]
        scale = min(self.input_height / height, self.input_width / width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.zeros((self.input_height, self.input_width, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        normalised = (canvas.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None]), scale

    def _decode(self, outputs: list[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        count = len(self.strides)
        all_boxes, all_scores = [], []
        for level, stride in enumerate(self.strides):
            scores = np.asarray(outputs[level], dtype=np.float64).reshape(-1)
            distances = np.asarray(outputs[count + level], dtype=np.float64).reshape(-1, 4) * stride
            rows, cols = math.ceil(self.input_height / stride), math.ceil(self.input_width / stride)
            anchors = max(1, len(scores) // (rows * cols))
            ys, xs = np.mgrid[:rows, :cols]
            centres = np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1) * stride, anchors, axis=0)
            if len(centres) != len(scores) or len(distances) != len(scores):
                raise ModelPackError(f"SCRFD output for stride {stride} has {len(scores)} scores and "
                                     f"{len(distances)} boxes; {len(centres)} anchors were expected")
            keep = scores >= self.score_threshold
            kept = distances[keep]
            centre = centres[keep].astype(np.float64)
            all_boxes.append(np.concatenate([centre - kept[:, :2], centre + kept[:, 2:]], axis=1))
            all_scores.append(scores[keep])
        return np.concatenate(all_boxes), np.concatenate(all_scores)


class Landmark68Model:
    """68 iBUG 300-W landmarks from a square crop around the face box (e.g. insightface's 1k3d68)."""

    def __init__(self, path: Path, *, mean: float = 0.0, std: float = 1.0, threads: int = 2) -> None:
        self.session = _session(path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]) or shape[2] != shape[3]:
            raise ModelPackError(f"{path.name}: a landmark model has one N×3×S×S input of fixed size, not "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        length = outputs[0].shape[-1] if outputs and outputs[0].shape else None
        if length == 212:
            raise ModelPackError(f"{path.name} gives 106 points in insightface's own layout; this backend needs "
                                 "the 68-point iBUG 300-W layout: use 1k3d68.onnx")
        if length not in (3309, LANDMARK_COUNT * 2, LANDMARK_COUNT * 3):
            raise ModelPackError(f"{path.name}: expected an output of 3309, 136 or 204 values, not {length}")
        self.input_name = inputs[0].name
        self.size = int(shape[2])
        self.dims = 2 if length == LANDMARK_COUNT * 2 else 3
        self.mean, self.std = mean, std

    def landmarks(self, rgb: RgbFrame, box: Box) -> Landmarks:
        matrix = self._crop_matrix(box)
        crop = cv2.warpAffine(rgb, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        blob = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        raw = np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0], np.float64)
        points = raw.reshape(-1, self.dims)[-LANDMARK_COUNT:, :2]  # the 3-D model lists 68 points last
        in_crop = (points + 1.0) * (self.size / 2)
        inverse = cv2.invertAffineTransform(matrix)
        return (in_crop @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)

    def _crop_matrix(self, box: Box) -> npt.NDArray[np.float64]:
        """Maps the frame to the crop: the box's centre to the crop's, 1.5 × its longer side to the crop's side."""
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        scale = self.size / (max(box[2] - box[0], box[3] - box[1], 1) * CROP_SCALE)
        half = self.size / 2
        return np.array([[scale, 0.0, half - centre_x * scale], [0.0, scale, half - centre_y * scale]])


class InsightFaceAnalyser:
    """The FaceAnalyser of an insightface model pack: SCRFD boxes, then 68 landmarks per face."""

    name = "insightface-scrfd-68"

    def __init__(self, detector: ScrfdDetector, landmark_model: Landmark68Model) -> None:
        self.detector = detector
        self.landmark_model = landmark_model

    @classmethod
    def from_pack(cls, folder: Path, *, threads: int = 2) -> InsightFaceAnalyser:
        """Load both models now; a missing file or wrong signature raises ModelPackError naming it."""
        pack = read_pack(Path(folder))
        detector = ScrfdDetector(pack.detector, mean=pack.detector_mean, std=pack.detector_std,
                                 score_threshold=pack.score_threshold, threads=threads)
        landmark_model = Landmark68Model(pack.landmarks, mean=pack.landmark_mean, std=pack.landmark_std,
                                         threads=threads)
        return cls(detector, landmark_model)

    def detect(self, rgb: RgbFrame) -> list[DetectedFace]:
        return self.detector.detect(rgb)

    def landmarks(self, rgb: RgbFrame, box: Box) -> Landmarks:
        return self.landmark_model.landmarks(rgb, box)


def _round_box(box: npt.NDArray[np.float64]) -> Box:
    return (round(box[0]), round(box[1]), round(box[2]), round(box[3]))


def _nms(boxes: npt.NDArray[np.float64], scores: npt.NDArray[np.float64], iou_limit: float) -> list[int]:
    """Greedy non-maximum suppression: best score first, dropping boxes overlapping a kept one too much."""
    order = list(np.argsort(-scores))
    areas = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        rest = np.array(order)
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = [int(i) for i, o in zip(rest, overlap, strict=True) if o <= iou_limit]
    return keep
