"""The gateway's session registry (gateway/sessions.py) over stand-ins of PostgreSQL, the admin and the consumer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING

from gateway.auth import ADMIN, Principal
from gateway.sessions import SessionRegistry
from gateway.speak import Refusal
from infra.session_store import SessionRecord
from infra.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Principal(user_id="alice", is_admin=False)


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, SessionRecord] = {}
        self.touched: list[list[str]] = []
        self.idle: list[str] = []

    def open(self, session_id: str, avatar_id: str, user_id: str | None) -> None:
        self.rows[session_id] = SessionRecord(session_id, avatar_id, user_id, NOW, NOW, None)

    def get(self, session_id: str) -> SessionRecord | None:
        return self.rows.get(session_id)

    def touch(self, session_ids: list[str]) -> None:
        self.touched.append(session_ids)

    def end_idle(self, _idle_s: float) -> list[str]:
        return self.idle


class Admin:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.deleted: list[str] = []

    def ensure_session_topic(self, session_id: str) -> str:
        self.created.append(session_id)
        return f"avatar.session.{session_id}"

    def delete(self, topics: list[str]) -> None:
        self.deleted.extend(topics)


class Stream:
    def __init__(self) -> None:
        self.heard: dict[str, int] = {}
        self.tapped: list[str] = []

    def listen(self, topic: str, _listener: Any, from_offset: int) -> None:
        self.heard[topic] = from_offset

    def forget(self, topic: str) -> None:
        self.heard.pop(topic)

    def tap(self, topic: str, _listener: Any) -> None:
        self.tapped.append(topic)

    def untap(self, topic: str, _listener: Any) -> None:
        self.tapped.remove(topic)


@pytest.fixture
def parts() -> tuple[SessionRegistry, Store, Admin, Stream]:
    store, admin, stream = Store(), Admin(), Stream()
    registry = SessionRegistry(Settings(_env_file=None), admin, store, stream)  # type: ignore[arg-type]
    return registry, store, admin, stream


def test_a_new_session_gets_its_topic_a_listener_from_the_start_and_a_row(parts: Any) -> None:
    registry, store, admin, stream = parts
    session_id = registry.open("sample", "alice", lambda _record: None)
    assert admin.created == [session_id] and stream.heard == {f"avatar.session.{session_id}": OFFSET_BEGINNING}
    assert store.rows[session_id].avatar_id == "sample"
    registry.detach(session_id)
    assert stream.heard == {}


def test_another_users_session_is_refused_like_a_missing_one_and_an_ended_one_says_so(parts: Any) -> None:
    registry, store, _admin, _stream = parts
    store.open("bobs", "sample", "bob")
    store.rows["old"] = SessionRecord("old", "sample", "alice", NOW, NOW, NOW)
    for session_id in ("bobs", "ghost"):
        with pytest.raises(Refusal) as raised:
            registry.resumable(session_id, ALICE)
        assert raised.value.code == "unknown_session"
    with pytest.raises(Refusal) as ended:
        registry.resumable("old", ALICE)
    assert ended.value.code == "session_ended"
    assert registry.resumable("bobs", ADMIN).user_id == "bob"


def test_housekeeping_keeps_the_attached_sessions_alive_and_deletes_the_topics_of_idle_ones(parts: Any) -> None:
    registry, store, admin, _stream = parts
    registry.attach("s2", lambda _record: None, 5)
    registry.attach("s1", lambda _record: None, 0)
    registry.detach("s2")
    store.idle = ["gone"]
    assert registry.end_idle_sessions() == ["gone"]
    assert store.touched == [["s1"]] and admin.deleted == ["avatar.session.gone"]


def test_a_session_tapped_by_a_webrtc_peer_stays_alive_after_its_websocket_left_until_untapped(parts: Any) -> None:
    registry, store, _admin, stream = parts
    registry.attach("s1", lambda _record: None, 0)
    peer = lambda _record: None  # noqa: E731
    registry.tap("s1", peer)
    registry.tap("s1", peer)
    registry.detach("s1")
    registry.end_idle_sessions()
    assert store.touched[-1] == ["s1"] and stream.tapped == ["avatar.session.s1"] * 2
    registry.untap("s1", peer)
    registry.end_idle_sessions()
    assert store.touched[-1] == ["s1"], "one peer is left"
    registry.untap("s1", peer)
    registry.end_idle_sessions()
    assert store.touched[-1] == [] and stream.tapped == []
