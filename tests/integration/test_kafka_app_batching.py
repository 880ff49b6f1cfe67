"""On a real broker, a processor's due sessions share one runner call per step (one inference batch), each still
gets its own outputs in order exactly once, new work is never held for a batch, and a bad piece fails alone."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from infra.kafka import TopicAdmin, new_producer
from infra.settings import Settings
from processors.common.batching import Shared
from processors.common.kafka_app import Inbound, KafkaApp, Outgoing
from tests.integration.test_kafka_app_turns import own_topics, read_outputs  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration
Piece = tuple[str, int]


class Runner:
    """Renders pieces (name, step) after a short pause, keeps each call's pieces; a piece named "bad" fails."""

    def __init__(self) -> None:
        self.calls: list[list[Piece]] = []

    def __call__(self, pieces: Sequence[Piece]) -> list[str]:
        self.calls.append(list(pieces))
        if any(name == "bad" for name, _ in pieces):
            raise ValueError("a piece the engine cannot render")
        time.sleep(0.01)
        return [f"{name}.{step}" for name, step in pieces]


def batched_handler(out_topic: str) -> Callable[[Inbound], Iterator[Outgoing | Shared]]:
    def handle(message: Inbound) -> Iterator[Outgoing | Shared]:
        name, steps = message.value.decode().split(":")
        for step in range(int(steps)):
            piece = Shared((name, step))
            yield piece
            # Each lane's next output is due soon (within the batch horizon), as a busy session's next chunk is,
            # but not so soon that it goes before new work.
            yield Outgoing(out_topic, message.key, piece.result().encode(), due=time.perf_counter() + 0.3)
    return handle


def run_app(settings: Settings, runner: Runner, messages: list[tuple[bytes, bytes]], expected: int,
            late: tuple[bytes, bytes] | None = None) -> tuple[KafkaApp, list[str]]:
    admin = TopicAdmin(settings)
    admin.ensure([(settings.kafka_requests_topic, 1), (settings.kafka_speech_topic, 1)])
    app = KafkaApp(settings, name=f"batching-{uuid.uuid4().hex[:6]}", input_topic=settings.kafka_requests_topic,
                   handler=batched_handler(settings.kafka_speech_topic), admin=admin, batch=runner, max_batch=8)
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    producer = new_producer(settings)
    try:
        assert app.assigned.wait(30)
        for key, value in messages:
            producer.produce(settings.kafka_requests_topic, value, key=key)
        producer.flush(10)
        if late is not None:
            time.sleep(0.15)
            producer.produce(settings.kafka_requests_topic, late[1], key=late[0])
            producer.flush(10)
        outputs = read_outputs(settings, expected)
    finally:
        app.stop()
        thread.join(30)
    return app, outputs


def test_due_sessions_share_runner_calls_and_each_gets_its_outputs_in_order(own_topics: Settings) -> None:  # noqa: F811
    runner = Runner()
    _app, outputs = run_app(own_topics, runner, [(f"s-{n}".encode(), f"{n}:12".encode()) for n in "abc"], 12 * 3 + 2,
                            late=(b"s-d", b"d:2"))
    for name, steps in (("a", 12), ("b", 12), ("c", 12), ("d", 2)):
        assert [o for o in outputs if o.startswith(f"{name}.")] == [f"{name}.{i}" for i in range(steps)]
    assert len(outputs) == len(set(outputs)) == 38, "every output exactly once"
    assert max(len(call) for call in runner.calls) >= 3, "the busy sessions shared calls"
    assert sum(len(call) for call in runner.calls) == 38, "every piece run once"
    (first_of_d,) = [call for call in runner.calls if ("d", 0) in call]
    assert first_of_d == [("d", 0)], "a new session's first piece was not held for a batch"


def test_a_piece_that_fails_fails_only_its_own_message(own_topics: Settings) -> None:  # noqa: F811
    runner = Runner()
    app, outputs = run_app(own_topics, runner, [(b"s-a", b"a:6"), (b"s-bad", b"bad:6"), (b"s-c", b"c:6")], 12)
    assert sorted(outputs) == sorted([f"a.{i}" for i in range(6)] + [f"c.{i}" for i in range(6)])
    assert app.dead_lettered == 1
