"""The Wav2Lip lip-sync engine: a warm, batched ONNX Runtime session of the Wav2Lip generator.

Per frame the model sees the frame's 80x16 mel window, computed on the request's timeline from the job's
audio, its history and its look-ahead (``processors.lipsync.mel.timeline_windows``: the very window the
whole request's spectrogram gives, however the request is cut into jobs), and a 6-channel 96x96
face: the avatar frame's face crop with its lower half blacked out, next to the same crop whole (the
reference the model copies pose and identity from), both BGR in [0, 1] as in training. It returns the
96x96 face with the mouth redrawn for that sound, which is resized back over the crop and blended in
with a feathered mask that covers the lower face, so the sharper original eyes and the frame edges stay.

The crop is the cached face box (registration's; inference never detects a face) with Wav2Lip's usual
padding below it, so the chin, which moves with the mouth, is inside. Crops, masks and the 6-channel
inputs depend only on the avatar frame, so they are made once per frame and cached.

``render_many`` puts the frames of any number of jobs (several sessions) into one batched inference;
``prepare``, ``infer`` and ``paste`` are its three stages, public so the benchmark can time each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from infra.bounded_cache import BoundedCache
from infra.settings import Settings
from processors.lipsync.engines.base import FPS, SAMPLES_PER_FRAME, RenderJob
from processors.lipsync.engines.embedded import pingpong_index
from processors.lipsync.mel import HOP, MEL_STEP, N_FFT, timeline_windows
from schemas.avatar import AvatarFaceData, FaceFrame, RgbFrame

log = logging.getLogger(__name__)

FACE_SIZE = 96
MEL_SHAPE = (1, 80, 16)
FACE_SHAPE = (6, FACE_SIZE, FACE_SIZE)
OUTPUT_SHAPE = (3, FACE_SIZE, FACE_SIZE)
# Wav2Lip's inference default (--pads 0 10 0 0): top, bottom, left, right pixels added to the face box.
DEFAULT_PADS = (0, 10, 0, 0)
CHIN_LANDMARK = 8  # iBUG 300-W: the bottom of the jaw line
BATCH_CANDIDATES_CPU = (1, 2, 4, 8, 16)
BATCH_CANDIDATES_GPU = (1, 4, 8, 16, 32, 64, 128)
# Calibration keeps the smallest batch within this share of the best per-frame time: a bigger batch
# only adds latency (a chunk waits for its whole batch) unless it is clearly faster.
CALIBRATION_TOLERANCE = 0.05
CALIBRATION_BUDGET_S = 15.0  # a busy or slow machine stops trying bigger batches after this long
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

# The blend mask over the crop, as shares of its height/width: nothing above the nose, full from mid-face
# down; a soft rim on the sides and bottom hides the seam between generated and original pixels.
MASK_TOP = 0.42
MASK_FULL = 0.58
MASK_SIDE_FEATHER = 0.12
MASK_BOTTOM_FEATHER = 0.06

FloatArray = npt.NDArray[np.float32]
Box = tuple[int, int, int, int]


class Wav2LipModelError(RuntimeError):
    """The Wav2Lip model is missing, unreadable or not the Wav2Lip generator's signature."""


@dataclass(frozen=True)
class ModelSignature:
    """Which graph input is which; batch is the model's fixed batch size, or None if dynamic."""

    mel_input: str
    face_input: str
    output: str
    fixed_batch: int | None


@dataclass(frozen=True)
class FacePlan:
    """What one avatar frame needs for every render: its crop box, model input and blend mask."""

    box: Box
    face_input: FloatArray  # (6, 96, 96): masked crop + reference crop, BGR in [0, 1]
    mask: FloatArray  # (h, w, 1) over the box: 1 = generated pixels, 0 = original ones

    @property
    def nbytes(self) -> int:
        return int(self.face_input.nbytes + self.mask.nbytes)


@dataclass(frozen=True)
class PreparedBatch:
    """The model inputs of a render_many call and where each output frame goes."""

    mel: FloatArray  # (N, 1, 80, 16)
    face: FloatArray  # (N, 6, 96, 96)
    frames: tuple[FaceFrame, ...]  # the avatar frame each of the N outputs is pasted into
    plans: tuple[FacePlan, ...]
    job_sizes: tuple[int, ...]


PlanKey = tuple[str, int, int, Box, bytes]


class Wav2LipEngine:
    """The Wav2Lip generator on ONNX Runtime; thread-safe and shared by all sessions."""

    name = "wav2lip"
    # Frames of audio after a job that its last frame's mel window reaches (its last STFT column is
    # centred 15 hops after the frame's start and spans half an FFT more). A caller that has them passes
    # them in job.audio; otherwise that window is clamped to the audio's end, as the reference does.
    lookahead_frames = -(-((MEL_STEP - 1) * HOP + N_FFT // 2 - SAMPLES_PER_FRAME) // SAMPLES_PER_FRAME)

    def __init__(
        self,
        model_path: Path | str,
        *,
        batch_size: int = 0,
        threads: int = 0,
        pads: tuple[int, int, int, int] = DEFAULT_PADS,
        use_gpu: bool = True,
        gpu_memory_limit: int = 0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        io_binding: bool | None = None,
    ) -> None:
        """``io_binding``: run through ONNX Runtime's I/O binding, the output in a buffer kept on the model's device
        per batch size (None: on the CUDA provider, where it saves a device allocation and a copy per call)."""
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0 = calibrate), got {batch_size}")
        self.model_path = Path(model_path)
        self.pads = pads
        self.session = open_session(self.model_path, threads=threads, use_gpu=use_gpu,
                                    gpu_memory_limit=gpu_memory_limit)
        self.signature = check_signature(self.session, self.model_path)
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        # batch size → its output buffer on the device (I/O binding), per thread: the engine is shared by threads
        self._buffers = threading.local()
        self._plans: BoundedCache[PlanKey, FacePlan] = BoundedCache(cache_bytes)
        self.calibration: dict[int, float] = {}  # seconds per frame by batch size, when calibrated
        self.batch_size = self._choose_batch_size(batch_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> Wav2LipEngine:
        """The engine as configured (WAV2LIP_MODEL_PATH, WAV2LIP_BATCH_SIZE, ONNX_THREADS, GPU_MEMORY_LIMIT)."""
        return cls(
            settings.wav2lip_model_path,
            batch_size=settings.wav2lip_batch_size,
            threads=settings.onnx_threads,
            gpu_memory_limit=int(settings.gpu_memory_limit),
        )

    # The engine interface

    def render(self, job: RenderJob) -> list[RgbFrame]:
        """Exactly ``job.n_frames`` RGB frames of the avatar's size, lips redrawn for ``job.audio``."""
        return self.render_many([job])[0]

    def render_many(self, jobs: Sequence[RenderJob]) -> list[list[RgbFrame]]:
        """Every job's frames, all of them through the model in shared batches."""
        batch = self.prepare(jobs)
        return self.paste(batch, self.infer(batch.mel, batch.face))

    # The three stages

    def prepare(self, jobs: Sequence[RenderJob]) -> PreparedBatch:
        """Mel windows and cached face inputs of every frame of ``jobs``, stacked for the model."""
        for job in jobs:
            _check_job(job)
        return self.face_inputs(jobs, self.mel_inputs(jobs))

    def mel_inputs(self, jobs: Sequence[RenderJob]) -> FloatArray:
        """(N, 1, 80, 16): every frame's mel window on its request's timeline, job after job.

        With ``job.history`` and the look-ahead in ``job.audio``, a frame gets exactly the window the
        reference computes from the whole request's audio, however the request is cut into jobs.
        """
        mels = [timeline_windows(job.history, _job_audio(job), job.first_frame, job.n_frames, FPS)
                for job in jobs if job.n_frames > 0]
        return np.concatenate(mels) if mels else np.zeros((0, *MEL_SHAPE), np.float32)

    def face_inputs(self, jobs: Sequence[RenderJob], mel: FloatArray) -> PreparedBatch:
        """The batch of ``mel`` with every frame's cached 6-channel face input and where its output goes."""
        plans: list[FacePlan] = []
        frames: list[FaceFrame] = []
        for job in jobs:
            for k in range(job.n_frames):
                index = pingpong_index(job.first_frame + k, len(job.avatar.frames))
                frames.append(job.avatar.frames[index])
                plans.append(self.plan(job.avatar, index))
        face = np.stack([plan.face_input for plan in plans]) if plans else np.zeros((0, *FACE_SHAPE), np.float32)
        return PreparedBatch(mel, face, tuple(frames), tuple(plans), tuple(job.n_frames for job in jobs))

    def infer(self, mel: FloatArray, face: FloatArray) -> FloatArray:
        """The model's (N, 3, 96, 96) BGR faces in [0, 1], run ``batch_size`` frames at a time."""
        count = mel.shape[0]
        out = np.empty((count, *OUTPUT_SHAPE), np.float32)
        for start in range(0, count, self.batch_size):
            end = min(start + self.batch_size, count)
            out[start:end] = self._run(mel[start:end], face[start:end])
        return out

    def paste(self, batch: PreparedBatch, faces: FloatArray) -> list[list[RgbFrame]]:
        """Each generated face blended into a copy of its avatar frame, grouped back into jobs."""
        rendered = [_blend(frame.image, plan, face) for frame, plan, face in zip(batch.frames, batch.plans, faces,
                                                                                   strict=True)]
        grouped: list[list[RgbFrame]] = []
        start = 0
        for size in batch.job_sizes:
            grouped.append(rendered[start : start + size])
            start += size
        return grouped

    # Per-avatar precomputation

    def prepare_avatar(self, avatar: AvatarFaceData) -> None:
        """Make every frame's crop now (e.g. when a session selects the avatar), not during its first request."""
        for index in range(len(avatar.frames)):
            self.plan(avatar, index)

    def plan(self, avatar: AvatarFaceData, index: int) -> FacePlan:
        """The cached crop, input and mask of one avatar frame, made on first use."""
        frame = avatar.frames[index]
        # The landmark bytes make a re-registered avatar (same id, new face) miss instead of misfit; the
        # image itself stays out of the key, as reading it may decode a cached JPEG.
        key: PlanKey = (avatar.avatar_id, avatar.version, index, frame.box, frame.landmarks.tobytes())
        found = self._plans.get(key)
        if found is not None:
            return found
        plan = make_face_plan(frame.image, frame.box, self.pads, chin_y=_chin_y(frame))
        self._plans.put(key, plan, size=plan.nbytes)
        return plan

    # Model running

    def _run(self, mel: FloatArray, face: FloatArray) -> FloatArray:
        count = mel.shape[0]
        fixed = self.signature.fixed_batch
        if fixed is not None and count < fixed:  # a fixed-batch export needs its last batch padded
            mel = np.concatenate([mel, np.zeros((fixed - count, *MEL_SHAPE), np.float32)])
            face = np.concatenate([face, np.zeros((fixed - count, *FACE_SHAPE), np.float32)])
        if self.io_binding:
            return self._run_bound(mel, face)[:count]
        feeds = {self.signature.mel_input: mel, self.signature.face_input: face}
        (result,) = self.session.run([self.signature.output], feeds)
        return np.asarray(result[:count], dtype=np.float32)

    def _run_bound(self, mel: FloatArray, face: FloatArray) -> FloatArray:
        """One run through I/O binding: inputs copied to the device once, the output written into its buffer."""
        batch = mel.shape[0]
        outputs: dict[int, ort.OrtValue] = self._buffers.__dict__.setdefault("outputs", {})
        output = outputs.get(batch)
        if output is None:
            output = outputs[batch] = ort.OrtValue.ortvalue_from_shape_and_type((batch, *OUTPUT_SHAPE), np.float32,
                                                                                self.device, 0)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.signature.mel_input, np.ascontiguousarray(mel, dtype=np.float32))
        binding.bind_cpu_input(self.signature.face_input, np.ascontiguousarray(face, dtype=np.float32))
        binding.bind_ortvalue_output(self.signature.output, output)
        self.session.run_with_iobinding(binding)
        return np.array(output.numpy(), dtype=np.float32)

    def _choose_batch_size(self, requested: int) -> int:
        fixed = self.signature.fixed_batch
        if fixed is not None:
            if requested not in (0, fixed):
                raise Wav2LipModelError(
                    f"{self.model_path} has a fixed batch of {fixed}, WAV2LIP_BATCH_SIZE={requested}")
            self._warm_up(fixed)
            return fixed
        if requested:
            self._warm_up(requested)
            return requested
        return self._calibrate()

    def _warm_up(self, batch: int) -> float:
        """Run ``batch`` frames twice and return the second run's seconds per frame: the first run of a
        shape allocates, so a request never pays for it."""
        mel = np.zeros((batch, *MEL_SHAPE), np.float32)
        face = np.full((batch, *FACE_SHAPE), 0.5, np.float32)
        self._run(mel, face)
        started = time.perf_counter()
        out = self._run(mel, face)
        elapsed = (time.perf_counter() - started) / batch
        if out.shape != (batch, *OUTPUT_SHAPE):
            raise Wav2LipModelError(f"{self.model_path} returned {out.shape}, expected {(batch, *OUTPUT_SHAPE)}")
        return elapsed

    def _calibrate(self) -> int:
        """The batch size with (nearly) the best throughput, measured on this machine at start-up."""
        gpu = self.provider != "CPUExecutionProvider"
        per_frame: dict[int, float] = {}
        started = time.perf_counter()
        for candidate in BATCH_CANDIDATES_GPU if gpu else BATCH_CANDIDATES_CPU:
            per_frame[candidate] = self._warm_up(candidate)
            best = min(per_frame.values())
            if per_frame[candidate] > best * (1 + CALIBRATION_TOLERANCE) and len(per_frame) > 2:
                break  # past the optimum: bigger batches only got slower
            if time.perf_counter() - started > CALIBRATION_BUDGET_S:
                break
        best = min(per_frame.values())
        chosen = min(b for b, t in per_frame.items() if t <= best * (1 + CALIBRATION_TOLERANCE))
        log.info("wav2lip batch calibrated", extra={"batch": chosen, "ms_per_frame": {
            b: round(1000 * t, 2) for b, t in per_frame.items()}, "provider": self.provider})
        self.calibration = per_frame
        return chosen


def open_session(path: Path, *, threads: int = 0, use_gpu: bool = True, gpu_memory_limit: int = 0
                 ) -> ort.InferenceSession:
    """An ONNX Runtime session of the model: CUDA when onnxruntime-gpu and a GPU are there, else CPU."""
    if not path.is_file():
        raise Wav2LipModelError(
            f"no Wav2Lip model at {path}: convert your checkpoint with "
            f"`python scripts/convert_wav2lip.py wav2lip_gan.pth -o {path}` (see docs/engines.md), "
            "or set WAV2LIP_MODEL_PATH"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers: list[Any] = ["CPUExecutionProvider"]
    if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        cuda_options = {"gpu_mem_limit": str(gpu_memory_limit)} if gpu_memory_limit > 0 else {}
        providers.insert(0, ("CUDAExecutionProvider", cuda_options))
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ORT raises its own exception types for every kind of bad file
        raise Wav2LipModelError(f"{path} is not a loadable ONNX model: {error}") from None


def check_signature(session: ort.InferenceSession, path: Path) -> ModelSignature:
    """Find the mel and face inputs and the frames output by shape, or say what is wrong."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = "two float inputs mel (B,1,80,16) and face (B,6,96,96), one float output (B,3,96,96)"
    described = ", ".join(f"{arg.name}{arg.shape}" for arg in [*inputs, *outputs])
    if len(inputs) != 2 or len(outputs) != 1:
        raise Wav2LipModelError(f"{path} is not a Wav2Lip generator: expected {expected}, got {described}")
    by_shape = {_tail(arg.shape): arg for arg in inputs}
    mel, face, out = by_shape.get(MEL_SHAPE), by_shape.get(FACE_SHAPE), outputs[0]
    if mel is None or face is None or _tail(out.shape) != OUTPUT_SHAPE:
        raise Wav2LipModelError(f"{path} is not a Wav2Lip generator: expected {expected}, got {described}")
    for arg in (mel, face, out):
        if arg.type != "tensor(float)":
            raise Wav2LipModelError(f"{path}: {arg.name} is {arg.type}, the Wav2Lip generator's are tensor(float)")
    batch_dims = {arg.shape[0] if isinstance(arg.shape[0], int) else None for arg in (mel, face, out)}
    fixed = batch_dims.pop() if len(batch_dims) == 1 else None
    return ModelSignature(mel.name, face.name, out.name, fixed)


def _tail(shape: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(shape[1:]) if len(shape) == 4 else ()


def _check_job(job: RenderJob) -> None:
    if job.n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {job.n_frames}")
    if not job.avatar.frames:
        raise ValueError(f"avatar {job.avatar.avatar_id!r} has no frames")


def _job_audio(job: RenderJob) -> FloatArray:
    """The job's audio, silence-padded to cover all its frames (longer audio is kept as look-ahead)."""
    audio = np.asarray(job.audio, dtype=np.float32).reshape(-1)
    needed = job.n_frames * SAMPLES_PER_FRAME
    if audio.shape[0] < needed:
        audio = np.concatenate([audio, np.zeros(needed - audio.shape[0], np.float32)])
    return audio


def _chin_y(frame: FaceFrame) -> float | None:
    landmarks = np.asarray(frame.landmarks)
    return float(landmarks[CHIN_LANDMARK, 1]) if landmarks.shape == (68, 2) else None


def crop_box(box: Box, pads: tuple[int, int, int, int], width: int, height: int, chin_y: float | None = None) -> Box:
    """The face box grown by Wav2Lip's pads (top, bottom, left, right) and clipped to the frame.

    Wav2Lip was trained on S3FD boxes, which reach below the chin; dlib's stop above it, so the box is
    first lowered to the chin landmark when there is one: the jaw moves with the mouth and must be inside.
    """
    top, bottom, left, right = pads
    x0, y0, x1, y1 = box
    if chin_y is not None:
        y1 = max(y1, int(np.ceil(chin_y)))
    clipped = (max(0, x0 - left), max(0, y0 - top), min(width, x1 + right), min(height, y1 + bottom))
    if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
        raise ValueError(f"face box {box} is empty inside a {width}x{height} frame")
    return clipped


def make_face_plan(image: RgbFrame, box: Box, pads: tuple[int, int, int, int] = DEFAULT_PADS,
                   chin_y: float | None = None) -> FacePlan:
    """Crop, model input and blend mask of one avatar frame."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = crop_box(box, pads, width, height, chin_y)
    # cv2's default (bilinear) resize: what Wav2Lip's training data and its inference script use.
    crop = cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), (FACE_SIZE, FACE_SIZE),
                      interpolation=cv2.INTER_LINEAR)
    reference = crop[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0  # RGB → BGR, HWC → CHW
    masked = reference.copy()
    masked[:, FACE_SIZE // 2 :] = 0.0  # the model must draw the lower half from the sound
    face_input = np.concatenate([masked, reference])
    face_input.flags.writeable = False
    return FacePlan((x0, y0, x1, y1), face_input, blend_mask(x1 - x0, y1 - y0))


def blend_mask(width: int, height: int) -> FloatArray:
    """(height, width, 1) weights of the generated face: the lower face, with soft sides and bottom."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width
    vertical = _smoothstep(MASK_TOP, MASK_FULL, ys) * _smoothstep(1.0, 1.0 - MASK_BOTTOM_FEATHER, ys)
    horizontal = _smoothstep(0.0, MASK_SIDE_FEATHER, xs) * _smoothstep(1.0, 1.0 - MASK_SIDE_FEATHER, xs)
    mask = (vertical[:, None] * horizontal[None, :])[:, :, None].astype(np.float32)
    mask.flags.writeable = False
    return mask


def _smoothstep(edge0: float, edge1: float, x: npt.NDArray[np.floating[Any]]) -> FloatArray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _blend(image: RgbFrame, plan: FacePlan, face: FloatArray) -> RgbFrame:
    """A copy of ``image`` with the generated face (BGR, CHW, [0, 1]) resized over the box and blended in."""
    x0, y0, x1, y1 = plan.box
    rgb = np.ascontiguousarray(face[::-1].transpose(1, 2, 0)) * 255.0
    generated = cv2.resize(rgb, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    out = np.array(image, dtype=np.uint8, copy=True)
    region = out[y0:y1, x0:x1].astype(np.float32)
    region += plan.mask * (generated - region)
    out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    return out
