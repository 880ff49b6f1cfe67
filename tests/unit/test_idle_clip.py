"""The idle clip: mouth closed, the photo's idle motion or the video's own frames, a loop without a seam, an MP4,
rendered by either engine."""

from __future__ import annotations

import functools
import io
import itertools

import av
import numpy as np
import numpy.typing as npt
import onnx
import pytest

from processors.lipsync.engines.base import FPS, SAMPLES_PER_FRAME, RenderJob
from processors.lipsync.engines.embedded import BLINK_PERIOD_FRAMES, EmbeddedEngine, idle_pose
from processors.lipsync.engines.wav2lip import Wav2LipEngine
from processors.lipsync.idle_clip import (
    MAX_VIDEO_LOOP_FRAMES,
    PIECE_FRAMES,
    STILL_LOOP_FRAMES,
    IdleClip,
    IdleLoop,
    has_idle_motion,
    idle_loop,
    render_idle_clip,
    render_idle_frames,
)
from schemas.avatar import AvatarFaceData, RgbFrame
from scripts.wav2lip.graph import build_model, random_state_dict, wav2lip_architecture
from tests.support.envelope_measure import inner_lip_openings
from tests.unit.face_fixtures import astronaut_photo, astronaut_video, frame_tag
from tests.unit.test_wav2lip_engine import SLIM

VIDEO_FRAMES = 6


def region(avatar: AvatarFaceData, first: int, last: int, margin: int) -> tuple[slice, slice]:
    points = avatar.frames[0].landmarks[first : last + 1]
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    return slice(y0, y1), slice(x0, x1)


def mouth(avatar: AvatarFaceData) -> tuple[slice, slice]:
    return region(avatar, 48, 67, 4)


def eyes(avatar: AvatarFaceData) -> tuple[slice, slice]:
    return region(avatar, 36, 47, 0)


def difference(a: RgbFrame, b: RgbFrame, where: tuple[slice, slice] | None = None) -> float:
    """Mean absolute difference, in grey levels, of two frames (or of one region of them)."""
    rows, columns = where or (slice(None), slice(None))
    return float(np.abs(a[rows, columns].astype(np.int16) - b[rows, columns].astype(np.int16)).mean())


@functools.cache
def photo_frames() -> list[RgbFrame]:
    return render_idle_frames(astronaut_photo())


@functools.cache
def video_frames() -> list[RgbFrame]:
    return render_idle_frames(astronaut_video(VIDEO_FRAMES))


@functools.cache
def photo_clip() -> IdleClip:
    return render_idle_clip(astronaut_photo())


def decoded(data: bytes) -> tuple[list[npt.NDArray[np.uint8]], dict[str, object]]:
    with av.open(io.BytesIO(data), "r") as container:
        streams = [stream.type for stream in container.streams]
        duration_s = (container.duration or 0) / 1_000_000
        frames = [np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8) for frame in container.decode(video=0)]
        return frames, {"streams": streams, "duration_s": duration_s, "format": container.format.name}


def test_a_photo_loops_over_whole_blink_periods_starting_at_a_blink_free_slot_boundary() -> None:
    loop = idle_loop(astronaut_photo())
    assert loop.n_frames % BLINK_PERIOD_FRAMES == 0 and 2 * FPS <= loop.n_frames <= 10 * FPS, "a few seconds"
    assert loop.first_frame % BLINK_PERIOD_FRAMES == 0 and loop.source_frames == 1
    blinks = [idle_pose(n)[1] for n in range(loop.first_frame, loop.first_frame + loop.n_frames)]
    assert blinks[0] == blinks[-1] == 0.0, "no blink is cut by the loop point"
    assert sum(1 for before, now in itertools.pairwise(blinks) if before == 0 < now) == \
        loop.n_frames // BLINK_PERIOD_FRAMES, "one blink per period"
    assert len(photo_frames()) == loop.n_frames


def test_a_photo_idles_with_motion_and_a_blink_but_its_mouth_stays_closed() -> None:
    avatar = astronaut_photo()
    source = avatar.frames[0].image
    frames = photo_frames()
    assert max(difference(frame, frames[0]) for frame in frames) > 0.2, "sway moves the head"
    assert max(difference(frame, source, eyes(avatar)) for frame in frames) > 10, "the eyes close in a blink"
    openings = inner_lip_openings(frames[::10])
    assert openings.max() <= inner_lip_openings([source])[0] + 0.02, "the mouth never opens"


def test_a_photos_loop_point_is_no_bigger_a_step_than_any_other_frame_to_frame() -> None:
    avatar = astronaut_photo()
    loop = idle_loop(avatar)
    frames = photo_frames()
    steps = [difference(a, b) for a, b in itertools.pairwise(frames)]
    # The frame the engine would show after the last one: the loop shows the first frame there instead.
    after_last = EmbeddedEngine().render(RenderJob(avatar, np.zeros(SAMPLES_PER_FRAME, np.float32),
                                                   loop.first_frame + loop.n_frames, 1, visemes=()))[0]
    assert difference(frames[-1], frames[0]) <= np.percentile(steps, 90) + 0.05
    assert difference(after_last, frames[0]) < 0.1, "the sway is back where it started"


def test_a_video_plays_its_frames_forward_then_backward_once_with_the_mouth_at_rest() -> None:
    avatar = astronaut_video(VIDEO_FRAMES)
    frames = video_frames()
    assert idle_loop(avatar).n_frames == len(frames) == 2 * (VIDEO_FRAMES - 1)
    assert [frame_tag(frame) for frame in frames] == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    roi = mouth(avatar)
    # the rest pose of the speaking face (lips closed over the teeth), with no idle motion on a video
    resting = EmbeddedEngine().render(RenderJob(avatar, np.zeros(SAMPLES_PER_FRAME, np.float32), 0, 1, visemes=()))[0]
    assert difference(resting, avatar.frames[0].image, roi) > 5.0, "the sample's smile is closed"
    for frame in frames:
        assert difference(frame, resting, roi) == 0.0
    assert difference(frames[-1], frames[0], (slice(8, None), slice(8, None))) == 0.0, "the loop wraps 1 → 0"


def test_a_long_video_loops_over_its_first_frames_within_the_length_cap() -> None:
    one = astronaut_video(1).frames[0]
    long_video = AvatarFaceData("long-video", (one,) * 1000, source_fps=25.0)
    loop = idle_loop(long_video)
    assert loop.n_frames <= MAX_VIDEO_LOOP_FRAMES
    assert loop.n_frames == 2 * (loop.source_frames - 1) and loop.source_frames > MAX_VIDEO_LOOP_FRAMES // 4


def test_an_avatar_without_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="no frames"):
        idle_loop(AvatarFaceData("empty", ()))


def test_the_clip_is_a_plain_video_only_mp4_that_decodes_to_the_rendered_frames() -> None:
    clip = photo_clip()
    frames, info = decoded(clip.data)
    assert info["streams"] == ["video"] and "mp4" in str(info["format"])
    assert b"moof" not in clip.data, "one plain MP4, not fragments"
    assert len(frames) == clip.n_frames == len(photo_frames())
    assert info["duration_s"] == pytest.approx(clip.n_frames / FPS, abs=0.001), "exactly the frames' length"
    assert frames[0].shape == photo_frames()[0].shape
    assert difference(frames[0], photo_frames()[0]) < 3 and difference(frames[-1], photo_frames()[-1]) < 3
    assert difference(frames[-1], frames[0]) < 3, "the encoded loop joins too"


def test_a_video_avatars_clip_decodes_to_one_ping_pong_cycle() -> None:
    clip = render_idle_clip(astronaut_video(VIDEO_FRAMES))
    frames, info = decoded(clip.data)
    assert info["streams"] == ["video"] and len(frames) == 2 * (VIDEO_FRAMES - 1)
    assert info["duration_s"] == pytest.approx(clip.duration_ms / 1000, abs=0.001)


def test_rendered_a_piece_at_a_time_the_loop_is_the_engines_one_render_of_it_and_waits_before_each_piece() -> None:
    avatar = astronaut_photo()
    loop = idle_loop(avatar)
    waits: list[int] = []
    pieces = render_idle_frames(avatar, EmbeddedEngine(), before_piece=lambda: waits.append(1))
    whole = EmbeddedEngine().render(RenderJob(avatar, np.zeros(loop.n_frames * SAMPLES_PER_FRAME, np.float32),
                                              loop.first_frame, loop.n_frames, visemes=()))
    assert len(waits) == -(-loop.n_frames // PIECE_FRAMES), "the caller is asked before every piece"
    assert all(np.array_equal(a, b) for a, b in zip(pieces, whole, strict=True))


@pytest.fixture(scope="module")
def wav2lip(tmp_path_factory: pytest.TempPathFactory) -> Wav2LipEngine:
    path = tmp_path_factory.mktemp("wav2lip") / "slim.onnx"
    architecture = wav2lip_architecture(SLIM)
    onnx.save(build_model(random_state_dict(architecture, seed=3), architecture), str(path))
    return Wav2LipEngine(path, batch_size=8, threads=1)


def test_wav2lip_fed_silence_gives_a_photo_a_short_loop_of_one_resting_face_unlike_the_embedded_engines(
        wav2lip: Wav2LipEngine) -> None:
    avatar = astronaut_photo()
    assert not has_idle_motion(wav2lip) and has_idle_motion(EmbeddedEngine())
    assert idle_loop(avatar, idle_motion=False) == IdleLoop(first_frame=0, n_frames=STILL_LOOP_FRAMES, source_frames=1)
    frames = render_idle_frames(avatar, wav2lip)
    assert len(frames) == STILL_LOOP_FRAMES
    assert all(np.array_equal(frame, frames[0]) for frame in frames), "no idle motion: every frame the same"
    assert difference(frames[0], avatar.frames[0].image, mouth(avatar)) > 0, "the mouth is Wav2Lip's"
    assert difference(frames[0], photo_frames()[0], mouth(avatar)) > 0, "not the embedded engine's face"
    clip = render_idle_clip(avatar, engine=wav2lip)
    assert decoded(clip.data)[1]["streams"] == ["video"] and clip.n_frames == STILL_LOOP_FRAMES


def test_wav2lip_plays_a_video_avatar_forward_then_backward_once(wav2lip: Wav2LipEngine) -> None:
    frames = render_idle_frames(astronaut_video(VIDEO_FRAMES), wav2lip)
    assert len(frames) == 2 * (VIDEO_FRAMES - 1)
