"""Renders an avatar's idle clip: a few seconds of it at rest (mouth closed) that loop without a visible seam.

A player shows this clip between utterances instead of a frozen frame. It is the configured engine's output
for silence, so the face at rest looks exactly like the first and last frames of speech:

* a photo, with the embedded engine, gets its idle motion (sway, breathing, blinks) over a whole number of
  blink periods, starting at a blink-free slot boundary chosen so the sway there is back where it started
  (the sway's periods are incommensurate, so no window closes exactly; the best of many is within a tiny
  fraction of a pixel); with an engine without idle motion (Wav2Lip fed silence) every frame is the same
  closed mouth, so a short loop does;
* a video or GIF plays one ping-pong cycle (forward, then backward) of its frames, which closes by
  construction; a long one uses only its first frames so the cycle stays short.

Pure: face data in, MP4 bytes out, no I/O (the MP4 is muxed in memory).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from processors.lipsync.engines.base import AUDIO_RATE, FPS, SAMPLES_PER_FRAME, LipSyncEngine, RenderJob
from processors.lipsync.engines.embedded import BLINK_PERIOD_FRAMES, EmbeddedEngine, idle_pose
from processors.lipsync.media import FragmentedMp4Writer
from schemas.avatar import AvatarFaceData, RgbFrame

IDLE_CLIP_FORMAT = 2  # bump when the clip of the same face data changes, so cached clips are re-rendered
PHOTO_BLINK_PERIODS = 2  # 8 s: two blinks at their pseudo-random places read as less mechanical than one
STILL_LOOP_FRAMES = 2 * FPS  # a photo's loop for an engine without idle motion: identical frames
MAX_VIDEO_LOOP_FRAMES = 10 * FPS  # one forward-and-back cycle of a video avatar, at most
START_SLOTS_SEARCHED = 400  # candidate blink slots to start a photo's loop at (pure arithmetic, ~1 ms)
# The engine's warp plans are needed only while one clip renders; a video's are ~0.3 MB a frame.
ENGINE_CACHE_BYTES = 96 * 1024 * 1024
# Frames rendered in one engine call: between pieces the caller may let live work go first.
PIECE_FRAMES = 25
BeforePiece = Callable[[], None]


@dataclass(frozen=True)
class IdleLoop:
    """Which request frames of the engine make the loop: ``n_frames`` from ``first_frame``, over the first
    ``source_frames`` frames of the avatar."""

    first_frame: int
    n_frames: int
    source_frames: int


@dataclass(frozen=True)
class IdleClip:
    """An encoded idle clip: one plain MP4 with a single H.264 track, and what it holds."""

    data: bytes
    n_frames: int
    fps: int

    @property
    def duration_ms(self) -> int:
        return self.n_frames * 1000 // self.fps


def idle_loop(avatar: AvatarFaceData, *, idle_motion: bool = True) -> IdleLoop:
    """The seamless loop for ``avatar``: the frame after its last is (as nearly as possible) its first.

    ``idle_motion``: the engine moves a still face by itself (the embedded engine's sway and blinks)."""
    if not avatar.frames:
        raise ValueError(f"avatar {avatar.avatar_id!r} has no frames")
    if avatar.is_still and not idle_motion:
        return IdleLoop(first_frame=0, n_frames=STILL_LOOP_FRAMES, source_frames=1)
    if avatar.is_still:
        n_frames = PHOTO_BLINK_PERIODS * BLINK_PERIOD_FRAMES
        return IdleLoop(first_frame=_best_photo_start(n_frames), n_frames=n_frames, source_frames=1)
    used = min(len(avatar.frames), MAX_VIDEO_LOOP_FRAMES // 2 + 1)
    return IdleLoop(first_frame=0, n_frames=2 * (used - 1), source_frames=used)


def _best_photo_start(n_frames: int) -> int:
    # Slot boundaries are blink-free (a slot's blink starts BLINK_EARLIEST frames in at the soonest), so a
    # loop from one boundary to another never cuts a blink; among them, take the one where the sway at the
    # wrap (last frame → first, and the frame before each) lines up best.
    def wrap_mismatch(start: int) -> float:
        return sum(_sway_distance(start + n_frames + step, start + step) for step in (-1, 0))

    starts = (slot * BLINK_PERIOD_FRAMES for slot in range(1, START_SLOTS_SEARCHED + 1))
    return min(starts, key=wrap_mismatch)


def _sway_distance(frame_a: int, frame_b: int) -> float:
    (ax, ay), _ = idle_pose(frame_a)
    (bx, by), _ = idle_pose(frame_b)
    return math.hypot(ax - bx, ay - by)


def has_idle_motion(engine: LipSyncEngine) -> bool:
    """Whether the engine moves a still face between words (the embedded engine's sway, breathing, blinks)."""
    return isinstance(engine, EmbeddedEngine)


def render_idle_frames(avatar: AvatarFaceData, engine: LipSyncEngine | None = None, *,
                       before_piece: BeforePiece | None = None) -> list[RgbFrame]:
    """The loop's frames: the engine's rendering of silence (mouth closed) over ``idle_loop(avatar)``.

    Rendered ``PIECE_FRAMES`` at a time, calling ``before_piece`` before each (a worker waits there while
    live sessions have work). Without an engine, a private embedded one renders it."""
    renderer = engine or EmbeddedEngine(cache_bytes=ENGINE_CACHE_BYTES)
    loop = idle_loop(avatar, idle_motion=has_idle_motion(renderer))
    used = avatar if loop.source_frames == len(avatar.frames) else AvatarFaceData(
        avatar.avatar_id, avatar.frames[: loop.source_frames], source_fps=avatar.source_fps, version=avatar.version)
    frames: list[RgbFrame] = []
    for offset in range(0, loop.n_frames, PIECE_FRAMES):
        if before_piece is not None:
            before_piece()
        n_frames = min(PIECE_FRAMES, loop.n_frames - offset)
        # Silence, and no visemes but the pause: the articulated rest pose, so the loop matches the speaking
        # face between words (Wav2Lip, fed silence, closes the mouth the same way it does in a pause).
        silence = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
        frames += renderer.render(RenderJob(avatar=used, audio=silence, first_frame=loop.first_frame + offset,
                                            n_frames=n_frames, visemes=()))
    return frames


def encode_idle_clip(frames: list[RgbFrame], *, crf: int = 23) -> IdleClip:
    """``frames`` encoded by the stream's own writer (same encoder settings and colours as speech), then
    remuxed without re-encoding into a plain MP4 of the video track alone.

    Why not the writer's fragmented MP4 as it is: Chromium plays and loops it, but takes the silent AAC
    track's length without its priming edit, so each loop held the last frame 64-112 ms longer (measured).
    The video-only MP4 lasts exactly ``len(frames)`` frames.
    """
    if not frames:
        raise ValueError("an idle clip needs at least one frame")
    height, width = frames[0].shape[:2]
    writer = FragmentedMp4Writer(width, height, fps=FPS, audio_rate=AUDIO_RATE, crf=crf)
    silence = np.zeros(len(frames) * SAMPLES_PER_FRAME, dtype=np.int16)
    fragmented = writer.write(frames, silence) + writer.close()
    return IdleClip(data=_video_track_as_mp4(fragmented), n_frames=len(frames), fps=FPS)


def _video_track_as_mp4(fragmented: bytes) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(fragmented), "r") as source, av.open(out, "w", format="mp4") as target:
        video_in = source.streams.video[0]
        video_out = target.add_stream_from_template(video_in)
        for packet in source.demux(video_in):
            if packet.dts is None:  # the demuxer's end-of-stream marker, not a frame
                continue
            packet.stream = video_out
            target.mux(packet)
    return out.getvalue()


def render_idle_clip(avatar: AvatarFaceData, *, crf: int = 23, engine: LipSyncEngine | None = None,
                     before_piece: BeforePiece | None = None) -> IdleClip:
    """The avatar's idle clip, encoded: what ``GET /avatar/{id}/idle.mp4`` serves."""
    return encode_idle_clip(render_idle_frames(avatar, engine, before_piece=before_piece), crf=crf)
