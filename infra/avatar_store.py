"""Reads and writes registered avatars and their cached face data in PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from infra.audit import AuditEntry, write_entry
from infra.crypto import FaceKeyring
from infra.face_frames import FramePack, PackedFaceFrame, decode_frame
from schemas.avatar import FACE_DATA_VERSION, LANDMARK_COUNT, AvatarFaceData, FaceFrame, VoiceChoice

Write = Callable[[psycopg.Connection[Any]], None]  # more writes on the connection, inside the transaction


class AvatarNotFound(LookupError):
    def __init__(self, avatar_id: str) -> None:
        super().__init__(f"no avatar with id '{avatar_id}'")
        self.avatar_id = avatar_id


class AvatarNameTaken(ValueError):
    def __init__(self, user_id: str, name: str) -> None:
        super().__init__(f"user '{user_id}' already has an avatar named '{name}'")
        self.user_id = user_id
        self.name = name


@dataclass(frozen=True)
class AvatarRecord:
    """An avatar's catalogue entry (everything but the frames)."""

    avatar_id: str
    user_id: str
    name: str
    description: str
    media_kind: str
    source_width: int
    source_height: int
    source_fps: float | None
    frame_count: int
    width: int
    height: int
    quality_report: dict[str, Any]
    face_data_version: int
    created_at: datetime
    face_data_bytes: int  # the stored frames, compressed
    tts: str | None = None  # the default voice: backend and voice its requests use unless they name their own
    voice: str | None = None

    @property
    def default_voice(self) -> VoiceChoice:
        return VoiceChoice.model_validate({"tts": self.tts, "voice": self.voice})

    def to_dict(self) -> dict[str, Any]:
        out = self.__dict__.copy()
        out["created_at"] = self.created_at.isoformat()
        return out


_RECORD_COLUMNS = ("a.avatar_id, a.user_id, a.name, a.description, a.media_kind, a.source_width, a.source_height,"
                   " a.source_fps, a.frame_count, a.width, a.height, a.quality_report, a.face_data_version,"
                   " a.created_at, coalesce(octet_length(f.frames), 0), a.default_tts, a.default_voice")
_RECORD_FROM = "avatars a LEFT JOIN avatar_face_data f USING (avatar_id)"
# Boxes are stored as one blob (so they can be encrypted): N x 4 int32, big-endian, as migration 0004 wrote them.
_BOX_DTYPE = ">i4"


class AvatarStore:
    """The avatars and avatar_face_data tables; face data (upload, frames, boxes, landmarks) encrypted at rest."""

    def __init__(self, pool: ConnectionPool, keyring: FaceKeyring) -> None:
        self.pool = pool
        self.keyring = keyring

    def save(self, face_data: AvatarFaceData, *, user_id: str, name: str, description: str, media_kind: str,
             source: bytes, source_width: int, source_height: int, quality_report: dict[str, Any],
             default_voice: VoiceChoice | None = None, replace: bool = False,
             audit: AuditEntry | None = None, also: Write | None = None) -> AvatarRecord:
        """Store an avatar and all its frames in one transaction (nothing half-stored), with its audit entry and
        ``also``'s writes (a registration job's completion), which commit or roll back with it.

        Raises AvatarNameTaken when the user already has an avatar of that name.
        """
        pack = FramePack.from_images([frame.image for frame in face_data.frames])
        boxes = np.asarray([list(frame.box) for frame in face_data.frames], dtype=_BOX_DTYPE).tobytes()
        landmarks = np.stack([np.asarray(f.landmarks, dtype="<f4") for f in face_data.frames]).tobytes()
        sealed = self._seal(face_data.avatar_id, source=source, boxes=boxes, landmarks=landmarks)
        frames, frame_sizes = self.keyring.encrypt_frames([bytes(pack.jpeg(i)) for i in range(len(pack))],
                                                          avatar_id=face_data.avatar_id)
        key_id = self.keyring.current_id
        voice = default_voice or VoiceChoice()
        try:
            with self.pool.connection() as conn, conn.transaction():
                if replace:
                    conn.execute("DELETE FROM avatars WHERE avatar_id = %s", (face_data.avatar_id,))
                conn.execute(
                    "INSERT INTO avatars (avatar_id, user_id, name, description, media_kind, source_sha256,"
                    " source_bytes, source_key_id, source_width, source_height, source_fps, frame_count, width,"
                    " height, quality_report, face_data_version, default_tts, default_voice)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (face_data.avatar_id, user_id, name, description, media_kind, hashlib.sha256(source).hexdigest(),
                     sealed["source"], key_id, source_width, source_height, face_data.source_fps,
                     len(face_data.frames), face_data.width, face_data.height, Jsonb(quality_report),
                     face_data.version, voice.tts, voice.voice),
                )
                conn.execute("INSERT INTO avatar_face_data (avatar_id, frame_sizes, frames, boxes, landmarks, key_id)"
                             " VALUES (%s, %s, %s, %s, %s, %s)",
                             (face_data.avatar_id, frame_sizes, frames, sealed["boxes"], sealed["landmarks"],
                              key_id))
                if audit is not None:
                    write_entry(conn, audit)
                if also is not None:
                    also(conn)
        except psycopg.errors.UniqueViolation as error:
            # The (user_id, name) constraint decides, so two uploads racing for one name cannot both win.
            if error.diag.constraint_name == "avatars_user_id_name_key":
                raise AvatarNameTaken(user_id, name) from None
            raise
        return self.record(face_data.avatar_id)

    def _seal(self, avatar_id: str, **blobs: bytes) -> dict[str, bytes]:
        return {column: self.keyring.encrypt(blob, column=column, avatar_id=avatar_id)
                for column, blob in blobs.items()}

    def name_taken(self, user_id: str, name: str) -> bool:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT 1 FROM avatars WHERE user_id = %s AND name = %s", (user_id, name)).fetchone()
        return row is not None

    def record(self, avatar_id: str) -> AvatarRecord:
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM {_RECORD_FROM} WHERE a.avatar_id = %s",
                               (avatar_id,)).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        return _record(row)

    def owner_and_voice(self, avatar_id: str) -> tuple[str, VoiceChoice] | None:
        """Who registered the avatar and its default voice, in one query; None if there is no such avatar."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT user_id, default_tts, default_voice FROM avatars WHERE avatar_id = %s",
                               (avatar_id,)).fetchone()
        if row is None:
            return None
        return str(row[0]), VoiceChoice.model_validate({"tts": row[1], "voice": row[2]})

    def set_default_voice(self, avatar_id: str, voice: VoiceChoice, audit: AuditEntry | None = None) -> AvatarRecord:
        """Change the avatar's default voice and record who did, in one transaction."""
        with self.pool.connection() as conn, conn.transaction():
            if conn.execute("UPDATE avatars SET default_tts = %s, default_voice = %s WHERE avatar_id = %s",
                            (voice.tts, voice.voice, avatar_id)).rowcount == 0:
                raise AvatarNotFound(avatar_id)
            if audit is not None:
                write_entry(conn, audit)
        return self.record(avatar_id)

    def current_version(self, avatar_id: str) -> int | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT face_data_version FROM avatars WHERE avatar_id = %s",
                               (avatar_id,)).fetchone()
        return None if row is None else int(row[0])

    def list(self, owners: Iterable[str] | None = None) -> list[AvatarRecord]:
        """Every avatar, or those registered by one of ``owners``, oldest first."""
        query = f"SELECT {_RECORD_COLUMNS} FROM {_RECORD_FROM}"
        params: tuple[Any, ...] = ()
        if owners is not None:
            query += " WHERE a.user_id = ANY(%s)"
            params = (sorted(set(owners)),)
        with self.pool.connection() as conn:
            return [_record(row) for row in conn.execute(query + " ORDER BY a.created_at, a.avatar_id", params)]

    def delete(self, avatar_id: str, audit: AuditEntry | None = None) -> None:
        """Remove the avatar and (by cascade) its face data, and record who did, in one transaction."""
        with self.pool.connection() as conn, conn.transaction():
            if conn.execute("DELETE FROM avatars WHERE avatar_id = %s", (avatar_id,)).rowcount == 0:
                raise AvatarNotFound(avatar_id)
            if audit is not None:
                write_entry(conn, audit)

    def load_face_data(self, avatar_id: str) -> AvatarFaceData:
        """Everything an engine needs to render this avatar, without detecting anything.

        The frames stay JPEG in memory and are decoded when a renderer reads them (infra/face_frames.py).
        """
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT a.face_data_version, a.source_fps, f.frame_sizes, f.key_id, f.frames, f.boxes, f.landmarks"
                " FROM avatars a JOIN avatar_face_data f USING (avatar_id) WHERE a.avatar_id = %s",
                (avatar_id,), binary=True).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        version, source_fps, sizes, key_id, sealed_frames, *sealed = row
        if version != FACE_DATA_VERSION:
            raise AvatarNotFound(avatar_id)  # stale format: registration recomputes it, never misread
        jpegs = self.keyring.decrypt_frames(sealed_frames, sizes, key_id, avatar_id=avatar_id)
        boxes, landmarks = self._open(avatar_id, key_id, boxes=sealed[0], landmarks=sealed[1])
        pack = FramePack(b"".join(jpegs), [len(jpeg) for jpeg in jpegs])
        points = np.frombuffer(landmarks, dtype="<f4").reshape(len(sizes), LANDMARK_COUNT, 2)
        frames = tuple(
            PackedFaceFrame(pack, index, _box(box), points[index].astype(np.float32))
            for index, box in enumerate(_boxes(boxes))
        )
        return AvatarFaceData(avatar_id, frames, source_fps=source_fps, version=version)

    def first_frame(self, avatar_id: str) -> FaceFrame:
        """The avatar's first frame with its face, fetching and decrypting only that frame (for previews)."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT frame_sizes[1], key_id, substring(frames FROM 1 FOR frame_sizes[1]), boxes,"
                               " landmarks FROM avatar_face_data WHERE avatar_id = %s", (avatar_id,),
                               binary=True).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        first_size, key_id, sealed_frame, *sealed = row
        [jpeg] = self.keyring.decrypt_frames(sealed_frame, [first_size], key_id, avatar_id=avatar_id)
        boxes, landmarks = self._open(avatar_id, key_id, boxes=sealed[0], landmarks=sealed[1])
        points = np.frombuffer(landmarks, dtype="<f4", count=LANDMARK_COUNT * 2).reshape(LANDMARK_COUNT, 2)
        return FaceFrame(decode_frame(jpeg), _box(_boxes(boxes)[0]), points.astype(np.float32))

    def source(self, avatar_id: str) -> bytes:
        """The original upload, decrypted."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT source_key_id, source_bytes FROM avatars WHERE avatar_id = %s",
                               (avatar_id,), binary=True).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        return self.keyring.decrypt(row[1], row[0], column="source", avatar_id=avatar_id)

    def _open(self, avatar_id: str, key_id: str | None, **sealed: bytes) -> tuple[bytes, ...]:
        """The plaintexts of ``sealed`` blobs, in the order given (FaceDataDecryptionError if a key is wrong)."""
        return tuple(self.keyring.decrypt(blob, key_id, column=column, avatar_id=avatar_id)
                     for column, blob in sealed.items())


def _boxes(blob: bytes) -> npt.NDArray[np.int32]:
    return np.frombuffer(blob, dtype=_BOX_DTYPE).reshape(-1, 4).astype(np.int32)


def _box(row: npt.NDArray[np.int32]) -> tuple[int, int, int, int]:
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _record(row: tuple[Any, ...]) -> AvatarRecord:
    values = list(row)
    if isinstance(values[11], str):
        values[11] = json.loads(values[11])
    return AvatarRecord(*values)
