"""Face data in PostgreSQL is AES-GCM ciphertext under a named key; wrong keys fail clearly; keys rotate."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool
from skimage import data as skimage_data

from infra.avatar_store import AvatarStore
from infra.broker import EmbeddedBroker, free_port
from infra.crypto import FaceDataDecryptionError, FaceKeyring, new_key
from infra.database import ensure_database, open_pool, with_database
from infra.face_frames import decode_frame, encode_frame
from infra.migrations import MIGRATIONS_DIR, migrate, throwaway_database
from infra.settings import PROJECT_ROOT
from processors.registration.sample import ensure_sample_avatar, sample_png
from schemas.avatar import LANDMARK_COUNT, AvatarFaceData, FaceFrame

pytestmark = pytest.mark.integration
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY_1, KEY_2 = new_key("k1"), new_key("k2")


def face_data(avatar_id: str, frames: int = 3) -> AvatarFaceData:
    """A small multi-frame avatar cut from the astronaut photo, with distinct boxes and landmarks per frame."""
    rng = np.random.default_rng(7)
    photo = skimage_data.astronaut()
    return AvatarFaceData(avatar_id, tuple(
        FaceFrame(np.ascontiguousarray(photo[i * 8:i * 8 + 256, 100:356]), (10 + i, 20, 200 - i, 230),
                  rng.uniform(0, 256, (LANDMARK_COUNT, 2)).astype(np.float32))
        for i in range(frames)), source_fps=25.0)


def save(store: AvatarStore, avatar_id: str) -> AvatarFaceData:
    written = face_data(avatar_id)
    store.save(written, user_id="enc-user", name=f"face {avatar_id}", description="", media_kind="video",
               source=sample_png(), source_width=512, source_height=512, quality_report={})
    return written


@pytest.fixture(scope="module")
def pool(database_url: str) -> Iterator[ConnectionPool]:
    opened = open_pool(database_url, 2, name="encryption-test")
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def store(pool: ConnectionPool) -> AvatarStore:
    return AvatarStore(pool, FaceKeyring([KEY_1]))


def raw_row(pool: ConnectionPool, avatar_id: str) -> dict[str, Any]:
    with pool.connection() as conn:
        row = conn.execute("SELECT a.source_bytes, a.source_key_id, f.frames, f.boxes, f.landmarks, f.key_id"
                           " FROM avatars a JOIN avatar_face_data f USING (avatar_id) WHERE avatar_id = %s",
                           (avatar_id,)).fetchone()
    assert row is not None
    return dict(zip(["source", "source_key_id", "frames", "boxes", "landmarks", "key_id"], row, strict=True))


def assert_same_face_data(read: AvatarFaceData, written: AvatarFaceData) -> None:
    assert len(read.frames) == len(written.frames)
    for got, wrote in zip(read.frames, written.frames, strict=True):
        assert got.box == wrote.box
        np.testing.assert_array_equal(got.landmarks, wrote.landmarks)
        np.testing.assert_array_equal(got.image, decode_frame(encode_frame(wrote.image)))  # JPEG, exactly


def test_every_face_blob_in_postgres_is_ciphertext_under_a_named_key(store: AvatarStore,
                                                                     pool: ConnectionPool) -> None:
    written = save(store, f"enc-{uuid.uuid4().hex[:8]}")
    row = raw_row(pool, written.avatar_id)
    assert row["source_key_id"] == "k1" and row["key_id"] == "k1"
    source, frames = bytes(row["source"]), bytes(row["frames"])
    assert PNG_MAGIC not in source and not source.startswith(PNG_MAGIC[:4])
    assert not frames.startswith(JPEG_MAGIC) and b"JFIF" not in frames
    first_jpeg = encode_frame(written.frames[0].image)
    assert first_jpeg[200:264] not in frames, "no stretch of a frame's JPEG appears in the stored bytes"
    plain_landmarks = written.frames[0].landmarks.astype("<f4").tobytes()
    assert plain_landmarks[:32] not in bytes(row["landmarks"])
    assert np.asarray(written.frames[0].box, ">i4").tobytes() not in bytes(row["boxes"])


def test_the_store_reads_back_exactly_what_it_wrote(store: AvatarStore) -> None:
    written = save(store, f"enc-{uuid.uuid4().hex[:8]}")
    assert_same_face_data(store.load_face_data(written.avatar_id), written)
    first = store.first_frame(written.avatar_id)
    assert first.box == written.frames[0].box
    np.testing.assert_array_equal(first.landmarks, written.frames[0].landmarks)
    assert store.source(written.avatar_id) == sample_png()


def test_a_wrong_key_fails_clearly_on_every_read(store: AvatarStore, pool: ConnectionPool) -> None:
    written = save(store, f"enc-{uuid.uuid4().hex[:8]}")
    impostor = AvatarStore(pool, FaceKeyring([new_key("k1")]))
    for read in (impostor.load_face_data, impostor.first_frame, impostor.source):
        expected = rf"{written.avatar_id}' does not decrypt under the configured key 'k1'"
        with pytest.raises(FaceDataDecryptionError, match=expected):
            read(written.avatar_id)
    stranger = AvatarStore(pool, FaceKeyring([new_key("other")]))
    with pytest.raises(FaceDataDecryptionError, match="key id 'k1', which is not configured"):
        stranger.load_face_data(written.avatar_id)


def test_blobs_swapped_between_avatars_do_not_decrypt(store: AvatarStore, pool: ConnectionPool) -> None:
    alice, mallory = save(store, f"enc-{uuid.uuid4().hex[:8]}"), save(store, f"enc-{uuid.uuid4().hex[:8]}")
    with pool.connection() as conn:
        conn.execute("UPDATE avatar_face_data SET frames = (SELECT frames FROM avatar_face_data WHERE avatar_id = %s)"
                     " WHERE avatar_id = %s", (alice.avatar_id, mallory.avatar_id))
    with pytest.raises(FaceDataDecryptionError, match=mallory.avatar_id):
        store.load_face_data(mallory.avatar_id)


# --- a database from before encryption, migrated, then rotated by the script -----------------------------


@pytest.fixture
def legacy_database(database_url: str) -> Iterator[str]:
    """A fresh database at migration 0003 holding one plaintext avatar (integer[] boxes), then migrated."""
    name = f"avatar_legacy_{uuid.uuid4().hex[:8]}"
    url = with_database(database_url, name)
    ensure_database(url)
    legacy = face_data("legacy-1", frames=2)
    jpegs = [encode_frame(frame.image) for frame in legacy.frames]
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted(MIGRATIONS_DIR.glob("000[123]_*.sql")):
            conn.execute(path.read_text(encoding="utf-8").encode())
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
        conn.execute("INSERT INTO avatars (avatar_id, user_id, name, media_kind, source_sha256, source_bytes,"
                     " source_width, source_height, source_fps, frame_count, width, height, quality_report,"
                     " face_data_version) VALUES ('legacy-1', 'old', 'old face', 'video', 'x', %s, 512, 512, 25,"
                     " 2, 256, 256, '{}', 1)", (sample_png(),))
        conn.execute("INSERT INTO avatar_face_data (avatar_id, frame_sizes, frames, boxes, landmarks)"
                     " VALUES ('legacy-1', %s, %s, %s, %s)",
                     ([len(j) for j in jpegs], b"".join(jpegs), [list(f.box) for f in legacy.frames],
                      b"".join(f.landmarks.astype("<f4").tobytes() for f in legacy.frames)))
    assert migrate(url)[0] == "0004_encryption_and_audit.sql"  # and whatever came after it
    yield url
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rotate(url: str, keys: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=url, FACE_DATA_KEYS=keys, DEV_MODE="false", ADMIN_TOKEN="a" * 20,
               AUTH_SECRET="s" * 20)
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "rotate_face_key.py"), *extra],
                          env=env, capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)


def test_pre_encryption_avatars_stay_readable_and_the_rotation_script_encrypts_them(legacy_database: str) -> None:
    legacy = face_data("legacy-1", frames=2)
    with open_pool(legacy_database, 1) as pool:
        before_rotation = AvatarStore(pool, FaceKeyring([KEY_1]))
        assert_same_face_data(before_rotation.load_face_data("legacy-1"), legacy)
        assert before_rotation.first_frame("legacy-1").box == legacy.frames[0].box

        dry = rotate(legacy_database, KEY_1.to_text(), "--dry-run")
        assert dry.returncode == 1 and "1 avatar(s) not under the current key 'k1'" in dry.stdout
        first = rotate(legacy_database, KEY_1.to_text())
        assert first.returncode == 0, first.stderr
        assert "[1/1] legacy-1" in first.stdout and "0 not under the current key" in first.stdout
        row = raw_row(pool, "legacy-1")
        assert row["key_id"] == "k1" and row["source_key_id"] == "k1"
        assert not bytes(row["frames"]).startswith(JPEG_MAGIC)
        assert PNG_MAGIC not in bytes(row["source"])

        second = rotate(legacy_database, f"{KEY_2.to_text()},{KEY_1.to_text()}")
        assert second.returncode == 0, second.stderr
        only_new_key = AvatarStore(pool, FaceKeyring([KEY_2]))
        assert_same_face_data(only_new_key.load_face_data("legacy-1"), legacy)
        np.testing.assert_array_equal(only_new_key.first_frame("legacy-1").landmarks, legacy.frames[0].landmarks)
        assert only_new_key.source("legacy-1") == sample_png()
        again = rotate(legacy_database, f"{KEY_2.to_text()},{KEY_1.to_text()}")
        assert again.returncode == 0 and "0 avatar(s) not under the current key" in again.stdout


def test_rotation_without_the_old_key_names_the_avatar_it_cannot_read_and_fails(legacy_database: str) -> None:
    assert rotate(legacy_database, KEY_1.to_text()).returncode == 0
    stuck = rotate(legacy_database, KEY_2.to_text())
    assert stuck.returncode == 1
    assert "not rotated: legacy-1" in stuck.stderr and "'k1', which is not configured" in stuck.stderr


def test_outside_dev_mode_the_gateway_refuses_to_start_without_a_face_data_key(
        broker: EmbeddedBroker, database_url: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("FACE_DATA_KEY")}
    env |= {"DEV_MODE": "false", "ADMIN_TOKEN": "a" * 20, "AUTH_SECRET": "s" * 20, "PORT": str(free_port()),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": database_url,
            "REGISTER_SAMPLE_AVATAR": "false", "DATA_DIR": str(Path("/nonexistent-never-written"))}
    started = subprocess.run([sys.executable, "-m", "gateway.main"], env=env, capture_output=True, text=True,
                             timeout=60, cwd=PROJECT_ROOT)
    assert started.returncode != 0
    assert "FACE_DATA_KEYS" in started.stderr and "must be set" in started.stderr


def test_the_sample_avatar_is_registered_again_when_the_keys_changed_without_a_rotation() -> None:
    # A database of its own: the shared one already holds the running stack's sample under the same name.
    with throwaway_database("avatar_sample") as url, open_pool(url, 2, name="sample-test") as fresh:
        old_keys, new_keys = AvatarStore(fresh, FaceKeyring([KEY_1])), AvatarStore(fresh, FaceKeyring([KEY_2]))
        assert ensure_sample_avatar(old_keys, "sample") is True
        assert ensure_sample_avatar(old_keys, "sample") is False, "a readable current copy is kept"
        assert ensure_sample_avatar(new_keys, "sample") is True, "bundled, so analysed again under the new key"
        assert new_keys.load_face_data("sample").frames
