"""Idle clips in PostgreSQL: written by the lip-sync workers (one per avatar and engine), read by every gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import ConnectionPool

from infra.avatar_store import AvatarRecord
from infra.crypto import FaceKeyring

CLIP_COLUMN = "idle_clip"  # what the clip's ciphertext is bound to (infra/crypto.py associated data)
# The idle-clip side of a lip-sync worker heartbeats (and names its consumer group) as this plus its engine.
WORKER_SERVICE_PREFIX = "lipsync-idle-"


def worker_service(engine: str) -> str:
    """The service name of an engine's idle-clip renderers (``avatar-<it>`` is their consumer group)."""
    return f"{WORKER_SERVICE_PREFIX}{engine}"


def avatar_version(record: AvatarRecord) -> str:
    """Changes whenever the avatar's clip would: a new registration under the same id (a new ``created_at``)
    or a new face-data format. The renderer's own version is the row's ``clip_format``."""
    return version_of(record.face_data_version, record.created_at)


def version_of(face_data_version: int, created_at: datetime) -> str:
    return f"{face_data_version}.{round(created_at.timestamp() * 1_000_000)}"


@dataclass(frozen=True)
class StoredClip:
    """One engine's idle clip of one avatar version: a plain video-only MP4."""

    avatar_id: str
    engine: str
    avatar_version: str
    clip_format: int
    n_frames: int
    fps: int
    data: bytes

    @property
    def etag(self) -> str:
        """Names exactly this rendering: the engine, the renderer and the avatar version."""
        return f'"idle-{self.engine}.{self.clip_format}.{self.avatar_version}"'


@dataclass(frozen=True)
class ClipState:
    """What a worker needs to decide whether to render again (no clip bytes read)."""

    avatar_version: str
    clip_format: int
    key_id: str


class IdleClipStore:
    """The idle_clips table; the clip bytes encrypted under the face-data keys, as the face they show is."""

    def __init__(self, pool: ConnectionPool, keyring: FaceKeyring) -> None:
        self.pool = pool
        self.keyring = keyring

    def state(self, avatar_id: str, engine: str) -> ClipState | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT avatar_version, clip_format, key_id FROM idle_clips"
                               " WHERE avatar_id = %s AND engine = %s", (avatar_id, engine)).fetchone()
        return None if row is None else ClipState(str(row[0]), int(row[1]), str(row[2]))

    def load(self, avatar_id: str, engine: str) -> StoredClip | None:
        """The engine's clip of the avatar, whatever version it is of (the caller compares); None if none.

        Raises FaceDataDecryptionError when it was written under a key no longer configured."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT avatar_version, clip_format, n_frames, fps, key_id, data FROM idle_clips"
                               " WHERE avatar_id = %s AND engine = %s", (avatar_id, engine), binary=True).fetchone()
        if row is None:
            return None
        version, clip_format, n_frames, fps, key_id, sealed = row
        data = self.keyring.decrypt(sealed, key_id, column=CLIP_COLUMN, avatar_id=avatar_id)
        return StoredClip(avatar_id, engine, str(version), int(clip_format), int(n_frames), int(fps), data)

    def save(self, clip: StoredClip) -> bool:
        """Store the clip if its avatar still is at ``clip.avatar_version``; False when the avatar was deleted
        or registered again meanwhile (the clip would show a face that is no longer there).

        A clip of the same version from a newer renderer is never overwritten by an older one (a rolling upgrade
        runs both)."""
        sealed = self.keyring.encrypt(clip.data, column=CLIP_COLUMN, avatar_id=clip.avatar_id)
        with self.pool.connection() as conn, conn.transaction():
            # FOR SHARE: a replacement of the avatar waits for this write, so no stale clip survives it.
            row = conn.execute("SELECT face_data_version, created_at FROM avatars WHERE avatar_id = %s FOR SHARE",
                               (clip.avatar_id,)).fetchone()
            if row is None or version_of(int(row[0]), row[1]) != clip.avatar_version:
                return False
            conn.execute(
                "INSERT INTO idle_clips (avatar_id, engine, avatar_version, clip_format, n_frames, fps, key_id, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (avatar_id, engine) DO UPDATE SET avatar_version = EXCLUDED.avatar_version,"
                " clip_format = EXCLUDED.clip_format, n_frames = EXCLUDED.n_frames, fps = EXCLUDED.fps,"
                " key_id = EXCLUDED.key_id, data = EXCLUDED.data, rendered_at = now()"
                " WHERE idle_clips.avatar_version <> EXCLUDED.avatar_version"
                " OR idle_clips.clip_format <= EXCLUDED.clip_format",
                (clip.avatar_id, clip.engine, clip.avatar_version, clip.clip_format, clip.n_frames, clip.fps,
                 self.keyring.current_id, sealed))
        return True

    def forget_older_formats(self, engine: str, clip_format: int) -> int:
        """Delete the engine's clips of an older renderer, so gateways ask for them again; returns how many."""
        with self.pool.connection() as conn:
            return conn.execute("DELETE FROM idle_clips WHERE engine = %s AND clip_format < %s",
                                (engine, clip_format)).rowcount

