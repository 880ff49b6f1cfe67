"""Face-data encryption: AES-GCM round trips, key rings and rotation order, clear failures, dev-mode keys."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.crypto import (
    NONCE_BYTES,
    TAG_BYTES,
    FaceDataDecryptionError,
    FaceKey,
    FaceKeyConfigError,
    FaceKeyring,
    dev_key,
    face_keyring,
    new_key,
    parse_face_keys,
)
from infra.settings import Settings, SettingsError, load_settings

JPEG = b"\xff\xd8\xff\xe0" + os.urandom(2000)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_blob_round_trips_and_its_ciphertext_shows_nothing_of_the_plaintext() -> None:
    ring = FaceKeyring([new_key("k1")])
    sealed = ring.encrypt(JPEG, column="frames", avatar_id="av-1")
    assert len(sealed) == len(JPEG) + NONCE_BYTES + TAG_BYTES
    assert b"\xff\xd8\xff" not in sealed[:64] and JPEG[100:132] not in sealed
    assert ring.decrypt(sealed, "k1", column="frames", avatar_id="av-1") == JPEG


def test_the_same_plaintext_encrypts_differently_each_time() -> None:
    ring = FaceKeyring([new_key("k1")])
    assert ring.encrypt(JPEG, column="frames", avatar_id="a") != ring.encrypt(JPEG, column="frames", avatar_id="a")


def test_the_first_key_encrypts_and_the_others_still_decrypt() -> None:
    old, new = new_key("old"), new_key("new")
    written_before = FaceKeyring([old]).encrypt(JPEG, column="frames", avatar_id="a")
    rotated = FaceKeyring([new, old])
    assert rotated.current_id == "new"
    assert rotated.decrypt(written_before, "old", column="frames", avatar_id="a") == JPEG
    written_after = rotated.encrypt(JPEG, column="frames", avatar_id="a")
    assert FaceKeyring([new]).decrypt(written_after, "new", column="frames", avatar_id="a") == JPEG


def test_a_wrong_key_under_the_same_id_fails_naming_the_avatar_and_key_but_not_the_secret() -> None:
    sealed = FaceKeyring([new_key("k1")]).encrypt(JPEG, column="frames", avatar_id="av-7")
    impostor = new_key("k1")
    with pytest.raises(FaceDataDecryptionError) as raised:
        FaceKeyring([impostor]).decrypt(sealed, "k1", column="frames", avatar_id="av-7")
    message = str(raised.value)
    assert "av-7" in message and "'k1'" in message and "does not decrypt" in message
    assert b64(impostor.secret) not in message


def test_an_unknown_key_id_fails_listing_the_configured_ones() -> None:
    sealed = FaceKeyring([new_key("gone")]).encrypt(JPEG, column="landmarks", avatar_id="av-2")
    with pytest.raises(FaceDataDecryptionError, match=r"key id 'gone', which is not configured \(configured: k1\)"):
        FaceKeyring([new_key("k1")]).decrypt(sealed, "gone", column="landmarks", avatar_id="av-2")


def test_ciphertext_moved_to_another_avatar_or_column_does_not_decrypt() -> None:
    ring = FaceKeyring([new_key("k1")])
    sealed = ring.encrypt(JPEG, column="frames", avatar_id="alice-avatar")
    with pytest.raises(FaceDataDecryptionError):
        ring.decrypt(sealed, "k1", column="frames", avatar_id="mallory-avatar")
    with pytest.raises(FaceDataDecryptionError):
        ring.decrypt(sealed, "k1", column="source", avatar_id="alice-avatar")


def test_a_flipped_bit_is_detected() -> None:
    ring = FaceKeyring([new_key("k1")])
    sealed = bytearray(ring.encrypt(JPEG, column="frames", avatar_id="a"))
    sealed[NONCE_BYTES + 10] ^= 1
    with pytest.raises(FaceDataDecryptionError, match="altered"):
        ring.decrypt(bytes(sealed), "k1", column="frames", avatar_id="a")


def test_rows_without_a_key_id_are_read_as_written_before_encryption() -> None:
    assert FaceKeyring([new_key("k1")]).decrypt(JPEG, None, column="frames", avatar_id="a") == JPEG


def test_key_lists_parse_in_order_and_bad_ones_are_refused_without_echoing_the_key() -> None:
    one, two = os.urandom(32), os.urandom(32)
    keys = parse_face_keys(f" k2:{b64(two)} , k1:{base64.urlsafe_b64encode(one).decode()}")
    assert [(k.key_id, k.secret) for k in keys] == [("k2", two), ("k1", one)]
    for bad, reason in [("k1", "not id:base64key"), (f"k1:{b64(one)},k1:{b64(two)}", "appears twice"),
                        (f"k1:{b64(one[:16])}", "16 bytes"), ("k1:%%%", "not valid base64"),
                        (f"bad id:{b64(one)}", "letters, digits"), ("", "holds no key")]:
        with pytest.raises(ValueError, match=reason) as raised:
            parse_face_keys(bad)
        assert b64(one) not in str(raised.value)


def test_the_secret_never_appears_in_a_repr() -> None:
    key = new_key("k1")
    assert b64(key.secret) not in repr(key) and repr(key.secret) not in repr(key)


def test_settings_take_a_key_list_or_a_single_key_but_not_both(tmp_path: Path) -> None:
    one, two = os.urandom(32), os.urandom(32)
    ring = face_keyring(settings(face_data_keys=f"new:{b64(one)},old:{b64(two)}", data_dir=tmp_path))
    assert ring.current_id == "new" and ring.key_ids == ["new", "old"]
    assert face_keyring(settings(face_data_key=b64(one), data_dir=tmp_path)).key_ids == ["default"]
    with pytest.raises(ValidationError, match="not both"):
        settings(face_data_key=b64(one), face_data_keys=f"k:{b64(two)}")
    assert not list(tmp_path.iterdir()), "configured keys never write a key file"


def test_a_malformed_key_stops_start_up_naming_the_variable_not_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    short = b64(os.urandom(16))
    monkeypatch.setenv("FACE_DATA_KEYS", f"k1:{short}")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "FACE_DATA_KEYS" in str(raised.value) and "16 bytes" in str(raised.value)
    assert short not in str(raised.value)


def test_outside_dev_mode_a_missing_key_is_a_start_up_error(tmp_path: Path) -> None:
    production = settings(dev_mode=False, admin_token="a" * 20, auth_secret="s" * 20, data_dir=tmp_path)
    with pytest.raises(FaceKeyConfigError, match="FACE_DATA_KEYS"):
        face_keyring(production)
    assert not (tmp_path / "face_data.key").exists()


def test_dev_mode_generates_one_key_file_and_reuses_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = face_keyring(settings(data_dir=tmp_path))
    assert "generated a face-data encryption key" in caplog.text
    key_file = tmp_path / "face_data.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = face_keyring(settings(data_dir=tmp_path))
    assert again.current_id == first.current_id and first.current_id.startswith("dev-")
    sealed = first.encrypt(JPEG, column="frames", avatar_id="a")
    assert again.decrypt(sealed, again.current_id, column="frames", avatar_id="a") == JPEG


def test_services_starting_together_in_dev_mode_agree_on_one_key(tmp_path: Path) -> None:
    found: list[FaceKey] = []
    threads = [threading.Thread(target=lambda: found.append(dev_key(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({(key.key_id, key.secret) for key in found}) == 1
    assert [path.name for path in tmp_path.iterdir()] == ["face_data.key"], "no staging files are left behind"


def test_frames_are_sealed_one_by_one_and_open_alone_or_together() -> None:
    ring = FaceKeyring([new_key("k1")])
    jpegs = [JPEG[:500], JPEG[500:1700], JPEG[1700:]]
    blob, sizes = ring.encrypt_frames(jpegs, avatar_id="av-1")
    assert sizes == [len(j) + NONCE_BYTES + TAG_BYTES for j in jpegs] and len(blob) == sum(sizes)
    assert ring.decrypt_frames(blob, sizes, "k1", avatar_id="av-1") == jpegs
    assert ring.decrypt_frames(blob[:sizes[0]], sizes[:1], "k1", avatar_id="av-1") == jpegs[:1]
    second = blob[sizes[0]:sizes[0] + sizes[1]]
    assert ring.decrypt_frames(second, sizes[1:2], "k1", avatar_id="av-1", first=1) == [jpegs[1]]


def test_reordered_frames_or_sizes_that_do_not_add_up_are_refused() -> None:
    ring = FaceKeyring([new_key("k1")])
    blob, sizes = ring.encrypt_frames([JPEG[:800], JPEG[800:]], avatar_id="av-1")
    swapped = blob[sizes[0]:] + blob[:sizes[0]]
    with pytest.raises(FaceDataDecryptionError, match="frames/0"):
        ring.decrypt_frames(swapped, [sizes[1], sizes[0]], "k1", avatar_id="av-1")
    with pytest.raises(FaceDataDecryptionError, match="sizes cover"):
        ring.decrypt_frames(blob + b"extra", sizes, "k1", avatar_id="av-1")


def test_frames_written_before_encryption_are_split_by_their_sizes() -> None:
    ring = FaceKeyring([new_key("k1")])
    assert ring.decrypt_frames(JPEG, [10, len(JPEG) - 10], None, avatar_id="a") == [JPEG[:10], JPEG[10:]]


def test_a_damaged_dev_key_file_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "face_data.key").write_text("dev-1:not-a-key\n", encoding="utf-8")
    with pytest.raises(FaceKeyConfigError, match=r"face_data\.key is damaged: key 'dev-1' is not valid base64"):
        face_keyring(settings(data_dir=tmp_path))
