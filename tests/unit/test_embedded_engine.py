"""Behaviour of the embedded lip-sync engine: mouth follows loudness, silence keeps the face, frames loop."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import skimage.data

from processors.lipsync.audio_features import mouth_track
from processors.lipsync.engines.base import SAMPLES_PER_FRAME, LipSyncEngine, RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine, idle_pose, pingpong_index
from schemas.avatar import AvatarFaceData, RgbFrame
from tests.support.envelope_measure import inner_lip_openings
from tests.unit.face_fixtures import astronaut_photo, astronaut_video, espeak_speech, frame_tag

RATE = 16_000


def vowel(n_frames: int, dbfs: float, f0: float = 140.0) -> npt.NDArray[np.float32]:
    """A sustained open "a": harmonics of ``f0`` shaped by its first three formants, at ``dbfs`` RMS."""
    t = np.arange(n_frames * SAMPLES_PER_FRAME) / RATE
    signal = np.zeros_like(t)
    for harmonic in range(1, int(4000 / f0)):
        freq = harmonic * f0
        gain = sum(1.0 / (1.0 + ((freq - f) / bw) ** 2) for f, bw in ((750, 90), (1200, 110), (2500, 160)))
        signal += gain * np.sin(2 * np.pi * freq * t + harmonic)
    signal *= 10 ** (dbfs / 20) / np.sqrt(np.mean(signal**2))
    return signal.astype(np.float32)


def syllables(n_frames: int) -> npt.NDArray[np.float32]:
    """Speech-like audio: vowels of varying loudness separated by short pauses (ba-ba-ba rhythm)."""
    audio = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    rng = np.random.default_rng(7)
    start = 2
    while start < n_frames - 2:
        length = int(rng.integers(3, 7))
        level = float(rng.uniform(-30, -14))
        chunk = vowel(length, level, f0=float(rng.uniform(110, 190)))
        end = min(start + length, n_frames)
        audio[start * SAMPLES_PER_FRAME : end * SAMPLES_PER_FRAME] = chunk[: (end - start) * SAMPLES_PER_FRAME]
        start = end + int(rng.integers(1, 4))
    return audio


def render(engine: EmbeddedEngine, avatar: AvatarFaceData, audio: npt.ArrayLike, first: int, n: int) -> list[RgbFrame]:
    return engine.render(RenderJob(avatar=avatar, audio=np.asarray(audio, np.float32), first_frame=first, n_frames=n))


def mouth_roi(avatar: AvatarFaceData) -> tuple[slice, slice]:
    points = avatar.frames[0].landmarks[48:68]
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 4
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 5
    return slice(y0, y1), slice(x0, x1)


def roi_difference(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic], roi: tuple[slice, slice]) -> float:
    return float(np.abs(a[roi].astype(np.int16) - b[roi].astype(np.int16)).mean())


@pytest.fixture()
def engine() -> EmbeddedEngine:
    return EmbeddedEngine()


def test_engine_satisfies_the_engine_interface(engine: EmbeddedEngine) -> None:
    as_interface: LipSyncEngine = engine
    assert as_interface.name == "embedded"


def test_silence_leaves_the_mouth_as_in_the_source_up_to_idle_sway(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    source = avatar.frames[0].image
    roi = mouth_roi(avatar)
    frames = render(engine, avatar, np.zeros(60 * SAMPLES_PER_FRAME), 0, 60)
    for index, frame in enumerate(frames):
        (sway_x, sway_y), _ = idle_pose(index)
        # The head (mouth included) follows the sub-pixel sway: compare with the source moved the same way.
        shift = np.array([[1, 0, sway_x], [0, 1, sway_y]], dtype=np.float32)
        expected = np.asarray(cv2.warpAffine(source, shift, (512, 512), flags=cv2.INTER_LINEAR))
        assert roi_difference(frame, expected, roi) < 2.0, f"frame {index}"
    assert inner_lip_openings(frames).max() <= inner_lip_openings([source])[0] + 0.02


def test_silence_without_idle_motion_returns_the_source_frame_exactly() -> None:
    avatar = astronaut_photo()
    frames = render(EmbeddedEngine(idle_motion=False), avatar, np.zeros(10 * SAMPLES_PER_FRAME), 0, 10)
    for frame in frames:
        np.testing.assert_array_equal(frame, avatar.frames[0].image)


def test_loud_vowel_opens_the_mouth(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    source = avatar.frames[0].image
    roi = mouth_roi(avatar)
    frames = render(engine, avatar, vowel(25, -16), 0, 25)
    assert min(roi_difference(frame, source, roi) for frame in frames[5:20]) > 25.0
    closed = inner_lip_openings([source])[0]
    opened = inner_lip_openings(frames[5:20])
    # At full opening the lower lip drops ~12.6 px on a 90 px face box.
    assert np.median(opened) > closed + 0.08


def test_mouth_opening_grows_step_by_step_with_loudness(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    levels = (-38, -32, -26, -20, -14)
    audio = np.concatenate([vowel(12, level) for level in levels])
    openings = inner_lip_openings(render(engine, avatar, audio, 0, 12 * len(levels))).reshape(len(levels), 12)
    # The settled middle of each step, as dlib sees it in the rendered pixels.
    settled = np.median(openings[:, 4:10], axis=1)
    assert np.all(np.diff(settled) > 0.005), settled


def test_mouth_track_opening_is_monotonic_in_loudness_and_zero_in_silence() -> None:
    levels = (-60, -44, -38, -32, -26, -20, -14)
    track = mouth_track(np.concatenate([vowel(12, level) for level in levels]), 12 * len(levels))
    settled = track.opening.reshape(len(levels), 12)[:, 6]
    assert settled[0] == 0.0
    assert np.all(np.diff(settled[1:]) > 0.05), settled


def test_quiet_job_opens_less_than_loud_job() -> None:
    quiet = mouth_track(vowel(25, -40), 25).opening[12]
    loud = mouth_track(vowel(25, -20), 25).opening[12]
    assert 0.2 < quiet < loud


def test_vowel_colour_spreads_the_lips_for_ee_and_rounds_them_for_oo() -> None:
    def width(text: str, voice: str) -> npt.NDArray[np.float32]:
        speech = espeak_speech(text, voice)
        return mouth_track(speech, speech.shape[0] // SAMPLES_PER_FRAME).width

    ee, oo, ah = width("see", "en-us"), width("دور", "fa"), width("saw", "en-us")
    assert ee.max() > 0.5 and ee.min() > -0.2
    assert oo.min() < -0.5 and oo.max() < 0.3
    assert np.abs(ah).max() < 0.3


def test_render_returns_exactly_the_frames_asked_as_new_rgb_arrays(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    assert render(engine, avatar, np.zeros(0), 0, 0) == []
    # Audio shorter than the job is padded with silence, longer audio is ignored past the last frame.
    for audio_frames in (3, 7, 12):
        frames = render(engine, avatar, vowel(audio_frames, -18), 5, 7)
        assert len(frames) == 7
        for frame in frames:
            assert frame.shape == (512, 512, 3)
            assert frame.dtype == np.uint8
            assert not np.shares_memory(frame, avatar.frames[0].image)


def test_rendering_never_modifies_the_cached_avatar(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    # The fixture's images are read-only, so a write would raise; this also checks the pixels themselves.
    render(engine, avatar, syllables(40), 0, 40)
    np.testing.assert_array_equal(avatar.frames[0].image, skimage.data.astronaut())


def test_rendering_is_deterministic_across_calls_and_engines(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    audio = syllables(30)
    first = render(engine, avatar, audio, 90, 30)
    again = render(engine, avatar, audio, 90, 30)
    fresh = render(EmbeddedEngine(), avatar, audio, 90, 30)
    for a, b, c in zip(first, again, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_video_avatar_plays_its_frames_forward_then_backward() -> None:
    avatar = astronaut_video(4)
    frames = render(EmbeddedEngine(), avatar, np.zeros(8 * SAMPLES_PER_FRAME), 3, 8)
    assert [frame_tag(frame) for frame in frames] == [3, 2, 1, 0, 1, 2, 3, 2]
    # A video brings its own motion: in silence each frame is its source frame, untouched.
    for frame, number in zip(frames, range(3, 11), strict=True):
        np.testing.assert_array_equal(frame, avatar.frames[pingpong_index(number, 4)].image)


def test_pingpong_index_bounces_between_first_and_last_frame() -> None:
    assert [pingpong_index(n, 3) for n in range(9)] == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert [pingpong_index(n, 1) for n in range(4)] == [0, 0, 0, 0]
    assert [pingpong_index(n, 2) for n in range(4)] == [0, 1, 0, 1]


def test_photo_idle_motion_is_about_a_pixel_with_an_occasional_blink() -> None:
    poses = [idle_pose(n) for n in range(2000)]
    sways = np.array([sway for sway, _ in poses])
    blinks = np.array([blink for _, blink in poses])
    assert 0.3 < np.abs(sways).max() <= 1.0
    # Smooth: never more than a tenth of a pixel from one frame to the next.
    assert np.abs(np.diff(sways, axis=0)).max() < 0.1
    blink_starts = np.flatnonzero((blinks[1:] > 0) & (blinks[:-1] == 0))
    assert 12 <= len(blink_starts) <= 30  # one per 2.5-6.5 s over 80 s
    assert blinks[:12].max() == 0.0


def test_blink_closes_the_eyes_of_a_photo(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    blinking = next(n for n in range(200) if idle_pose(n)[1] == 1.0)
    frames = render(engine, avatar, np.zeros(2 * SAMPLES_PER_FRAME), blinking - 4, 5)
    eyes = avatar.frames[0].landmarks[36:48]
    x0, y0 = np.floor(eyes.min(axis=0)).astype(int)
    x1, y1 = np.ceil(eyes.max(axis=0)).astype(int) + 1
    source = avatar.frames[0].image
    # The iris and pupil are the darkest pixels of the eye; a closed lid covers them with lighter skin.
    assert frames[-1][y0:y1, x0:x1].mean() > source[y0:y1, x0:x1].mean() + 10
    assert abs(float(frames[0][y0:y1, x0:x1].mean()) - float(source[y0:y1, x0:x1].mean())) < 3


def test_two_consecutive_jobs_join_like_one_job(engine: EmbeddedEngine) -> None:
    avatar = astronaut_photo()
    roi = mouth_roi(avatar)
    audio = syllables(50)
    whole = render(engine, avatar, audio, 0, 50)
    split = render(engine, avatar, audio[: 25 * SAMPLES_PER_FRAME], 0, 25)
    split += render(engine, avatar, audio[25 * SAMPLES_PER_FRAME :], 25, 25)
    steps_whole = [roi_difference(a, b, roi) for a, b in itertools.pairwise(whole)]
    # Far from the join the two renderings agree; near it they differ by less than a typical frame step.
    for index in (*range(0, 20), *range(30, 50)):
        assert roi_difference(whole[index], split[index], roi) < 0.5 * np.median(steps_whole) + 1.0, index
    assert max(roi_difference(whole[i], split[i], roi) for i in range(20, 30)) < max(steps_whole)
    # And no jump: the step across the join is an ordinary step.
    assert roi_difference(split[24], split[25], roi) <= max(steps_whole)


def test_mouth_track_of_two_jobs_matches_one_job_away_from_the_join() -> None:
    audio = syllables(50)
    whole = mouth_track(audio, 50).opening
    split = np.concatenate(
        [
            mouth_track(audio[: 25 * SAMPLES_PER_FRAME], 25).opening,
            mouth_track(audio[25 * SAMPLES_PER_FRAME :], 25).opening,
        ]
    )
    assert np.abs(whole - split).max() < 0.3
    assert np.abs(whole - split)[np.r_[0:20, 30:50]].max() < 0.1


def test_an_engine_over_its_plan_budget_still_renders_the_same_frames() -> None:
    avatar = astronaut_video(3)
    audio = syllables(12)
    starved = render(EmbeddedEngine(cache_bytes=1), avatar, audio, 0, 12)
    roomy = render(EmbeddedEngine(), avatar, audio, 0, 12)
    for a, b in zip(starved, roomy, strict=True):
        np.testing.assert_array_equal(a, b)
