"""Re-encrypts every avatar's face data under the current key (the first of FACE_DATA_KEYS), with progress.

    python scripts/rotate_face_key.py --new-key k2026   # prints a fresh FACE_DATA_KEYS entry to put first
    python scripts/rotate_face_key.py --dry-run         # how many avatars are not under the current key
    python scripts/rotate_face_key.py                   # re-encrypt them, one avatar per transaction

Reads DATABASE_URL and FACE_DATA_KEYS (or FACE_DATA_KEY) like every service. Rows written before encryption
existed (no key id) are encrypted too. Safe to interrupt and to run again: each avatar is rewritten in its own
transaction, and only rows not yet under the current key are touched. docs/security.md has the whole procedure.
Exit status: 0 when every row is under the current key, 1 when some could not be (named on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from infra.crypto import FaceDataDecryptionError, FaceKeyring, face_keyring, new_key
from infra.settings import load_settings


@dataclass
class RotationReport:
    """What a run did: avatars rewritten, bytes re-encrypted, and the ones it could not read."""

    rotated: int = 0
    bytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    remaining: int = 0


def stale_avatar_ids(conn: psycopg.Connection[Any], current_id: str) -> list[str]:
    """Avatars with any row not under the current key (NULL = written before encryption)."""
    rows = conn.execute(
        "SELECT a.avatar_id FROM avatars a LEFT JOIN avatar_face_data f USING (avatar_id)"
        " WHERE a.source_key_id IS DISTINCT FROM %(key)s"
        " OR (f.avatar_id IS NOT NULL AND f.key_id IS DISTINCT FROM %(key)s) ORDER BY a.avatar_id",
        {"key": current_id}).fetchall()
    return [str(row[0]) for row in rows]


def rotate_avatar(conn: psycopg.Connection[Any], keyring: FaceKeyring, avatar_id: str) -> int:
    """Re-encrypt one avatar's rows under the current key in one transaction; returns the bytes rewritten."""
    with conn.transaction():
        return _rotate_source(conn, keyring, avatar_id) + _rotate_face_data(conn, keyring, avatar_id)


def _rotate_source(conn: psycopg.Connection[Any], keyring: FaceKeyring, avatar_id: str) -> int:
    row = conn.execute("SELECT source_key_id, source_bytes FROM avatars WHERE avatar_id = %s FOR UPDATE",
                       (avatar_id,), binary=True).fetchone()
    if row is None or row[0] == keyring.current_id:
        return 0  # deleted meanwhile, or already current
    source = keyring.decrypt(row[1], row[0], column="source", avatar_id=avatar_id)
    conn.execute("UPDATE avatars SET source_bytes = %s, source_key_id = %s WHERE avatar_id = %s",
                 (keyring.encrypt(source, column="source", avatar_id=avatar_id), keyring.current_id, avatar_id))
    return len(source)


def _rotate_face_data(conn: psycopg.Connection[Any], keyring: FaceKeyring, avatar_id: str) -> int:
    row = conn.execute("SELECT key_id, frame_sizes, frames, boxes, landmarks FROM avatar_face_data"
                       " WHERE avatar_id = %s FOR UPDATE", (avatar_id,), binary=True).fetchone()
    if row is None or row[0] == keyring.current_id:
        return 0
    key_id, sizes, sealed_frames, sealed_boxes, sealed_landmarks = row
    jpegs = keyring.decrypt_frames(sealed_frames, sizes, key_id, avatar_id=avatar_id)
    frames, frame_sizes = keyring.encrypt_frames(jpegs, avatar_id=avatar_id)
    blobs = {column: keyring.decrypt(blob, key_id, column=column, avatar_id=avatar_id)
             for column, blob in (("boxes", sealed_boxes), ("landmarks", sealed_landmarks))}
    conn.execute("UPDATE avatar_face_data SET frame_sizes = %s, frames = %s, boxes = %s, landmarks = %s, key_id = %s"
                 " WHERE avatar_id = %s",
                 (frame_sizes, frames, *(keyring.encrypt(blob, column=column, avatar_id=avatar_id)
                                         for column, blob in blobs.items()), keyring.current_id, avatar_id))
    return sum(map(len, jpegs)) + sum(map(len, blobs.values()))


def rotate_all(database_url: str, keyring: FaceKeyring, *, dry_run: bool = False,
               out: Any = sys.stdout) -> RotationReport:
    """Rewrite every stale avatar, printing one progress line per avatar."""
    report = RotationReport()
    with psycopg.connect(database_url, autocommit=True) as conn:
        stale = stale_avatar_ids(conn, keyring.current_id)
        print(f"{len(stale)} avatar(s) not under the current key '{keyring.current_id}'", file=out, flush=True)
        if dry_run:
            report.remaining = len(stale)
            return report
        started = time.perf_counter()
        for position, avatar_id in enumerate(stale, start=1):
            try:
                size = rotate_avatar(conn, keyring, avatar_id)
            except FaceDataDecryptionError as error:
                report.failed[avatar_id] = str(error)
                print(f"  [{position}/{len(stale)}] {avatar_id}: FAILED: {error}", file=out, flush=True)
                continue
            report.rotated += 1
            report.bytes += size
            print(f"  [{position}/{len(stale)}] {avatar_id}: {size / 1e6:.2f} MB re-encrypted", file=out, flush=True)
        report.remaining = len(stale_avatar_ids(conn, keyring.current_id))
        elapsed = time.perf_counter() - started
        print(f"done: {report.rotated} avatar(s), {report.bytes / 1e6:.1f} MB in {elapsed:.1f} s; "
              f"{report.remaining} not under the current key", file=out, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dry-run", action="store_true", help="only count the avatars to re-encrypt")
    parser.add_argument("--new-key", metavar="KEY_ID", help="print a new random 'KEY_ID:base64key' entry and exit")
    args = parser.parse_args(argv)
    if args.new_key:
        try:
            print(new_key(args.new_key).to_text())
        except ValueError as error:
            parser.error(str(error))
        return 0
    settings = load_settings()
    report = rotate_all(settings.database_url, face_keyring(settings), dry_run=args.dry_run)
    for avatar_id, reason in report.failed.items():
        print(f"not rotated: {avatar_id}: {reason}", file=sys.stderr)
    if report.remaining and not args.dry_run and not report.failed:
        print("some rows were written under another key meanwhile (a service without the new FACE_DATA_KEYS?): "
              "run this again once every service has them", file=sys.stderr)
    return 0 if report.remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
