"""AES-256-GCM encryption of avatar face data at rest, under a keyring of named keys from settings."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from infra.settings import Settings

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# AESGCM refuses inputs of 2**31 bytes or more; nothing we store comes near, but the error should say why.
MAX_PLAINTEXT_BYTES = 2**31 - 1
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
SINGLE_KEY_ID = "default"  # the id FACE_DATA_KEY's key is stored under
DEV_KEY_FILE = "face_data.key"


class FaceKeyConfigError(SystemExit):
    """The face-data keys are missing or malformed: the service refuses to start, saying what is wrong."""


class FaceDataDecryptionError(RuntimeError):
    """A stored blob cannot be decrypted with the configured keys (unknown key id, wrong key, or altered)."""


@dataclass(frozen=True)
class FaceKey:
    """One named AES-256 key; the secret never appears in a repr or a log line."""

    key_id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not KEY_ID_PATTERN.match(self.key_id):
            raise ValueError(f"key id {self.key_id!r} may hold 1-32 letters, digits and . _ - only")
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"key '{self.key_id}' is {len(self.secret)} bytes; AES-256 needs {KEY_BYTES}")

    def to_text(self) -> str:
        """``id:base64key``, the FACE_DATA_KEYS format."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"


def new_key(key_id: str) -> FaceKey:
    return FaceKey(key_id, secrets.token_bytes(KEY_BYTES))


def decode_key(text: str, key_id: str) -> FaceKey:
    """A base64 key (standard or URL-safe alphabet) as a FaceKey, or ValueError saying what is wrong."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"key '{key_id}' is not valid base64") from None
    return FaceKey(key_id, raw)


def parse_face_keys(text: str) -> list[FaceKey]:
    """``id:base64key,id:base64key,...`` → keys, first = the one new writes use; ValueError if malformed."""
    keys: list[FaceKey] = []
    for position, entry in enumerate(filter(None, (part.strip() for part in text.split(","))), start=1):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id.strip():
            raise ValueError(f"entry {position} is not id:base64key")
        keys.append(decode_key(encoded, key_id.strip()))
    if not keys:
        raise ValueError("holds no key")
    seen: set[str] = set()
    for key in keys:
        if key.key_id in seen:
            raise ValueError(f"key id '{key.key_id}' appears twice")
        seen.add(key.key_id)
    return keys


def associated_data(column: str, avatar_id: str) -> bytes:
    """What a blob is bound to: moving ciphertext to another avatar or column makes it fail to decrypt."""
    return f"avatar-face-data/v1/{column}/{avatar_id}".encode()


class FaceKeyring:
    """Encrypts with the current key, decrypts with whichever key a row names."""

    def __init__(self, keys: Sequence[FaceKey]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.current_id = keys[0].key_id
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def encrypt(self, plaintext: bytes, *, column: str, avatar_id: str) -> bytes:
        """``nonce || ciphertext || tag`` under the current key (a fresh random 96-bit nonce each time)."""
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise ValueError(f"{column} of avatar '{avatar_id}' is {len(plaintext)} bytes; at most 2 GiB is encrypted")
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._ciphers[self.current_id].encrypt(nonce, plaintext, associated_data(column, avatar_id))

    def decrypt(self, blob: bytes | memoryview, key_id: str | None, *, column: str, avatar_id: str) -> bytes:
        """The plaintext of a blob stored under ``key_id``; ``None`` means a row written before encryption."""
        if key_id is None:
            return bytes(blob)  # legacy plaintext: scripts/rotate_face_key.py encrypts such rows
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise FaceDataDecryptionError(
                f"{column} of avatar '{avatar_id}' is encrypted under key id '{key_id}', which is not configured "
                f"(configured: {', '.join(self._ciphers)}); add it to FACE_DATA_KEYS after the current key")
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise FaceDataDecryptionError(f"{column} of avatar '{avatar_id}' is too short to be encrypted data")
        view = memoryview(blob)
        try:
            return cipher.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], associated_data(column, avatar_id))
        except InvalidTag:
            raise FaceDataDecryptionError(
                f"{column} of avatar '{avatar_id}' does not decrypt under the configured key '{key_id}': the key "
                "under that id is not the one it was written with, or the stored bytes were altered") from None

    def encrypt_frames(self, jpegs: Sequence[bytes], *, avatar_id: str) -> tuple[bytes, list[int]]:
        """Each frame sealed on its own (so one frame can be fetched and opened alone): (blob, stored sizes)."""
        sealed = [self.encrypt(jpeg, column=frame_column(index), avatar_id=avatar_id)
                  for index, jpeg in enumerate(jpegs)]
        return b"".join(sealed), [len(item) for item in sealed]

    def decrypt_frames(self, blob: bytes | memoryview, sizes: Sequence[int], key_id: str | None, *,
                       avatar_id: str, first: int = 0) -> list[bytes]:
        """The frames of a blob written by encrypt_frames (``first``: the index of the blob's first frame)."""
        view = memoryview(blob)
        frames, offset = [], 0
        for index, size in enumerate(sizes, start=first):
            frames.append(self.decrypt(view[offset:offset + size], key_id, column=frame_column(index),
                                       avatar_id=avatar_id))
            offset += size
        if offset != len(view):
            raise FaceDataDecryptionError(f"frames of avatar '{avatar_id}': the sizes cover {offset} of "
                                          f"{len(view)} bytes")
        return frames


def frame_column(index: int) -> str:
    return f"frames/{index}"


def face_keyring(settings: Settings) -> FaceKeyring:
    """The keyring the settings describe; in dev mode without keys, one generated and kept under DATA_DIR.

    Outside dev mode a missing key stops the service (FaceKeyConfigError): face data must never be
    written under a key that only one container's disk knows.
    """
    if settings.face_data_keys is not None:
        return FaceKeyring(parse_face_keys(settings.face_data_keys.get_secret_value()))
    if settings.face_data_key is not None:
        return FaceKeyring([decode_key(settings.face_data_key.get_secret_value(), SINGLE_KEY_ID)])
    if not settings.dev_mode:
        raise FaceKeyConfigError("with DEV_MODE=false, FACE_DATA_KEYS (id:base64key,...) or FACE_DATA_KEY "
                                 "(base64 of 32 bytes) must be set: avatar face data is encrypted at rest")
    return FaceKeyring([dev_key(settings.data_dir)])


def dev_key(data_dir: Path) -> FaceKey:
    """The key in ``data_dir/face_data.key``, created on first use (services starting at once share one)."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        _create_key_file(path, new_key(f"dev-{secrets.token_hex(3)}"))
    try:
        return parse_face_keys(path.read_text(encoding="utf-8"))[0]
    except ValueError as error:
        raise FaceKeyConfigError(f"the dev-mode face-data key file {path} is damaged: {error}") from None


def _create_key_file(path: Path, key: FaceKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.to_text() + "\n")
    try:
        # link() fails if the file exists: of two services starting together, exactly one key wins.
        os.link(staging, path)
    except FileExistsError:
        return
    finally:
        staging.unlink()
    log.warning("no FACE_DATA_KEYS set: generated a face-data encryption key for dev mode; keep it, or the "
                "registered avatars cannot be read", extra={"key_file": str(path), "key_id": key.key_id})
