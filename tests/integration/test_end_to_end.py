"""The whole service, started as `make run` starts it: WebSocket and Kafka clients get lip-synced MP4."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Literal

import pytest
import websockets
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.kafka import consumer_config
from infra.settings import Settings
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.engines.espeak import EspeakEngine
from schemas.dlq import DeadLetter
from schemas.requests import TextRequest
from schemas.session import SessionError, SessionEvent, VideoChunkMeta
from schemas.speech import SpeechSegment
from tests.integration.stack import Collected, RunningStack
from tests.media import decode_mp4

pytestmark = pytest.mark.integration
PERSIAN = "سلام، حال شما چطور است؟"


def expected_speech_seconds(text: str, language: Literal["fa", "en"]) -> float:
    core = TtsCore(EspeakEngine(), max_text_chars=10_000)
    request = TextRequest(session_id="x", avatar_id="sample", text=text, language=language)
    segments = [s for s in core.handle(request) if isinstance(s, SpeechSegment)]
    return sum(segment.meta.sample_count for segment in segments) / OUTPUT_RATE


async def receive_until_last(ws: websockets.ClientConnection, started: float, timeout_s: float = 30) -> Collected:
    collected = Collected()
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "error":
                raise AssertionError(f"server error: {message}")
            if message["type"] != "video_chunk":
                continue
            if collected.first_chunk_s is None:
                collected.first_chunk_s = time.perf_counter() - started
            collected.chunks.append(message)
            if message["is_last"]:
                return collected


async def say(ws: websockets.ClientConnection, text: str, language: str | None) -> Collected:
    payload = {"type": "text_input", "text": text} | ({"language": language} if language else {})
    started = time.perf_counter()
    await ws.send(json.dumps(payload, ensure_ascii=False))
    accepted = json.loads(await ws.recv())
    assert accepted["type"] == "request_accepted", accepted
    return await receive_until_last(ws, started)


async def select(ws: websockets.ClientConnection, avatar_id: str = "sample") -> dict:
    await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": avatar_id}))
    return json.loads(await ws.recv())


def test_health_is_ok_and_ready_lists_nothing_missing(stack: RunningStack) -> None:
    assert stack.get("/health") == (200, {"status": "ok"})
    status, body = stack.get("/ready")
    assert status == 200 and body["missing"] == []
    assert body["processors"]["lipsync"] == ["embedded"] and body["processors"]["tts"] == ["espeak"]


async def test_persian_sentence_streams_one_valid_mp4_of_the_speech_duration(stack: RunningStack) -> None:
    async with websockets.connect(stack.ws, max_size=16 * 1024 * 1024) as ws:
        ready = await select(ws)
        assert ready["type"] == "session_ready" and ready["session_id"]
        collected = await say(ws, PERSIAN, "fa")
    seqs = [c["seq"] for c in collected.chunks]
    assert seqs == list(range(len(seqs))), "chunks arrive in seq order, none missing"
    assert collected.first_chunk_s is not None and collected.first_chunk_s < 1.0
    assert all(c["mime"].startswith('video/mp4; codecs="avc1.') for c in collected.chunks)
    assert [c["pts_ms"] for c in collected.chunks[1:]] == [
        c["pts_ms"] + c["duration_ms"] for c in collected.chunks[:-1]], "chunks tile the timeline"
    decoded = decode_mp4(collected.mp4)
    expected = expected_speech_seconds(PERSIAN, "fa")
    assert decoded.video_codec == "h264" and decoded.audio_codec == "aac"
    assert decoded.video_duration_s == pytest.approx(expected, rel=0.10)
    assert decoded.audio_duration_s == pytest.approx(expected, rel=0.10)
    assert sum(c["duration_ms"] for c in collected.chunks) / 1000 == pytest.approx(expected, rel=0.10)


def read_metrics(stack: RunningStack) -> str:
    import urllib.request

    with urllib.request.urlopen(stack.http + "/metrics", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/plain")
        return str(response.read().decode())


def test_metrics_report_latency_and_the_processors_stages_in_prometheus_format(stack: RunningStack) -> None:
    body = read_metrics(stack)
    count = next(line for line in body.splitlines() if line.startswith("avatar_first_chunk_seconds_count"))
    assert float(count.split()[-1]) >= 1, "the Persian request above was measured"
    assert "avatar_ws_connections" in body and "avatar_requests_total" in body
    deadline = time.monotonic() + 10
    while 'stage="render"' not in body:  # processors report with their heartbeat, every 2 s
        assert time.monotonic() < deadline, "the lip-sync processor's stage timings reach /metrics"
        time.sleep(0.5)
        body = read_metrics(stack)
    assert 'avatar_processor_messages_total{instance=' in body or 'avatar_processor_messages_total{' in body
    assert 'service="tts"' in body and 'service="lipsync"' in body and "avatar_model_load_seconds" in body
    assert "avatar_processor_queue_lag_seconds_bucket" in body and "avatar_cache_hit_ratio" in body


async def test_bad_messages_get_errors_and_the_connection_stays_usable(stack: RunningStack) -> None:
    async with websockets.connect(stack.ws, max_size=16 * 1024 * 1024) as ws:
        async def error_for(raw: str) -> str:
            await ws.send(raw)
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["message"], reply
            return str(reply["code"])

        assert await error_for("{oops") == "invalid_json"
        assert await error_for('{"type":"sing"}') == "unknown_type"
        assert await error_for('{"type":"text_input","text":"hello"}') == "no_avatar_selected"
        assert await error_for('{"type":"avatar_selection","avatar_id":"nobody"}') == "unknown_avatar"
        assert (await select(ws))["type"] == "session_ready"
        assert await error_for('{"type":"text_input","text":"   "}') == "empty_text"
        assert await error_for(json.dumps({"type": "text_input", "text": "a" * 5000})) == "text_too_long"
        assert await error_for('{"type":"text_input","text":"hallo","language":"de"}') == "unsupported_language"
        collected = await say(ws, "Hello there.", "en")
        assert collected.chunks[-1]["is_last"]
        assert decode_mp4(collected.mp4).video_frames > 0


def read_session_topic(settings: Settings, session_id: str, timeout_s: float = 30) -> list[SessionEvent]:
    consumer = Consumer(consumer_config(settings, None))
    topic = settings.session_topic(session_id)
    events: list[SessionEvent] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and topic not in consumer.list_topics(timeout=5).topics:
            time.sleep(0.05)
        consumer.assign([TopicPartition(topic, 0, 0)])
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            event = SessionEvent.from_kafka(message.value() or b"")
            headers = dict(message.headers() or [])
            assert headers.get("session_id") == session_id.encode(), "ids travel in Kafka headers, hop to hop"
            assert headers.get("request_id"), "ids travel in Kafka headers, hop to hop"
            events.append(event)
            if not isinstance(event.meta, VideoChunkMeta) or event.meta.is_last:
                return events
    finally:
        consumer.close()
    raise AssertionError(f"no final chunk on {topic} within {timeout_s} s; got {len(events)} events")


def find_dead_letter(settings: Settings, original: bytes, timeout_s: float = 20) -> DeadLetter | None:
    """The dead letter holding exactly ``original`` (other tests dead-letter messages on this broker too)."""
    consumer = Consumer(consumer_config(settings, None))
    consumer.assign([TopicPartition(settings.kafka_dlq_topic, 0, 0)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error() and message.value() == original:
                return DeadLetter.from_headers(message.key(), message.value(), message.headers() or [])
    finally:
        consumer.close()
    return None


def test_other_systems_produce_into_kafka_and_bad_messages_are_dead_lettered(
        stack: RunningStack, settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    session_id = f"ext-{uuid.uuid4().hex[:8]}"
    broken = b'{"session_id": "' + session_id.encode() + b'", "text": '
    producer.produce(settings.kafka_requests_topic, broken, key=session_id.encode())
    good = {"session_id": session_id, "avatar_id": "sample", "text": "Good morning.", "language": "en"}
    producer.produce(settings.kafka_requests_topic, json.dumps(good).encode(), key=session_id.encode())
    producer.flush(10)

    events = read_session_topic(settings, session_id)
    chunks = [e for e in events if isinstance(e.meta, VideoChunkMeta)]
    assert chunks and chunks[-1].meta.is_last  # type: ignore[union-attr]
    assert decode_mp4(b"".join(e.payload for e in chunks)).video_frames > 0

    letter = find_dead_letter(settings, broken)
    assert letter is not None, "the malformed message is in avatar.dlq with its original bytes"
    assert letter.source_topic == settings.kafka_requests_topic
    assert "not a valid avatar.requests v1 message" in letter.reason and letter.processor == "tts"


def test_unknown_avatar_in_a_kafka_request_is_reported_on_the_session_topic(
        stack: RunningStack, settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    session_id = f"ext-{uuid.uuid4().hex[:8]}"
    request = {"session_id": session_id, "avatar_id": "ghost", "text": "Hello.", "language": "en"}
    producer.produce(settings.kafka_requests_topic, json.dumps(request).encode(), key=session_id.encode())
    producer.flush(10)
    events = read_session_topic(settings, session_id)
    last = events[-1].meta
    assert isinstance(last, SessionError) and last.code == "unknown_avatar"
