"""The TTS processor on a real broker: per-session order across queued requests, errors per request, DLQ."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from infra.broker import EmbeddedBroker, free_port
from infra.kafka import consumer_config, new_producer
from infra.settings import Settings
from processors.tts.text import plan_speech
from schemas.dlq import DeadLetter
from schemas.requests import TextRequest
from schemas.speech import SpeechError, SpeechSegment, parse_speech
from tests.support.tts_processor import tts_processor_running

pytestmark = pytest.mark.integration
TEXTS = [
    "سلام، حال شما چطور است؟ امروز هوا خوب است.",
    "Good morning! The meeting starts at 10:30, please be on time.",
    "قیمت هر دلار امروز ۵۸٬۰۰۰ تومان بود. بازار آرام بود.",
    "من با Python کار می‌کنم. It is fun.",
]


@pytest.fixture(scope="module")
def own_settings() -> Iterator[Settings]:
    """A broker of its own: this processor's consumer group must not rebalance the shared stack's."""
    broker = EmbeddedBroker(free_port()).start()
    yield Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_partitions=3, log_level="WARNING")
    broker.stop()


@pytest.fixture(scope="module")
def processor(own_settings: Settings) -> Iterator[None]:
    with tts_processor_running(own_settings):
        yield


@pytest.fixture
def producer(own_settings: Settings) -> Iterator[Producer]:
    made = new_producer(own_settings)
    yield made
    made.flush(10)
    made.close()


@dataclass(frozen=True)
class Received:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def read_until(settings: Settings, topic: str, done: Callable[[list[Received]], bool],
               timeout_s: float = 30) -> list[Received]:
    """Messages of a topic from the start, across its partitions, until `done` says enough arrived."""
    consumer = Consumer(consumer_config(settings, group_id=None))
    received: list[Received] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not (topic in consumer.list_topics(topic, timeout=10).topics and
                   consumer.list_topics(topic, timeout=10).topics[topic].partitions):
            assert time.monotonic() < deadline, f"{topic} never appeared"
            time.sleep(0.05)
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        while not done(received) and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                received.append(Received(message.key(), message.value() or b"", message_headers(message)))
    finally:
        consumer.close()
    return received


def message_headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    headers = message.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def speech_until(settings: Settings, done: Callable[[list[SpeechSegment]], bool]) -> list[SpeechSegment]:
    def decoded(received: list[Received]) -> list[SpeechSegment]:
        return [m for m in speech_messages(received) if isinstance(m, SpeechSegment)]

    return decoded(read_until(settings, "avatar.speech", lambda received: done(decoded(received))))


def speech_errors_until(settings: Settings, done: Callable[[list[SpeechError]], bool]) -> list[SpeechError]:
    def decoded(received: list[Received]) -> list[SpeechError]:
        return [m for m in speech_messages(received) if isinstance(m, SpeechError)]

    return decoded(read_until(settings, "avatar.speech", lambda received: done(decoded(received))))


def speech_messages(received: list[Received]) -> list[SpeechSegment | SpeechError]:
    return [parse_speech(message.value) for message in received]


def pieces_of(settings: Settings, text: str) -> int:
    return len(plan_speech(text, first_max_chars=settings.tts_first_piece_chars, max_chars=settings.tts_piece_chars))


def send(producer: Producer, request: TextRequest) -> None:
    producer.produce("avatar.requests", request.to_kafka(), key=request.session_id.encode())


def test_queued_requests_of_one_session_come_out_in_order_never_interleaved(
        processor: None, producer: Producer, own_settings: Settings) -> None:
    sessions = [f"order-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    requests = [TextRequest(session_id=sessions[index % 2], avatar_id="sample", text=TEXTS[index // 2 % 4],
                            request_id=f"q{index}-{uuid.uuid4().hex[:6]}") for index in range(8)]
    for text_request in requests:
        send(producer, text_request)
    producer.flush(10)
    expected_total = sum(pieces_of(own_settings, r.text) for r in requests)

    def all_arrived(segments: list[SpeechSegment]) -> bool:
        return sum(s.meta.session_id in sessions for s in segments) >= expected_total

    segments = [s for s in speech_until(own_settings, all_arrived) if s.meta.session_id in sessions]
    assert len(segments) == expected_total
    for session in sessions:
        seen = [(s.meta.request_id, s.meta.segment_index) for s in segments if s.meta.session_id == session]
        order = [r.request_id for r in requests if r.session_id == session]
        assert [request_id for request_id, _ in seen] == sorted(
            (request_id for request_id, _ in seen), key=order.index), "requests stay in the order sent"
        for request_id in order:
            indices = [index for rid, index in seen if rid == request_id]
            assert indices == list(range(len(indices))) and indices, "segments of a request in order, none lost"


def test_a_failing_request_reports_to_its_session_and_the_next_one_is_spoken(
        processor: None, producer: Producer, own_settings: Settings) -> None:
    session = f"fail-{uuid.uuid4().hex[:8]}"
    failing = TextRequest(session_id=session, avatar_id="sample", text="🙂 ... ؟", request_id="bad-1")
    unknown_voice = TextRequest(session_id=session, avatar_id="sample", text="سلام", voice="nobody",
                                request_id="bad-2")
    fine = TextRequest(session_id=session, avatar_id="sample", text="سلام دوست من.", request_id=f"ok-{session}")
    for text_request in (failing, unknown_voice, fine):
        send(producer, text_request)
    producer.flush(10)
    # On the speech topic, like the speech: the lip-sync processor passes errors on to the session.
    errors = speech_errors_until(own_settings, lambda found: sum(e.session_id == session for e in found) >= 2)
    assert [(e.request_id, e.code) for e in errors if e.session_id == session] == [
        ("bad-1", "nothing_to_say"), ("bad-2", "unknown_voice")]
    spoken = speech_until(own_settings, lambda segments: any(
        s.meta.request_id == fine.request_id and s.meta.is_last for s in segments))
    assert [s.meta.segment_index for s in spoken if s.meta.request_id == fine.request_id] == [0]


def test_a_message_that_is_not_a_request_goes_to_the_dead_letter_topic(
        processor: None, producer: Producer, own_settings: Settings) -> None:
    producer.produce("avatar.requests", b'{"text": "no session"}', key=b"dlq-test")
    producer.flush(10)
    letters = read_until(own_settings, "avatar.dlq", lambda received: any(m.key == b"dlq-test" for m in received))
    [letter] = [DeadLetter.from_headers(m.key, m.value, list(m.headers)) for m in letters if m.key == b"dlq-test"]
    assert letter.processor == "tts" and "session_id" in letter.reason
    assert letter.value == b'{"text": "no session"}', "the original bytes, untouched"
