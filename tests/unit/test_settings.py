"""Settings are typed, come from the environment, and bad values stop start-up with a clear message."""

from __future__ import annotations

import pytest

from infra.settings import Settings, SettingsError, load_settings


def test_defaults_serve_port_5002_with_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    settings = Settings(_env_file=None)
    assert settings.port == 5002
    assert settings.kafka_bootstrap_servers == ""
    assert settings.session_topic("abc") == "avatar.session.abc"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "6000")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()
    assert settings.port == 6000
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_every_bad_value_is_named_in_one_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "localhost")
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "PORT='not-a-port'" in message
    assert "KAFKA_BOOTSTRAP_SERVERS='localhost'" in message and "host:port" in message
    assert "DATABASE_URL" in message and "postgresql://" in message


def test_unknown_engine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNC_ENGINE", "magic")
    with pytest.raises(SettingsError, match="LIPSYNC_ENGINE='magic'"):
        load_settings()


def test_more_in_sync_replicas_than_replicas_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", "3")
    with pytest.raises(SettingsError, match=r"KAFKA_MIN_INSYNC_REPLICAS \(3\) cannot exceed"):
        load_settings()
