"""Test inputs: avatars of scikit-image's astronaut landmarked with dlib directly, and espeak-ng speech."""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from pathlib import Path

import dlib
import numpy as np
import numpy.typing as npt
import skimage.data

from schemas.avatar import AvatarFaceData, FaceFrame, RgbFrame
from tests.support.envelope_measure import landmark_model_path

TAG_SIZE = 6  # corner patch that makes each frame of the test video recognisable in the output
TAG_STEP = 24  # grey-level step between frames' patches: 10 frames fit in uint8


@functools.cache
def _detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def _predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(landmark_model_path()))


def face_frame(image: RgbFrame) -> FaceFrame:
    """The most confident face in ``image`` with its box and landmarks; the image is made read-only so a
    renderer that writes into the cached avatar fails loudly."""
    rects, scores, _ = _detector().run(image, 1, 0.0)
    if not rects:
        raise ValueError("no face found in the fixture image")
    best = rects[int(np.argmax(scores))]
    shape = _predictor()(image, best)
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    frozen = image.copy()
    frozen.flags.writeable = False
    box = (max(best.left(), 0), max(best.top(), 0), best.right() + 1, best.bottom() + 1)
    return FaceFrame(image=frozen, box=box, landmarks=landmarks)


@functools.cache
def _astronaut_frame() -> FaceFrame:
    return face_frame(np.ascontiguousarray(skimage.data.astronaut()))


def astronaut_photo(avatar_id: str = "astronaut") -> AvatarFaceData:
    """A still-photo avatar (one 512x512 frame)."""
    return AvatarFaceData(avatar_id=avatar_id, frames=(_astronaut_frame(),))


def astronaut_video(n_frames: int, avatar_id: str = "astronaut-video") -> AvatarFaceData:
    """A video avatar of ``n_frames`` frames: the astronaut with frame i's index written into a corner patch
    (far from the face) so a test can tell which source frame an output frame shows."""
    if not 1 <= n_frames <= 10:
        raise ValueError("the frame tags distinguish 1 to 10 frames")
    base = _astronaut_frame()
    frames = []
    for index in range(n_frames):
        image = np.array(base.image)
        image[:TAG_SIZE, :TAG_SIZE] = TAG_STEP * index + 10
        image.flags.writeable = False
        frames.append(FaceFrame(image=image, box=base.box, landmarks=base.landmarks.copy()))
    return AvatarFaceData(avatar_id=avatar_id, frames=tuple(frames), source_fps=25.0)


def frame_tag(frame: RgbFrame) -> int:
    """Which test-video frame ``frame`` shows (inverse of the corner patch written above)."""
    return round((float(frame[:TAG_SIZE, :TAG_SIZE].mean()) - 10) / TAG_STEP)


@functools.cache
def espeak_speech(text: str, voice: str, rate: int = 16_000) -> npt.NDArray[np.float32]:
    """``text`` spoken by espeak-ng (22050 Hz) as float32 mono resampled to ``rate`` by linear interpolation
    (its energy above 8 kHz is small enough that the missing anti-alias filter does not matter here)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path)) as wav:
            source_rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float64) / 32768.0
    duration = samples.shape[0] / source_rate
    times = np.arange(int(duration * rate)) / rate
    speech = np.interp(times, np.arange(samples.shape[0]) / source_rate, samples).astype(np.float32)
    speech.flags.writeable = False
    return speech
