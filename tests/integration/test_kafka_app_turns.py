"""On a real broker, a processor's sessions take turns: a new session's first output does not wait for another
session's long message, one session's messages stay in order, and offsets are committed only when done."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.broker import EmbeddedBroker
from infra.kafka import TopicAdmin, consumer_config, new_producer
from infra.settings import Settings
from processors.common.kafka_app import Inbound, KafkaApp, Outgoing

pytestmark = pytest.mark.integration
STEP_S = 0.02


@pytest.fixture
def own_topics(broker: EmbeddedBroker) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings(kafka_bootstrap_servers=broker.bootstrap, log_level="WARNING",
                    kafka_status_topic=f"turns.status.{suffix}", kafka_dlq_topic=f"turns.dlq.{suffix}",
                    kafka_requests_topic=f"turns.in.{suffix}", kafka_speech_topic=f"turns.out.{suffix}")


def slow_handler(out_topic: str) -> Callable[[Inbound], Iterator[Outgoing]]:
    def handle(message: Inbound) -> Iterator[Outgoing]:
        name, steps = message.value.decode().split(":")
        for step in range(int(steps)):
            time.sleep(STEP_S)  # rendering one chunk
            yield Outgoing(out_topic, message.key, f"{name}.{step}".encode())
    return handle


def read_outputs(settings: Settings, expected: int, timeout_s: float = 30) -> list[str]:
    consumer = Consumer(consumer_config(settings, None))
    consumer.assign([TopicPartition(settings.kafka_speech_topic, 0, 0)])
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                seen.append((message.value() or b"").decode())
    finally:
        consumer.close()
    return seen


def test_sessions_take_turns_in_order_and_commit_only_what_is_done(own_topics: Settings) -> None:
    settings = own_topics
    admin = TopicAdmin(settings)
    admin.ensure([(settings.kafka_requests_topic, 1), (settings.kafka_speech_topic, 1)])  # one partition: lanes
    app = KafkaApp(settings, name=f"turns-{uuid.uuid4().hex[:6]}", input_topic=settings.kafka_requests_topic,
                   handler=slow_handler(settings.kafka_speech_topic), admin=admin)
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    producer = new_producer(settings)
    try:
        assert app.assigned.wait(30)
        producer.produce(settings.kafka_requests_topic, b"long:40", key=b"session-a")  # ~0.8 s of rendering
        producer.produce(settings.kafka_requests_topic, b"after:1", key=b"session-a")  # same session: waits
        producer.flush(10)
        time.sleep(0.2)
        producer.produce(settings.kafka_requests_topic, b"new:2", key=b"session-b")  # arrives mid-way
        producer.flush(10)
        outputs = read_outputs(settings, 43)
    finally:
        app.stop()
        thread.join(30)
        producer.flush(5)

    assert sorted(outputs) == sorted([f"long.{i}" for i in range(40)] + ["after.0", "new.0", "new.1"])
    assert outputs.index("new.0") < outputs.index("long.39"), "the new session did not wait for the long one"
    assert outputs.index("after.0") > outputs.index("long.39"), "one session's messages stay in order"
    check = Consumer(consumer_config(settings, group_id=f"avatar-{app.name}"))
    try:
        (committed,) = check.committed([TopicPartition(settings.kafka_requests_topic, 0)], timeout=10)
    finally:
        check.close()
    assert committed.offset == 3, "all three messages done and committed"
