"""Keeps registered avatars' face data in memory for the lip-sync processor (LRU, with hit statistics)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from infra.bounded_cache import BoundedCache
from infra.face_frames import resident_bytes
from infra.settings import Settings
from processors.common.broadcast import BroadcastListener
from schemas.avatar import AvatarFaceData
from schemas.avatar_events import AvatarInvalidated
from schemas.status import AvatarCacheStats

log = logging.getLogger(__name__)

Loader = Callable[[str], AvatarFaceData]
Sizer = Callable[[AvatarFaceData], int]


class AvatarCache:
    """avatar_id → face data; a miss loads once from the store (PostgreSQL), never detects a face.

    Bounded by entry count and by bytes, least recently used first out.
    """

    def __init__(self, loader: Loader, max_entries: int = 64, max_bytes: int = 2 * 1024**3,
                 sizer: Sizer = resident_bytes) -> None:
        self.loader = loader
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.sizer = sizer
        # Sizes are taken at insertion; frames decoded later add a bounded amount (see infra/face_frames.py).
        self._entries: BoundedCache[str, AvatarFaceData] = BoundedCache(max_bytes, max_entries=max_entries)
        # Bumped by forget(): a load that started before the avatar was deleted must not re-insert it.
        self._epochs: dict[str, int] = {}
        # Makes "check the epoch, then insert" and "bump the epoch, then drop" each one step.
        self._lock = threading.Lock()
        self.invalidations = 0

    def get(self, avatar_id: str) -> AvatarFaceData:
        with self._lock:
            found = self._entries.get(avatar_id)
            if found is not None:
                return found
            epoch = self._epochs.get(avatar_id, 0)
        face_data = self.loader(avatar_id)  # outside the lock: a slow load must not block hits
        size = self.sizer(face_data)
        with self._lock:
            if self._epochs.get(avatar_id, 0) == epoch:
                self._entries.put(avatar_id, face_data, size=size)
        return face_data

    def forget(self, avatar_id: str) -> bool:
        """Drop the avatar; returns whether it was cached."""
        with self._lock:
            self._epochs[avatar_id] = self._epochs.get(avatar_id, 0) + 1
            if self._entries.pop(avatar_id) is None:
                return False
            self.invalidations += 1
            return True

    def stats(self) -> AvatarCacheStats:
        with self._lock:
            cached = self._entries.values()
            hits, misses, invalidations = self.hits, self.misses, self.invalidations
        # Measured again rather than the sizes at insertion, so decoded frames count too.
        return AvatarCacheStats(entries=len(cached), bytes=sum(self.sizer(f) for f in cached), hits=hits,
                                misses=misses, invalidations=invalidations, max_entries=self.max_entries,
                                max_bytes=self.max_bytes)

    def __contains__(self, avatar_id: str) -> bool:
        return avatar_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hits(self) -> int:
        return self._entries.hits

    @property
    def misses(self) -> int:
        """Lookups that went to the loader (PostgreSQL)."""
        return self._entries.misses

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class InvalidationListener(BroadcastListener):
    """Hears ``avatar.invalidations`` on every lip-sync instance (assigned, no consumer group) and forgets
    each named avatar, so a deleted avatar leaves every worker's memory, not just one's."""

    def __init__(self, settings: Settings, cache: AvatarCache) -> None:
        self.cache = cache
        super().__init__(settings, settings.kafka_avatar_invalidation_topic, self._forget,
                         name="avatar-invalidations", background=True)

    def _forget(self, value: bytes) -> None:
        self.cache.forget(AvatarInvalidated.model_validate_json(value).avatar_id)
