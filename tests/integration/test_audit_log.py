"""The audit log records registrations, deletions and token issuance with who, what, when and from where;
only the admin reads it (GET /admin/audit, newest first, paginated); entries commit with their change."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from infra.audit import AVATAR_DELETED, AVATAR_REGISTERED, AuditActor, AuditEntry, AuditLog
from infra.avatar_store import AvatarNameTaken, AvatarNotFound, AvatarStore
from infra.broker import EmbeddedBroker, free_port
from infra.crypto import FaceKeyring, new_key
from infra.database import open_pool
from infra.settings import Settings
from processors.registration.sample import sample_png
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS
from tests.integration.test_encryption_at_rest import face_data

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-the-audit-tests-0123"


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker, database_url: str, registration_worker: None) -> Iterator[str]:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                        dev_mode=False, admin_token=ADMIN, auth_secret="audit-signing-secret-0123456789",
                        face_data_keys=TEST_FACE_DATA_KEYS, register_sample_avatar=False,
                        rate_limit_uploads_per_min=10_000, _env_file=None)
    with serve_gateway(settings) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def admin(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield client


def user(gateway: str, admin: httpx.Client, user_id: str) -> httpx.Client:
    issued = admin.post("/auth/token", json={"user_id": user_id, "ttl_s": 3600})
    assert issued.status_code == 200, issued.text
    return httpx.Client(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {issued.json()['token']}"})


def register(client: httpx.Client, user_id: str) -> str:
    response = client.post("/avatar/register", data={"avatar_name": f"face {uuid.uuid4().hex[:6]}", "user_id": user_id},
                           files={"file": ("face.png", sample_png(), "image/png")})
    assert response.status_code == 201, response.text
    return str(response.json()["avatar_id"])


def entries(admin: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    response = admin.get("/admin/audit", params=filters)
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


def test_token_issuance_is_logged_with_admin_ip_and_ttl_but_never_the_token(gateway: str,
                                                                             admin: httpx.Client) -> None:
    user_id = f"u{uuid.uuid4().hex[:8]}"
    before = datetime.now(UTC) - timedelta(seconds=5)
    with user(gateway, admin, user_id) as client:
        token = client.headers["Authorization"].removeprefix("Bearer ")
    [entry] = entries(admin, action="token.issued", user_id=user_id)
    assert entry["actor"] == "admin" and entry["actor_kind"] == "admin" and entry["client_ip"] == "127.0.0.1"
    assert entry["subject_user_id"] == user_id and entry["details"] == {"ttl_s": 3600}
    assert datetime.fromisoformat(entry["created_at"]) >= before
    assert token not in str(entry)


def test_a_users_registration_and_deletion_are_logged_as_that_user(gateway: str, admin: httpx.Client) -> None:
    user_id = f"u{uuid.uuid4().hex[:8]}"
    with user(gateway, admin, user_id) as client:
        avatar_id = register(client, user_id)
        assert client.delete(f"/avatar/{avatar_id}").status_code == 200
    deleted, registered = entries(admin, avatar_id=avatar_id)  # newest first
    assert registered["action"] == AVATAR_REGISTERED and deleted["action"] == AVATAR_DELETED
    for entry in (registered, deleted):
        assert (entry["actor"], entry["actor_kind"], entry["subject_user_id"]) == (user_id, "user", user_id)
        assert entry["client_ip"] == "127.0.0.1"
    assert registered["details"]["media_kind"] == "image" and registered["details"]["frames"] == 1
    assert registered["details"]["upload_bytes"] == len(sample_png())
    assert deleted["id"] > registered["id"]


def test_the_admin_deleting_a_users_avatar_is_logged_as_the_admin(gateway: str, admin: httpx.Client) -> None:
    user_id = f"u{uuid.uuid4().hex[:8]}"
    with user(gateway, admin, user_id) as client:
        avatar_id = register(client, user_id)
    assert admin.delete(f"/avatar/{avatar_id}").status_code == 200
    [deleted] = entries(admin, avatar_id=avatar_id, action="avatar.deleted")
    assert deleted["actor"] == "admin" and deleted["subject_user_id"] == user_id


def test_a_user_cannot_read_the_audit_log_and_nobody_without_a_token(gateway: str, admin: httpx.Client) -> None:
    with user(gateway, admin, f"u{uuid.uuid4().hex[:8]}") as client:
        refused = client.get("/admin/audit")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    anonymous = httpx.get(f"{gateway}/admin/audit")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"


def test_pages_follow_one_another_newest_first_without_overlap(gateway: str, admin: httpx.Client) -> None:
    user_id = f"u{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        user(gateway, admin, user_id).close()
    first = admin.get("/admin/audit", params={"user_id": user_id, "limit": 2}).json()
    second = admin.get("/admin/audit", params={"user_id": user_id, "limit": 2,
                                               "before": first["next_before"]}).json()
    third = admin.get("/admin/audit", params={"user_id": user_id, "limit": 2,
                                              "before": second["next_before"]}).json()
    ids = [e["id"] for page in (first, second, third) for e in page["entries"]]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    assert third["count"] == 1 and third["next_before"] is None
    bad = admin.get("/admin/audit", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


# --- the entry commits or rolls back with its change (the store, on the real database) ------------------


@pytest.fixture(scope="module")
def pool(database_url: str) -> Iterator[ConnectionPool]:
    opened = open_pool(database_url, 2, name="audit-test")
    yield opened
    opened.close()


def test_a_registration_that_fails_leaves_no_audit_entry(pool: ConnectionPool) -> None:
    store, log = AvatarStore(pool, FaceKeyring([new_key("audit")])), AuditLog(pool)
    actor = AuditActor.user(f"u{uuid.uuid4().hex[:8]}", "10.0.0.7")
    first, twin = face_data(f"a-{uuid.uuid4().hex[:8]}"), face_data(f"a-{uuid.uuid4().hex[:8]}")
    for written, expect_taken in ((first, False), (twin, True)):
        entry = AuditEntry(AVATAR_REGISTERED, actor, avatar_id=written.avatar_id, subject_user_id=actor.actor)
        try:
            store.save(written, user_id=actor.actor, name="same name", description="", media_kind="video",
                       source=b"src", source_width=1, source_height=1, quality_report={}, audit=entry)
        except AvatarNameTaken:
            assert expect_taken
    assert [e.avatar_id for e in log.page(user_id=actor.actor)] == [first.avatar_id]
    with pytest.raises(AvatarNotFound):
        store.delete("no-such-avatar", AuditEntry(AVATAR_DELETED, actor, avatar_id="no-such-avatar"))
    assert log.page(avatar_id="no-such-avatar") == []


def test_the_audit_log_is_append_only(pool: ConnectionPool) -> None:
    AuditLog(pool).write(AuditEntry("test.append_only", AuditActor.admin("127.0.0.1")))
    with pool.connection() as conn:
        for statement in ("UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log",
                          "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
