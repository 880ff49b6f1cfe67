"""In dev mode a caller without a token acts as the admin, but cannot delete the bundled sample avatar: 403
``sample_protected``, audited as a refused deletion; a caller sending ADMIN_TOKEN still can. A sample the
admin deleted comes back at the next start-up, audited as the system's registration."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from infra.audit import AVATAR_DELETE_REFUSED, AVATAR_DELETED, AVATAR_REGISTERED, AuditActor, AuditEntry, AuditLog
from infra.avatar_store import AvatarStore
from infra.broker import EmbeddedBroker, free_port
from infra.crypto import FaceKeyring, face_keyring, new_key
from infra.database import open_pool
from infra.migrations import throwaway_database
from infra.settings import Settings
from processors.registration.analyse import analyse_upload
from processors.registration.sample import SAMPLE_USER, ensure_sample_avatar, sample_png
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-the-sample-protection-tests"


@pytest.fixture(scope="module")
def dev_settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    # A sample id of its own: the admin deletes it here, and the shared "sample" stays for the other tests.
    return Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                    dev_mode=True, admin_token=SecretStr(ADMIN), face_data_keys=SecretStr(TEST_FACE_DATA_KEYS),
                    sample_avatar_id=f"sample-{uuid.uuid4().hex[:8]}", register_sample_avatar=False,
                    log_level="WARNING", _env_file=None)


def store_astronaut(settings: Settings, avatar_id: str, user_id: str) -> None:
    """The sample's picture stored under ``avatar_id`` (a name of its own: names are unique per user)."""
    result = analyse_upload(sample_png(), avatar_id=avatar_id)
    pool = open_pool(settings.database_url, 1, name="sample-protection-test")
    try:
        AvatarStore(pool, face_keyring(settings)).save(
            result.face_data, user_id=user_id, name=f"astronaut {avatar_id}", description="", source=sample_png(),
            media_kind=result.media_kind, source_width=result.source_width, source_height=result.source_height,
            quality_report=result.report.to_dict())
    finally:
        pool.close()


@pytest.fixture(scope="module")
def gateway(dev_settings: Settings) -> Iterator[str]:
    store_astronaut(dev_settings, dev_settings.sample_avatar_id, SAMPLE_USER)
    with serve_gateway(dev_settings) as base_url:
        yield base_url


def audit_of(gateway: str, avatar_id: str) -> list[dict[str, object]]:
    response = httpx.get(f"{gateway}/admin/audit", params={"avatar_id": avatar_id},
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


def test_dev_modes_tokenless_caller_cannot_delete_the_sample_and_the_refusal_is_audited(
        gateway: str, dev_settings: Settings) -> None:
    sample = dev_settings.sample_avatar_id
    refused = httpx.delete(f"{gateway}/avatar/{sample}")
    assert refused.status_code == 403 and refused.json()["code"] == "sample_protected", refused.text
    assert httpx.get(f"{gateway}/avatar/{sample}/info").status_code == 200
    [entry] = audit_of(gateway, sample)
    assert entry["action"] == AVATAR_DELETE_REFUSED and entry["actor_kind"] == "admin"
    assert entry["details"] == {"name": f"astronaut {sample}", "code": "sample_protected"}


def test_dev_modes_tokenless_caller_still_deletes_other_avatars(gateway: str, dev_settings: Settings) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    store_astronaut(dev_settings, other, "dev-user")
    assert httpx.delete(f"{gateway}/avatar/{other}").status_code == 200


def test_the_admin_token_deletes_the_sample_in_dev_mode(gateway: str, dev_settings: Settings) -> None:
    sample = dev_settings.sample_avatar_id
    deleted = httpx.delete(f"{gateway}/avatar/{sample}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert deleted.status_code == 200, deleted.text
    assert httpx.get(f"{gateway}/avatar/{sample}/info").status_code == 404
    assert audit_of(gateway, sample)[0]["action"] == AVATAR_DELETED


def test_the_sample_recreated_at_start_up_after_the_admin_deleted_it_is_audited_as_the_system() -> None:
    # A database of its own: the shared one holds the running stack's sample under the same (user, name).
    with throwaway_database("sample_audit") as url, open_pool(url, 2, name="sample-audit-test") as pool:
        store, log = AvatarStore(pool, FaceKeyring([new_key("sample-audit")])), AuditLog(pool)
        assert ensure_sample_avatar(store, "sample") is True
        assert ensure_sample_avatar(store, "sample") is False, "a stored sample is left alone"
        assert [(e.action, e.actor_kind) for e in log.page(avatar_id="sample")] == [(AVATAR_REGISTERED, "system")]
        store.delete("sample", AuditEntry(AVATAR_DELETED, AuditActor.admin("10.1.2.3"), avatar_id="sample",
                                          subject_user_id=SAMPLE_USER))
        assert ensure_sample_avatar(store, "sample") is True
        recreated, deleted, first = log.page(avatar_id="sample")
        assert (deleted.action, deleted.actor_kind, deleted.client_ip) == (AVATAR_DELETED, "admin", "10.1.2.3")
        assert (recreated.action, recreated.actor, recreated.actor_kind) == (AVATAR_REGISTERED, "system", "system")
        assert recreated.client_ip is None and recreated.subject_user_id == SAMPLE_USER
        assert recreated.details["sample"] is True and recreated.details["previous_copy"] == "missing"
        assert "bundled sample" in recreated.details["reason"] and "start-up" in recreated.details["reason"]
        assert recreated.created_at >= deleted.created_at and first.details == recreated.details
        assert store.load_face_data("sample").frames
