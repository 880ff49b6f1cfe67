"""The gateway's idle-clip cache: one rendering per avatar version, shared by concurrent requests, bounded."""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import UTC, datetime

import pytest

from gateway.idle_clips import BACKGROUND_NICENESS, IdleClips, avatar_version, idle_clip_url
from infra.avatar_store import AvatarNotFound, AvatarRecord
from processors.lipsync.idle_clip import IdleClip, render_idle_clip
from tests.unit.face_fixtures import astronaut_video


class CountingRenderer:
    """Renders real clips of fixture avatars by id, counting how often (and failing like the store for others)."""

    def __init__(self, *avatar_ids: str) -> None:
        self.avatars = {avatar_id: astronaut_video(2, avatar_id) for avatar_id in avatar_ids}
        self.calls: list[str] = []
        self.niceness: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, avatar_id: str) -> IdleClip:
        with self.lock:
            self.calls.append(avatar_id)
            self.niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        if avatar_id not in self.avatars:
            raise AvatarNotFound(avatar_id)
        return render_idle_clip(self.avatars[avatar_id])


async def test_concurrent_requests_for_a_new_clip_share_one_rendering() -> None:
    renderer = CountingRenderer("a")
    clips = IdleClips(renderer)
    results = await asyncio.gather(*(clips.get("a", "1") for _ in range(5)))
    assert renderer.calls == ["a"] and all(clip is results[0] for clip in results)
    assert await clips.get("a", "1") is results[0] and renderer.calls == ["a"], "then served from memory"


async def test_clips_render_in_a_background_priority_thread_so_live_sessions_go_first() -> None:
    renderer = CountingRenderer("a")
    clips = IdleClips(renderer)
    try:
        await clips.get("a", "1")
    finally:
        clips.close()
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert renderer.niceness == [min(19, own + BACKGROUND_NICENESS)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own, "the caller's priority is untouched"


async def test_a_new_version_is_rendered_again_and_replaces_the_old_one() -> None:
    renderer = CountingRenderer("a")
    clips = IdleClips(renderer)
    await clips.get("a", "1")
    await clips.get("a", "2")
    assert renderer.calls == ["a", "a"]
    assert ("a", "2") in clips and ("a", "1") not in clips and len(clips) == 1


async def test_past_its_byte_budget_the_least_recently_used_clip_goes_first() -> None:
    renderer = CountingRenderer("a", "b", "c")
    one = len(render_idle_clip(renderer.avatars["a"]).data)
    clips = IdleClips(renderer, max_bytes=int(2.5 * one))
    await clips.get("a", "1")
    await clips.get("b", "1")
    await clips.get("a", "1")  # used again: now b is the least recent
    await clips.get("c", "1")
    assert ("a", "1") in clips and ("c", "1") in clips and ("b", "1") not in clips
    assert clips.cached_bytes <= clips.max_bytes


async def test_a_failed_rendering_is_not_cached_and_is_tried_again() -> None:
    renderer = CountingRenderer()
    clips = IdleClips(renderer)
    for _ in range(2):
        with pytest.raises(AvatarNotFound):
            await clips.get("gone", "1")
    assert renderer.calls == ["gone", "gone"] and len(clips) == 0


def record(created_at: datetime, face_data_version: int = 1) -> AvatarRecord:
    return AvatarRecord("a", "alice", "A", "", "photo", 512, 512, None, 1, 512, 512, {}, face_data_version,
                        created_at, 0)


def test_the_version_changes_with_a_new_registration_or_face_data_format_only() -> None:
    first = datetime(2025, 1, 1, tzinfo=UTC)
    again = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert avatar_version(record(first)) == avatar_version(record(first))
    assert avatar_version(record(first)) != avatar_version(record(again))
    assert avatar_version(record(first)) != avatar_version(record(first, face_data_version=2))


def test_the_clip_url_is_the_avatars_idle_mp4() -> None:
    assert idle_clip_url("sample") == "/avatar/sample/idle.mp4"
