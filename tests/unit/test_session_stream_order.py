"""A session topic's new listener hears only its own assignment: a record of the previous one never reaches it."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from consumers.session_stream import SessionStreamConsumer
from infra.settings import Settings


@dataclass
class PolledRecord:
    """What the consumer's poll() returns, as much of it as the stream reads."""

    name: str
    at: int

    def topic(self) -> str:
        return self.name

    def offset(self) -> int:
        return self.at

    def value(self) -> bytes:
        return b"chunk"

    def error(self) -> None:
        return None


@dataclass
class AssignmentLog:
    """Stands in for librdkafka's consumer in the stream's assignment calls, keeping what was assigned."""

    assigned: list[TopicPartition] = field(default_factory=list)

    def assignment(self) -> list[TopicPartition]:
        return self.assigned

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned += partitions

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        gone = {p.topic for p in partitions}
        self.assigned = [p for p in self.assigned if p.topic not in gone]

    def list_topics(self, _topic: str, timeout: float) -> None:
        return None


def stream() -> SessionStreamConsumer:
    consumer = SessionStreamConsumer(Settings(_env_file=None, kafka_bootstrap_servers="127.0.0.1:9"))
    consumer.consumer.close()  # never polled here: the assignment calls go to the log instead
    consumer.consumer = AssignmentLog()  # type: ignore[assignment]
    return consumer


def test_a_resumed_listener_gets_nothing_of_the_old_position_before_its_own_start() -> None:
    consumer, first, resumed = stream(), [], []
    consumer.listen("t", lambda record: first.append(record.offset), 0)
    consumer._apply_changes()
    consumer._dispatch(PolledRecord("t", 0))  # type: ignore[arg-type]
    consumer.forget("t")  # the connection drops …
    consumer.listen("t", lambda record: resumed.append(record.offset), 0)  # … and the session is resumed at once
    consumer._dispatch(PolledRecord("t", 1))  # type: ignore[arg-type]  # polled before the resume took effect
    consumer._apply_changes()
    for offset in (0, 1, 2):
        consumer._dispatch(PolledRecord("t", offset))  # type: ignore[arg-type]
    assert first == [0] and resumed == [0, 1, 2], "from its own start, in order"
    assert [(p.topic, p.offset) for p in consumer.consumer.assignment()] == [("t", 0)]


def test_a_forgotten_topic_is_heard_by_nobody() -> None:
    consumer, heard = stream(), []
    consumer.listen("t", lambda record: heard.append(record), 0)
    consumer._apply_changes()
    consumer.forget("t")
    consumer._dispatch(PolledRecord("t", 3))  # type: ignore[arg-type]
    consumer._apply_changes()
    assert heard == [] and consumer.consumer.assignment() == []
