"""What a processor's handler is given and what the app (processors/common/kafka_app.py) does with its outputs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from infra.settings import Settings
from processors.common.kafka_app import Inbound, KafkaApp, Outgoing, _Job


class Admin:
    """Records the session topics the app asks for; the broker itself is never reached."""

    def __init__(self) -> None:
        self.sessions: list[str] = []

    def ensure_session_topic(self, session_id: str) -> str:
        self.sessions.append(session_id)
        return f"avatar.session.{session_id}"


class Message:
    """A consumed message, as much of confluent_kafka.Message as the app reads."""

    def key(self) -> bytes:
        return b"s1"

    def value(self) -> bytes:
        return b"hello"

    def topic(self) -> str:
        return "avatar.speech"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def test_the_handler_gets_the_message_with_its_takeover_flag_and_the_app_makes_the_session_topic() -> None:
    settings = Settings(_env_file=None, kafka_bootstrap_servers="127.0.0.1:9")  # nothing listens: queued only
    seen: list[Inbound] = []

    def handler(message: Inbound) -> Iterator[Outgoing]:
        seen.append(message)
        yield Outgoing(settings.session_topic("s1"), message.key, b"chunk")
        yield Outgoing(settings.kafka_speech_topic, message.key, b"segment")

    admin: Any = Admin()
    app = KafkaApp(settings, name="outputs-test", input_topic=settings.kafka_speech_topic, handler=handler,
                   admin=admin)
    job = _Job(Message(), trace={}, recovering=True)  # type: ignore[arg-type]
    try:
        assert [app._advance(job) for _ in range(3)] == [None, None, "ok"]
        assert seen == [Inbound(b"s1", b"hello", recovering=True)]
        assert admin.sessions == ["s1"], "the session topic is made before its first write; others are not"
        assert len(app.producer) == 2, "both outputs are queued for the broker"
    finally:
        app.producer.purge()
        app.consumer.close()
