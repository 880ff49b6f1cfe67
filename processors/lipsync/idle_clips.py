"""The lip-sync worker's idle clips: ``avatar.idle-clips`` requests rendered with the worker's own engine, at
background priority, into PostgreSQL (``infra/idle_clip_store.py``), where every gateway serves them from.

Live chunks go first, three ways:

* the requests are consumed by a second ``KafkaApp`` on a thread of its own, so a clip never queues in the
  live app's lanes (``processors/common/scheduling.py`` is untouched);
* that thread runs at a raised nice value (threads it starts inherit it);
* the clip renders ``PIECE_FRAMES`` frames at a time, and before each piece waits until no live request is in
  progress (``LiveActivity``, which wraps the live handler), for at most ``MAX_DEFER_S``, so a worker that is
  never idle still renders its clips, a piece at a time.

Each engine's workers form their own consumer group (``avatar-lipsync-idle-<engine>``): every request reaches
one worker of each engine, and each engine renders and stores its own clip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Self

from infra.avatar_store import AvatarNotFound, AvatarStore
from infra.crypto import FaceDataDecryptionError
from infra.idle_clip_store import IdleClipStore, StoredClip, avatar_version, worker_service
from infra.logging import log_scope
from infra.settings import Settings
from processors.common.batching import Shared
from processors.common.kafka_app import Handler, Inbound, InvalidMessage, KafkaApp, Outgoing, parse_message
from processors.common.priority import lower_thread_priority
from processors.lipsync.engines.base import LipSyncEngine
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.idle_clip import ENGINE_CACHE_BYTES, IDLE_CLIP_FORMAT, render_idle_clip
from schemas.idle_clip import IdleClipRequest

log = logging.getLogger(__name__)

# Longest a piece of a clip waits for the live work to pause; then it renders anyway (at low priority). A piece
# rendered while live requests run holds the GIL from the live thread's renders: 2 s made a burst of ten new
# sessions miss a chunk's deadline.
MAX_DEFER_S = 30.0


class LiveActivity:
    """Counts the live requests in progress, so background work can wait for a pause between them."""

    def __init__(self) -> None:
        self._open = 0
        self._lock = threading.Lock()
        self._quiet = threading.Event()
        self._quiet.set()

    def track(self, handler: Handler) -> Handler:
        """``handler``, counted from its first step until its last output (or its failure)."""

        def tracked(message: Inbound) -> Iterator[Outgoing | Shared]:
            self._change(+1)
            try:
                yield from handler(message)
            finally:
                self._change(-1)

        return tracked

    @property
    def busy(self) -> bool:
        return not self._quiet.is_set()

    def wait_until_quiet(self, timeout_s: float) -> bool:
        """Block until no live request is in progress, or ``timeout_s``; whether it is quiet now."""
        return self._quiet.wait(timeout_s)

    def _change(self, delta: int) -> None:
        with self._lock:
            self._open += delta
            if self._open > 0:
                self._quiet.clear()
            else:
                self._quiet.set()


def parse_request(value: bytes) -> IdleClipRequest:
    return parse_message(IdleClipRequest, value, "avatar.idle-clips v1")


def clip_engine(engine: LipSyncEngine) -> LipSyncEngine:
    """The engine a clip renders with: the worker's own kind. The embedded engine has no model to share, so
    a private one keeps its warp-plan cache (and thread safety) apart from the live sessions'; Wav2Lip's warm
    model is shared (its ONNX session is thread-safe)."""
    if isinstance(engine, EmbeddedEngine):
        return EmbeddedEngine(cache_bytes=ENGINE_CACHE_BYTES)
    return engine


class IdleClipRenderer:
    """The handler of ``avatar.idle-clips``: render the avatar's current version with this engine, unless stored."""

    def __init__(self, settings: Settings, engine: LipSyncEngine, avatars: AvatarStore, clips: IdleClipStore,
                 live: LiveActivity, *, keep_alive: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.engine = engine
        self.engine_name = engine.name
        self.avatars = avatars
        self.clips = clips
        self.live = live
        self.keep_alive = keep_alive
        self.rendered = 0

    def handle(self, message: Inbound) -> Iterator[Outgoing]:
        request = parse_request(message.value)
        with log_scope(avatar_id=request.avatar_id):
            self.render_if_missing(request.avatar_id)
        yield from ()

    def render_if_missing(self, avatar_id: str) -> bool:
        """Render and store the clip unless this engine's current one is there; whether it rendered."""
        try:
            version = avatar_version(self.avatars.record(avatar_id))
        except AvatarNotFound:
            raise InvalidMessage(f"idle clip requested for avatar '{avatar_id}', which does not exist") from None
        if self._is_current(avatar_id, version):
            return False
        started = time.perf_counter()
        try:
            face = self.avatars.load_face_data(avatar_id)
        except AvatarNotFound:  # deleted meanwhile, or face data of an older format
            raise InvalidMessage(f"avatar '{avatar_id}' has no face data this worker can render") from None
        except FaceDataDecryptionError as error:
            raise InvalidMessage(f"avatar '{avatar_id}' cannot be read: {error}") from None
        clip = render_idle_clip(face, crf=self.settings.video_crf, engine=clip_engine(self.engine),
                                before_piece=self._let_live_work_go_first)
        stored = self.clips.save(StoredClip(avatar_id, self.engine_name, version, IDLE_CLIP_FORMAT, clip.n_frames,
                                            clip.fps, clip.data))
        log.info("idle clip rendered" if stored else "idle clip outdated before it was stored",
                 extra={"engine": self.engine_name, "frames": clip.n_frames, "bytes": len(clip.data),
                        "render_ms": round(1000 * (time.perf_counter() - started), 1)})
        self.rendered += stored
        return stored

    def _is_current(self, avatar_id: str, version: str) -> bool:
        state = self.clips.state(avatar_id, self.engine_name)
        # A clip under a key no longer current is rendered again: a gateway may no longer hold that key.
        return (state is not None and state.avatar_version == version and state.clip_format >= IDLE_CLIP_FORMAT
                and state.key_id == self.clips.keyring.current_id)

    def _let_live_work_go_first(self) -> None:
        deadline = time.monotonic() + MAX_DEFER_S
        while True:
            self.keep_alive()  # heartbeats go on while the clip waits
            if self.live.wait_until_quiet(min(1.0, max(deadline - time.monotonic(), 0.0))):
                return
            if time.monotonic() >= deadline:
                return


class IdleClipWorker:
    """The renderer in its own consumer group, on a low-priority thread of the lip-sync process."""

    def __init__(self, settings: Settings, engine: LipSyncEngine, avatars: AvatarStore, clips: IdleClipStore,
                 live: LiveActivity) -> None:
        self.renderer = IdleClipRenderer(settings, engine, avatars, clips, live)
        self.app = KafkaApp(settings, name=worker_service(engine.name), input_topic=settings.kafka_idle_clip_topic,
                            handler=self.renderer.handle, engine=engine.name, background=True)
        self.renderer.keep_alive = self.app.keep_alive
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        forgotten = self.renderer.clips.forget_older_formats(self.renderer.engine_name, IDLE_CLIP_FORMAT)
        if forgotten:
            log.info("idle clips of an older renderer dropped", extra={"clips": forgotten})
        self._thread = threading.Thread(target=self._run, name="idle-clips", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        lower_thread_priority()
        self.app.run()

    def stop(self) -> None:
        self.app.stop()
        if self._thread is not None:
            self._thread.join(30)
