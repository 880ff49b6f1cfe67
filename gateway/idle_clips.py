"""The gateway's idle clips: read from PostgreSQL (the lip-sync workers render them), kept in bounded memory,
and asked for on ``avatar.idle-clips`` when the configured engine has none of the avatar's current version."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Producer

from infra.bounded_cache import BoundedCache
from infra.crypto import FaceDataDecryptionError
from infra.idle_clip_store import IdleClipStore, StoredClip
from schemas.idle_clip import IdleClipRequest

log = logging.getLogger(__name__)

IDLE_CLIP_PATH = "/avatar/{avatar_id}/idle.mp4"
# A photo's 8 s clip is ~0.7 MB, a short video's less: this keeps the clips of about a hundred avatars.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 256
# A missing clip is asked for again after this long (the request, or the worker that took it, may be lost);
# meanwhile polls only read PostgreSQL.
ASK_AGAIN_AFTER_S = 15.0


def serving_engine(configured: str, rendering: Iterable[str]) -> str:
    """Whose clips to serve: the configured ``LIPSYNC_ENGINE``'s, unless no worker of it renders clips while
    another engine's do (a deployment that runs Wav2Lip workers only, with the gateway left at the default):
    then that engine's, so the resting face is the one that speaks."""
    live = set(rendering)
    return configured if configured in live or not live else min(live)


def idle_clip_url(avatar_id: str) -> str:
    """Where a client fetches the avatar's idle clip (what ``session_ready`` carries)."""
    return IDLE_CLIP_PATH.format(avatar_id=avatar_id)


class IdleClips:
    """(avatar_id, engine) → that engine's clip of the avatar's current version, least recently used out past
    the bounds.

    ``find`` is blocking (PostgreSQL and a Kafka produce): call it off the event loop.
    """

    def __init__(self, store: IdleClipStore, producer: Producer, *, topic: str,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES,
                 ask_again_after_s: float = ASK_AGAIN_AFTER_S) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.ask_again_after_s = ask_again_after_s
        self._clips: BoundedCache[tuple[str, str], StoredClip] = BoundedCache(
            max_bytes, lambda clip: len(clip.data), max_entries=max_entries)
        self._asked: dict[tuple[str, str], float] = {}  # (avatar, version) → when this gateway last asked
        self._lock = threading.Lock()
        self.requested = 0

    def cached(self, avatar_id: str, version: str, engine: str) -> StoredClip | None:
        """The engine's clip from memory, if it is of ``version``."""
        clip = self._clips.get((avatar_id, engine))
        return clip if clip is not None and clip.avatar_version == version else None

    def find(self, avatar_id: str, version: str, engine: str) -> StoredClip | None:
        """The engine's clip of ``version`` from memory or PostgreSQL; None (and the workers asked to render it)
        if there is none yet."""
        clip = self.cached(avatar_id, version, engine)
        if clip is not None:
            return clip
        try:
            clip = self.store.load(avatar_id, engine)
        except FaceDataDecryptionError as error:  # written under a key this gateway lacks: have it rendered again
            log.warning("idle clip cannot be decrypted", extra={"avatar_id": avatar_id, "error": str(error)})
            clip = None
        if clip is not None and clip.avatar_version == version:
            self._clips.put((avatar_id, engine), clip)
            with self._lock:
                self._asked.pop((avatar_id, version), None)
            return clip
        self._ask(avatar_id, version)
        return None

    def _ask(self, avatar_id: str, version: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._asked.get((avatar_id, version))
            if last is not None and now - last < self.ask_again_after_s:
                return
            self._asked[(avatar_id, version)] = now
            if len(self._asked) > 4 * DEFAULT_MAX_ENTRIES:  # forget old asks; the map stays small
                for key in [key for key, at in self._asked.items() if now - at >= self.ask_again_after_s]:
                    del self._asked[key]
        request = IdleClipRequest(avatar_id=avatar_id, reason="missing", ts_ms=int(time.time() * 1000))
        try:
            self.producer.produce(self.topic, request.to_kafka(), key=avatar_id.encode())
            self.producer.poll(0)
            self.requested += 1
        except Exception as error:  # BufferError, KafkaException: the next poll past the wait asks again
            log.warning("idle clip request not sent", extra={"avatar_id": avatar_id, "error": str(error)})
            with self._lock:
                self._asked.pop((avatar_id, version), None)

    def close(self) -> None:
        self.producer.flush(5)

    @property
    def cached_bytes(self) -> int:
        return self._clips.nbytes

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, key: object) -> bool:
        """Whether the (avatar_id, version, engine) clip is cached."""
        if not (isinstance(key, tuple) and len(key) == 3):
            return False
        clip = self._clips.peek((key[0], key[2]))
        return clip is not None and clip.avatar_version == key[1]
