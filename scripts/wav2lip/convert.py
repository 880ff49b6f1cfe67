"""Turns a Wav2Lip PyTorch checkpoint into the ONNX model the Wav2Lip engine loads: fp32, or static int8.

Steps: read the checkpoint without torch (``torch_checkpoint`` here), check every tensor's name and shape
against the published architecture before reading the bytes, build the graph with batch norm folded
(``graph`` here), and optionally quantise it. The int8 path rewrites each ConvTranspose as Conv (+ pixel
shuffle) first, because ONNX Runtime's quantiser leaves ConvTranspose in fp32, then runs static QDQ
quantisation with per-channel int8 weights and uint8 activations whose ranges are calibrated on real
inputs: face crops of a photo (slightly shifted and scaled, as a video's boxes move) and mel windows of
Persian and English speech. The int8 model's output is compared with the fp32 model's on held-out inputs.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from processors.lipsync.engines.wav2lip import make_face_plan
from processors.lipsync.mel import SAMPLE_RATE, mel_windows
from schemas.avatar import RgbFrame
from scripts.wav2lip.graph import (
    FACE_INPUT,
    MEL_INPUT,
    Architecture,
    StateDict,
    build_model,
    check_state_dict,
    wav2lip_architecture,
)
from scripts.wav2lip.torch_checkpoint import find_state_dict, load_tensors, read_checkpoint

Progress = Callable[[str], None]
Feeds = dict[str, npt.NDArray[np.float32]]
CALIBRATION_SENTENCES = (
    ("fa", "سلام، امروز هوا خیلی خوب است و ما با هم به پارک می‌رویم."),
    ("en", "Hello, this is a short sentence to calibrate the lip sync model with open and closed vowels."),
)
CALIBRATION_BATCH = 8
# The last layers turn features into pixel values; int8 there would band the colours, and they cost
# almost nothing, so they stay in fp32.
FP32_LAYERS = ("output_block.0", "output_block.1")


class ConversionError(RuntimeError):
    """Conversion cannot go on (bad calibration inputs, a failed quantisation)."""


@dataclass(frozen=True)
class ConversionReport:
    """What was written and how close the int8 model stays to fp32 (mean |difference| in 0..255 levels)."""

    output: Path
    parameters: int
    int8: bool
    rewritten: bool
    seconds: float
    int8_mean_error_levels: float | None = None
    int8_max_error_levels: float | None = None


def _quiet(_message: str) -> None:
    pass


def load_wav2lip_weights(path: Path, arch: Architecture | None = None, progress: Progress = _quiet) -> StateDict:
    """The generator's tensors from a checkpoint, checked against the architecture before being read."""
    arch = arch or wav2lip_architecture()
    progress(f"reading {path.name}")
    refs = find_state_dict(read_checkpoint(path))
    check_state_dict(refs, arch)
    step = max(1, len(refs) // 10)

    def report(done: int, total: int, _name: str) -> None:
        if done % step == 0 or done == total:
            progress(f"  tensors {done}/{total}")

    return load_tensors(refs, report)


def convert(
    checkpoint: Path,
    output: Path,
    *,
    int8: bool = False,
    rewrite_transposed: bool | None = None,
    calibration: Sequence[Feeds] | None = None,
    arch: Architecture | None = None,
    progress: Progress = _quiet,
) -> ConversionReport:
    """Checkpoint → ONNX at ``output``; ``rewrite_transposed`` defaults to on for int8, off for fp32."""
    started = time.perf_counter()
    arch = arch or wav2lip_architecture()
    state = load_wav2lip_weights(checkpoint, arch, progress)
    return write_model(state, output, int8=int8, rewrite_transposed=rewrite_transposed, calibration=calibration,
                       arch=arch, progress=progress, started=started)


def write_model(
    state: StateDict,
    output: Path,
    *,
    int8: bool = False,
    rewrite_transposed: bool | None = None,
    calibration: Sequence[Feeds] | None = None,
    arch: Architecture | None = None,
    progress: Progress = _quiet,
    started: float | None = None,
) -> ConversionReport:
    """Build the graph from weights and save it, quantised if asked; used by the converter and benchmark."""
    started = time.perf_counter() if started is None else started
    arch = arch or wav2lip_architecture()
    rewrite = int8 if rewrite_transposed is None else rewrite_transposed
    progress(f"building the graph ({arch.parameter_count() / 1e6:.1f} M parameters, batch norm folded"
             f"{', ConvTranspose rewritten as Conv + pixel shuffle' if rewrite else ''})")
    model = build_model(state, arch, rewrite_transposed=rewrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not int8:
        onnx.save(model, str(output))
        progress(f"wrote {output} ({output.stat().st_size / 1e6:.0f} MB)")
        return ConversionReport(output, arch.parameter_count(), False, rewrite, time.perf_counter() - started)
    feeds = list(calibration) if calibration is not None else default_calibration_feeds(progress=progress)
    if len(feeds) < 2:
        raise ConversionError("int8 calibration needs at least two batches of inputs")
    held_out, calibrate = feeds[:1], feeds[1:]
    with tempfile.TemporaryDirectory() as folder:
        fp32_path = Path(folder) / "fp32.onnx"
        onnx.save(model, str(fp32_path))
        progress(f"calibrating activation ranges on {sum(len(f[MEL_INPUT]) for f in calibrate)} frames "
                 "and quantising to int8 (QDQ, per-channel weights)")
        quantize_int8(fp32_path, output, calibrate)
        mean_error, max_error = compare_models(fp32_path, output, held_out)
    progress(f"wrote {output} ({output.stat().st_size / 1e6:.0f} MB); int8 vs fp32 on held-out frames: "
             f"mean |diff| {mean_error:.2f}, max {max_error:.1f} (of 255)")
    return ConversionReport(output, arch.parameter_count(), True, rewrite, time.perf_counter() - started,
                            mean_error, max_error)


def quantize_int8(fp32_path: Path, output: Path, calibration: Sequence[Feeds]) -> None:
    """Static QDQ quantisation: int8 per-channel weights, uint8 activations, MinMax-calibrated ranges."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[Feeds] = iter(calibration)

        def get_next(self) -> Feeds | None:
            return next(self._feeds, None)

    model = onnx.load(str(fp32_path))
    keep_fp32 = [node.name for node in model.graph.node if node.name in FP32_LAYERS]
    # The quantiser suggests its pre-processing (shape inference, graph clean-up); this graph is built
    # with static shapes and folded batch norm, so there is nothing for it to do: its hint is muted.
    hint = _DropMessages("pre-process")
    logging.getLogger().addFilter(hint)
    try:
        quantize_static(
            str(fp32_path), str(output), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_fp32,
        )
    except Exception as error:  # the quantiser raises assorted types; the user needs to know it was this step
        raise ConversionError(f"int8 quantisation failed: {error}") from error
    finally:
        logging.getLogger().removeFilter(hint)


class _DropMessages(logging.Filter):
    """Drops log records whose message contains ``fragment``."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def compare_models(reference: Path, candidate: Path, feeds: Sequence[Feeds]) -> tuple[float, float]:
    """Mean and max |output difference| of two models on ``feeds``, in 0..255 pixel levels."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for path in (reference, candidate)]
    errors = []
    for feed in feeds:
        a, b = (np.asarray(s.run(None, feed)[0]) for s in sessions)
        errors.append(np.abs(a - b) * 255.0)
    stacked = np.concatenate([e.reshape(-1) for e in errors])
    return float(stacked.mean()), float(stacked.max())


def calibration_feeds(
    image: RgbFrame, box: tuple[int, int, int, int], audio: npt.NDArray[np.float32], *, frames: int = 64, seed: int = 0
) -> list[Feeds]:
    """Model inputs in batches of ``CALIBRATION_BATCH``: mel windows from ``audio`` at random frames, face
    crops of ``box`` jittered by a few percent (moving boxes and different faces are what a model sees)."""
    rng = np.random.default_rng(seed)
    n_audio_frames = len(audio) * 25 // SAMPLE_RATE
    if n_audio_frames < 8:
        raise ConversionError("calibration audio is shorter than a third of a second")
    windows = mel_windows(audio, n_audio_frames)
    height, width = image.shape[:2]
    feeds: list[Feeds] = []
    for start in range(0, frames, CALIBRATION_BATCH):
        count = min(CALIBRATION_BATCH, frames - start)
        mel = windows[rng.integers(0, n_audio_frames, count)]
        faces = np.stack([make_face_plan(image, _jitter(box, rng, width, height)).face_input for _ in range(count)])
        feeds.append({MEL_INPUT: np.ascontiguousarray(mel), FACE_INPUT: faces})
    return feeds


def _jitter(box: tuple[int, int, int, int], rng: np.random.Generator, width: int, height: int
            ) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    size = max(x1 - x0, y1 - y0)
    dx, dy = (rng.uniform(-0.04, 0.04, 2) * size).round().astype(int)
    grow = round(float(rng.uniform(-0.04, 0.06)) * size)
    return (max(0, x0 + dx - grow), max(0, y0 + dy - grow), min(width, x1 + dx + grow), min(height, y1 + dy + grow))


def default_calibration_feeds(image_path: Path | None = None, audio_path: Path | None = None, *, frames: int = 64,
                              progress: Progress = _quiet) -> list[Feeds]:
    """Calibration inputs from a photo (default: scikit-image's astronaut) and speech (default: espeak-ng
    saying a Persian and an English sentence)."""
    image = _load_image(image_path)
    box = detect_face_box(image)
    audio = _load_wav(audio_path) if audio_path else espeak_calibration_speech()
    progress(f"calibration inputs: face {box} of a {image.shape[1]}x{image.shape[0]} image, "
             f"{len(audio) / SAMPLE_RATE:.1f} s of speech, {frames} frames")
    return calibration_feeds(image, box, audio, frames=frames)


def detect_face_box(image: RgbFrame) -> tuple[int, int, int, int]:
    """The most confident face (dlib HOG), as the registration pipeline would box it."""
    rects, scores, _ = dlib.get_frontal_face_detector().run(np.ascontiguousarray(image), 1, 0.0)
    if not rects:
        raise ConversionError("no face found in the calibration image")
    best = rects[int(np.argmax(scores))]
    height, width = image.shape[:2]
    return (max(best.left(), 0), max(best.top(), 0), min(best.right() + 1, width), min(best.bottom() + 1, height))


def _load_image(path: Path | None) -> RgbFrame:
    if path is None:
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut())
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError(f"cannot read the calibration image {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def espeak_calibration_speech() -> npt.NDArray[np.float32]:
    """The calibration sentences spoken by espeak-ng, at 16 kHz."""
    parts = []
    with tempfile.TemporaryDirectory() as folder:
        for voice, text in CALIBRATION_SENTENCES:
            path = Path(folder) / f"{voice}.wav"
            try:
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as error:
                raise ConversionError(f"espeak-ng could not speak the calibration text ({error}); "
                                      "pass --calibration-audio a 16-bit WAV of speech") from None
            parts.append(_load_wav(path))
    return np.concatenate(parts)


def _load_wav(path: Path) -> npt.NDArray[np.float32]:
    """A 16-bit PCM WAV as float32 mono at 16 kHz (linear-interpolation resampling)."""
    try:
        with wave.open(str(path)) as wav:
            if wav.getsampwidth() != 2:
                raise ConversionError(f"{path} is not 16-bit PCM")
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    except (OSError, wave.Error, EOFError) as error:
        raise ConversionError(f"cannot read the WAV file {path}: {error}") from None
    mono = samples.reshape(-1, channels).mean(axis=1)
    if rate == SAMPLE_RATE:
        return mono.astype(np.float32)
    times = np.arange(int(len(mono) * SAMPLE_RATE / rate)) / SAMPLE_RATE
    return np.interp(times, np.arange(len(mono)) / rate, mono).astype(np.float32)
