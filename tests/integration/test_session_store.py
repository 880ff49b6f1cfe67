"""Sessions live in PostgreSQL: any gateway can resume them, and idle ones end exactly once."""

from __future__ import annotations

import uuid

import pytest

from infra.database import open_pool
from infra.session_store import SessionStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(database_url: str) -> SessionStore:
    return SessionStore(open_pool(database_url, 2, name="session-test"))


def test_open_get_and_reselect_keeps_one_row(store: SessionStore) -> None:
    session_id = uuid.uuid4().hex
    store.open(session_id, "sample", "user-1")
    store.open(session_id, "other", "user-1")
    record = store.get(session_id)
    assert record is not None and record.avatar_id == "other" and record.user_id == "user-1" and not record.ended


def test_idle_sessions_end_once_and_touched_ones_stay(store: SessionStore) -> None:
    idle, active = uuid.uuid4().hex, uuid.uuid4().hex
    store.open(idle, "sample", None)
    store.open(active, "sample", None)
    with store.pool.connection() as conn:
        conn.execute("UPDATE sessions SET last_active_at = now() - interval '1 hour' WHERE session_id = ANY(%s)",
                     ([idle, active],))
    store.touch([active])
    ended = store.end_idle(600)
    assert idle in ended and active not in ended
    assert idle not in store.end_idle(600), "a session is ended (and its topic deleted) by one gateway only"
    record = store.get(idle)
    assert record is not None and record.ended
