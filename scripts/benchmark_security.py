"""Measures what face-data encryption and the audit log cost; prints a table.

    python scripts/benchmark_security.py            # ~30 s: a throw-away database on the local PostgreSQL
    python scripts/benchmark_security.py --runs 9

Figures, medians over the runs:
- AES-256-GCM alone (infra/crypto.py), encrypt and decrypt, on a 1 MB and a 32 MB blob;
- AvatarStore.save / load_face_data / first_frame of a photo avatar (1 frame, 512×512) and of a video avatar
  (250 frames, 720×1280), with the share of each spent in decryption;
- one audit-log entry written on its own (AuditLog.write), as POST /auth/token does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import psycopg
from psycopg import sql
from skimage import data as skimage_data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from infra.audit import AuditActor, AuditEntry, AuditLog
from infra.avatar_store import AvatarStore
from infra.crypto import FaceKeyring, new_key
from infra.database import ensure_database, open_pool, with_database
from infra.face_frames import FramePack
from infra.migrations import migrate
from schemas.avatar import LANDMARK_COUNT, AvatarFaceData, FaceFrame

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def median_ms(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def avatar(avatar_id: str, frames: int, height: int, width: int) -> AvatarFaceData:
    photo = cv2.resize(skimage_data.astronaut(), (width, height))
    rng = np.random.default_rng(1)
    return AvatarFaceData(avatar_id, tuple(
        FaceFrame(np.roll(photo, index, axis=1), (100, 80, 400, 420),
                  rng.uniform(0, min(width, height), (LANDMARK_COUNT, 2)).astype(np.float32))
        for index in range(frames)), source_fps=25.0 if frames > 1 else None)


@contextmanager
def throwaway_database() -> Iterator[str]:
    name = f"avatar_bench_{uuid.uuid4().hex[:8]}"
    url = with_database(SERVER, name)
    ensure_database(url)
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def cipher_row(keyring: FaceKeyring, size: int, runs: int) -> tuple[str, str, str]:
    blob = os.urandom(size)
    sealed = keyring.encrypt(blob, column="frames", avatar_id="bench")
    encrypt = median_ms(lambda: keyring.encrypt(blob, column="frames", avatar_id="bench"), runs)
    decrypt = median_ms(lambda: keyring.decrypt(sealed, keyring.current_id, column="frames", avatar_id="bench"),
                        runs)
    return (f"AES-256-GCM, {size / 1e6:.0f} MB", f"{encrypt:.2f} / {decrypt:.2f}",
            f"{size / 1e6 / (decrypt / 1000):.0f} MB/s decrypt")


def store_rows(store: AvatarStore, runs: int) -> list[tuple[str, str, str]]:
    rows = []
    for label, frames, height, width in (("photo 1×512²", 1, 512, 512), ("video 250×720p", 250, 720, 1280)):
        rows += avatar_rows(store, label, avatar(f"bench-{uuid.uuid4().hex[:8]}", frames, height, width), runs)
    return rows


def avatar_rows(store: AvatarStore, label: str, face_data: AvatarFaceData, runs: int) -> list[tuple[str, str, str]]:
    pack = FramePack.from_images([frame.image for frame in face_data.frames])
    avatar_id = face_data.avatar_id

    def save() -> None:
        store.save(face_data, user_id="bench", name=f"bench {uuid.uuid4().hex}", description="", media_kind="video",
                   source=pack.jpegs[:2_000_000], source_width=face_data.width, source_height=face_data.height,
                   quality_report={}, replace=True)

    save_ms = median_ms(save, max(3, runs // 3))
    load_ms = median_ms(lambda: store.load_face_data(avatar_id), runs)
    first_ms = median_ms(lambda: store.first_frame(avatar_id), runs)
    sealed, sizes = store.keyring.encrypt_frames([bytes(pack.jpeg(i)) for i in range(len(pack))], avatar_id=avatar_id)
    decrypt_ms = median_ms(lambda: store.keyring.decrypt_frames(sealed, sizes, store.keyring.current_id,
                                                                avatar_id=avatar_id), runs)
    return [
        (f"save, {label}", f"{save_ms:.1f}", f"{len(pack.jpegs) / 1e6:.1f} MB of frames"),
        (f"load_face_data, {label}", f"{load_ms:.1f}",
         f"decrypting the frames: {decrypt_ms:.1f} ms ({100 * decrypt_ms / load_ms:.0f}%)"),
        (f"first_frame (preview), {label}", f"{first_ms:.1f}", "fetches and decrypts the first frame only"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    keyring = FaceKeyring([new_key("bench")])
    rows = [cipher_row(keyring, size, args.runs) for size in (1_000_000, 32_000_000)]
    with throwaway_database() as url, open_pool(url, 2, name="benchmark") as pool:
        rows += store_rows(AvatarStore(pool, keyring), args.runs)
        audit = AuditLog(pool)
        entry = AuditEntry("token.issued", AuditActor.admin("127.0.0.1"), subject_user_id="bench",
                           details={"ttl_s": 3600})
        rows.append(("audit entry, own transaction", f"{median_ms(lambda: audit.write(entry), args.runs * 5):.2f}",
                     "POST /auth/token adds this"))
    width = max(len(row[0]) for row in rows)
    print(f"{'what':<{width}}  {'ms (median)':>14}  notes")
    print(f"{'-' * width}  {'-' * 14}  -----")
    for what, ms, note in rows:
        print(f"{what:<{width}}  {ms:>14}  {note}")
    print("\nAES rows show encrypt / decrypt.")


if __name__ == "__main__":
    main()
