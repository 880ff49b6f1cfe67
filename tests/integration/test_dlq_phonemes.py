"""On a real broker, a speech segment whose phoneme timings are malformed goes to ``avatar.dlq`` with the reason.

The lip-sync processor is the real one (its Kafka adapter and its ``handle``), on a broker of its own so its
consumer group never rebalances the shared stack's; it never reaches the database, because the message is
refused when it is parsed.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.broker import EmbeddedBroker, free_port
from infra.kafka import consumer_config, new_producer
from infra.settings import Settings
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.main import LipSyncProcessor
from schemas import envelope
from schemas.dlq import DeadLetter
from schemas.speech import SpeechSegment, SpeechSegmentMeta

pytestmark = pytest.mark.integration
SAMPLES = 882 * 5


class NoAvatars:
    """The avatar store of a processor that must never need one (every message here is refused first)."""

    def load_face_data(self, avatar_id: str) -> object:
        raise AssertionError(f"a malformed segment reached the avatar store ({avatar_id})")


@pytest.fixture(scope="module")
def own_settings() -> Iterator[Settings]:
    broker = EmbeddedBroker(free_port()).start()
    yield Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_partitions=1, log_level="WARNING")
    broker.stop()


@pytest.fixture(scope="module")
def lipsync(own_settings: Settings) -> Iterator[None]:
    running: LipSyncProcessor | None = LipSyncProcessor(own_settings, EmbeddedEngine(), NoAvatars())  # type: ignore[arg-type]
    assert running is not None
    running.app.admin.ensure_pipeline_topics()
    thread: threading.Thread | None = running.app.start_in_thread()
    assert thread is not None and running.app.assigned.wait(30), "the processor never got its partitions"
    yield
    running.app.stop()
    thread.join(15)
    running = thread = None  # its Kafka clients go before the broker does
    gc.collect()


def segment_with(phonemes: object, *, schema_version: int = 3) -> bytes:
    """A valid v3 segment whose metadata's ``phonemes`` is replaced by ``phonemes`` as raw JSON."""
    meta = SpeechSegmentMeta(request_id=f"r-{uuid.uuid4().hex[:8]}", session_id=f"s-{uuid.uuid4().hex[:8]}",
                             avatar_id="sample", segment_index=0, is_last=True, text="Bob.", spoken="Bob.",
                             language="en", sample_rate=22050, sample_count=SAMPLES, start_ms=0)
    fields = json.loads(meta.model_dump_json(exclude_none=True)) | {"schema_version": schema_version,
                                                                    "phonemes": phonemes}
    return envelope.pack(json.dumps(fields, ensure_ascii=False).encode(), b"\x00\x00" * SAMPLES)


def dead_letters(settings: Settings, values: set[bytes], timeout_s: float = 30) -> dict[bytes, DeadLetter]:
    """The dead letters holding exactly these original messages."""
    consumer = Consumer(consumer_config(settings, None))
    consumer.assign([TopicPartition(settings.kafka_dlq_topic, 0, 0)])
    found: dict[bytes, DeadLetter] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not values <= found.keys() and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error() and message.value() in values:
                found[message.value() or b""] = DeadLetter.from_headers(message.key(), message.value(),
                                                                         message.headers() or [])
    finally:
        consumer.close()
    return found


MALFORMED: dict[str, tuple[object, str]] = {
    "offsets going back": ([[0, "b"], [900, "ɑː"], [400, "b"], [SAMPLES, "_"]], "must not decrease"),
    "an offset past the audio": ([[0, "b"], [SAMPLES + 1, "_"]], "past the segment"),
    "a negative offset": ([[-5, "b"]], "greater than or equal to 0"),
    "an empty name": ([[0, ""]], "at least 1 character"),
    "a name too long": ([[0, "b" * 17]], "at most 16 characters"),
    "not pairs": ([[0]], "phonemes.0"),
    "an offset that is text": ([["10", "b"]], "valid integer"),
    "too many marks": ([[0, "b"]] * 16_385, "at most 16384 items"),
}


def test_malformed_phoneme_timings_are_dead_lettered_with_the_reason(lipsync: None, own_settings: Settings) -> None:
    sent = {name: segment_with(phonemes) for name, (phonemes, _) in MALFORMED.items()}
    sent["timings on a v2 segment"] = segment_with([[0, "b"]], schema_version=2)
    producer = new_producer(own_settings)
    for value in sent.values():
        producer.produce(own_settings.kafka_speech_topic, value, key=b"session")
    producer.flush(10)

    letters = dead_letters(own_settings, set(sent.values()))

    for name, value in sent.items():
        letter = letters.get(value)
        assert letter is not None, f"{name}: not in avatar.dlq"
        assert letter.processor == "lipsync" and letter.source_topic == own_settings.kafka_speech_topic
        expected = MALFORMED[name][1] if name in MALFORMED else "schema_version 3"
        assert "phonemes" in letter.reason and expected in letter.reason, (name, letter.reason)


def test_a_well_formed_v3_segment_is_not_dead_lettered_for_its_timings(own_settings: Settings) -> None:
    value = segment_with([[0, "b"], [900, "ɑː"], [2000, "b"], [SAMPLES, "_"]])
    assert SpeechSegment.from_kafka(value).meta.phonemes == [(0, "b"), (900, "ɑː"), (2000, "b"), (SAMPLES, "_")]
