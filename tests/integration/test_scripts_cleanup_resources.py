"""scripts/cleanup_resources.py against the real broker and PostgreSQL: orphaned session topics go (ended or
abandoned sessions), others stay; --dry-run changes nothing; the avatar cache is cleared through invalidations."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from types import ModuleType

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.avatar_store import AvatarStore
from infra.broker import EmbeddedBroker
from infra.crypto import face_keyring
from infra.database import open_pool
from infra.kafka import TopicAdmin, consumer_config
from infra.settings import PROJECT_ROOT, Settings
from processors.registration import analyse_upload
from processors.registration.sample import sample_png
from schemas.avatar_events import AvatarInvalidated
from tests.integration.stack import TEST_FACE_DATA_KEYS

pytestmark = pytest.mark.integration


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cleanup_resources",
                                                  PROJECT_ROOT / "scripts" / "cleanup_resources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cleanup_resources"] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


cr = load_script()


@pytest.fixture
def settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    """Its own session-topic prefix, so only this test's topics are judged."""
    return Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, session_idle_ttl_s=600,
                    kafka_session_topic_prefix=f"cleanup{uuid.uuid4().hex[:8]}.", face_data_keys=TEST_FACE_DATA_KEYS,
                    _env_file=None)


def add_session(settings: Settings, session_id: str, *, idle_s: float, ended: bool) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sessions (session_id, avatar_id, last_active_at, ended_at) VALUES "
                     "(%s, 'sample', now() - make_interval(secs => %s), CASE WHEN %s THEN now() END)",
                     (session_id, idle_s, ended))


def topics_now(settings: Settings) -> set[str]:
    return set(cr.session_topics(settings, TopicAdmin(settings)))


def test_orphaned_session_topics_are_deleted_and_the_rest_kept(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:6]
    sessions = {"ended": f"e{tag}", "abandoned": f"a{tag}", "active": f"l{tag}", "unknown": f"u{tag}"}
    add_session(settings, sessions["ended"], idle_s=5, ended=True)
    add_session(settings, sessions["abandoned"], idle_s=5000, ended=False)
    add_session(settings, sessions["active"], idle_s=5, ended=False)
    admin = TopicAdmin(settings)
    for session_id in sessions.values():
        admin.ensure_session_topic(session_id)
    everything = {settings.session_topic(s) for s in sessions.values()}
    assert topics_now(settings) == everything

    dry = {v.topic: v for v in cr.orphaned_topics(settings, dry_run=True)}
    assert {t for t, v in dry.items() if v.orphaned} == {settings.session_topic(sessions["ended"]),
                                                         settings.session_topic(sessions["abandoned"])}
    assert "no session row" in dry[settings.session_topic(sessions["unknown"])].reason
    assert topics_now(settings) == everything, "--dry-run deleted something"

    cr.orphaned_topics(settings, dry_run=False)
    deadline = time.monotonic() + 15
    while topics_now(settings) != {settings.session_topic(sessions["active"]),
                                   settings.session_topic(sessions["unknown"])} and time.monotonic() < deadline:
        time.sleep(0.3)
    assert topics_now(settings) == {settings.session_topic(sessions["active"]),
                                    settings.session_topic(sessions["unknown"])}
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT ended_at FROM sessions WHERE session_id = %s", (sessions["abandoned"],)).fetchone()
    assert row is not None and row[0] is not None, "the abandoned session is marked ended"


def test_clearing_the_avatar_cache_invalidates_every_stored_avatar(settings: Settings) -> None:
    avatar_id = f"cleanup-{uuid.uuid4().hex[:8]}"
    pool = open_pool(settings.database_url, 2, name="cleanup-test")
    try:  # a name of its own: the shared database may already hold the bundled sample under its name
        result = analyse_upload(sample_png(), avatar_id=avatar_id)
        AvatarStore(pool, face_keyring(settings)).save(
            result.face_data, user_id="system", name=avatar_id, description="", media_kind=result.media_kind,
            source=sample_png(), source_width=result.source_width, source_height=result.source_height,
            quality_report=result.report.to_dict())
    finally:
        pool.close()
    TopicAdmin(settings).ensure([(settings.kafka_avatar_invalidation_topic, 1)])
    assert avatar_id in cr.clear_avatar_cache(settings, dry_run=True)
    invalidated = cr.clear_avatar_cache(settings, dry_run=False)
    assert avatar_id in invalidated

    consumer = Consumer(consumer_config(settings, None, **{"enable.auto.commit": False}))
    consumer.assign([TopicPartition(settings.kafka_avatar_invalidation_topic, 0, 0)])
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    try:
        while avatar_id not in seen and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            value = message.value() if message is not None and message.error() is None else None
            if value is not None:
                seen.add(AvatarInvalidated.model_validate_json(value).avatar_id)
    finally:
        consumer.close()
    assert avatar_id in seen


def test_the_command_line_reports_both_and_a_dry_run(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                        ("DATABASE_URL", settings.database_url),
                        ("KAFKA_SESSION_TOPIC_PREFIX", settings.kafka_session_topic_prefix)):
        monkeypatch.setenv(name, value)
    assert cr.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "avatar cache: would invalidate" in out and "session topics: 0 found, would delete 0" in out
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cr.main(["--clear-avatar-cache"]) == 1
    assert "cannot reach PostgreSQL" in capsys.readouterr().err
