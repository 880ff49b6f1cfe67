"""The gateway's idle clips: each avatar version's clip rendered once, in a thread, and kept in bounded memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from infra.avatar_store import AvatarRecord, AvatarStore
from infra.bounded_cache import BoundedCache
from processors.lipsync.idle_clip import IDLE_CLIP_FORMAT, IdleClip, render_idle_clip

IDLE_CLIP_PATH = "/avatar/{avatar_id}/idle.mp4"
# A photo's 8 s clip is ~0.7 MB, a short video's less: this keeps the clips of about a hundred avatars.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 256
# Rendering takes a core for about half a second; one at a time leaves the other core to the live traffic.
CONCURRENT_RENDERS = 1

Renderer = Callable[[str], IdleClip]
ClipKey = tuple[str, str]


def idle_clip_url(avatar_id: str) -> str:
    """Where a client fetches the avatar's idle clip (what ``session_ready`` carries)."""
    return IDLE_CLIP_PATH.format(avatar_id=avatar_id)


def avatar_version(record: AvatarRecord) -> str:
    """Changes whenever the clip would: a new registration under the same id (a new ``created_at``), a new
    face-data format, a new clip renderer."""
    registered_us = round(record.created_at.timestamp() * 1_000_000)
    return f"{IDLE_CLIP_FORMAT}.{record.face_data_version}.{registered_us}"


# Added to the rendering thread's nice value: the clip is wanted soon, the live chunks of every session now.
BACKGROUND_NICENESS = 10


def store_renderer(store: AvatarStore, crf: int) -> Renderer:
    """Loads the avatar's cached face data (no face detection) and renders its clip; blocking."""

    def render(avatar_id: str) -> IdleClip:
        return render_idle_clip(store.load_face_data(avatar_id), crf=crf)

    return render


def _run_in_background() -> None:
    """Make the calling thread (and the encoder threads it will start) yield the CPU to everything else.

    On Linux a thread's nice value is its own (setpriority on its thread id), and threads it creates inherit it;
    raising it needs no privilege. The thread belongs to the clip renderer alone, so it never needs lowering back.
    """
    with contextlib.suppress(OSError):  # not permitted here: render at normal priority rather than not at all
        thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread_id,
                       min(19, os.getpriority(os.PRIO_PROCESS, thread_id) + BACKGROUND_NICENESS))


class IdleClips:
    """avatar_id → its current version's clip, least recently used out past ``max_bytes`` or ``max_entries``.

    Concurrent requests for a clip not yet rendered share one rendering; a failed rendering is not cached,
    so the next request tries again. A new version of an avatar replaces the old clip.
    """

    def __init__(self, render: Renderer, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._render = render
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._clips: BoundedCache[str, tuple[str, IdleClip]] = BoundedCache(
            max_bytes, lambda entry: len(entry[1].data), max_entries=max_entries)
        self._rendering: dict[ClipKey, asyncio.Task[IdleClip]] = {}
        # Its own low-priority threads, so rendering never slows the to_thread work of live sessions.
        self._renderers = ThreadPoolExecutor(CONCURRENT_RENDERS, thread_name_prefix="idle-clip",
                                             initializer=_run_in_background)

    async def get(self, avatar_id: str, version: str) -> IdleClip:
        """The clip, rendered now (off the event loop) if it is not cached; raises what rendering raised."""
        cached = self._clips.get(avatar_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        key = (avatar_id, version)
        task = self._rendering.get(key)
        if task is None:
            task = asyncio.create_task(self._render_and_keep(key))
            self._rendering[key] = task
        # Shielded: a client that goes away does not cancel the rendering the others (or its retry) await.
        return await asyncio.shield(task)

    def close(self) -> None:
        """Stop the rendering thread once the clip being rendered (if any) is done."""
        self._renderers.shutdown(wait=False, cancel_futures=True)

    @property
    def cached_bytes(self) -> int:
        return self._clips.nbytes

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, key: object) -> bool:
        """Whether the (avatar_id, version) clip is cached."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        cached = self._clips.peek(key[0])
        return cached is not None and cached[0] == key[1]

    async def _render_and_keep(self, key: ClipKey) -> IdleClip:
        try:
            clip = await asyncio.get_running_loop().run_in_executor(self._renderers, self._render, key[0])
        finally:
            del self._rendering[key]
        self._clips.put(key[0], (key[1], clip))
        return clip
