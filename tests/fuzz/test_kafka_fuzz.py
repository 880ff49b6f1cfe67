"""``avatar.requests`` fuzzed with malformed and hostile messages, produced straight into Kafka as other systems do.

Each ends in ``avatar.dlq`` with a reason (or, when it is a valid request that cannot be served, as an error
on its session's topic); a good request sent afterwards is still served, and the service stays ready.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.kafka import consumer_config
from infra.settings import Settings
from schemas.dlq import DeadLetter
from schemas.session import SessionError, VideoChunkMeta
from tests.integration.stack import RunningStack
from tests.integration.test_end_to_end import read_session_topic

pytestmark = pytest.mark.integration
Outcome = Literal["dlq", "session_error", "served"]


@dataclass(frozen=True)
class Hostile:
    name: str
    value: bytes | None
    expect: Outcome
    session_id: str = ""  # for session_error and served: the session whose topic shows the outcome
    code: str = ""  # for session_error: which one


def request(session_id: str, **fields: object) -> dict[str, object]:
    return {"session_id": session_id, "avatar_id": "sample", "text": "Hello.", "language": "en"} | fields


def as_json(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


def hostile_messages() -> list[Hostile]:
    rng = random.Random(5)
    sid = f"fz-{uuid.uuid4().hex[:8]}"
    dlq: dict[str, bytes | None] = {
        "tombstone": None, "empty": b"", "random bytes": rng.randbytes(300), "not utf-8": b"\xff\xfe\x00\x80",
        "truncated json": b'{"session_id": "s", "text": ', "json array": b"[]", "json null": b"null",
        "json string": b'"hello"', "json number": b"42", "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "deep objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "session id number": as_json(request(sid) | {"session_id": 42}),
        "text is a list": as_json(request(sid, text=["Hello."])),
        "avatar id object": as_json(request(sid, avatar_id={"$ne": None})),
        "schema version 2": as_json(request(sid, schema_version=2)),
        "type audio": as_json(request(sid, type="audio")),
        "language de": as_json(request(sid, language="de")),
        "unknown tts": as_json(request(sid, tts="sam")),
        "voice path": as_json(request(sid, voice="../../voices/x")),
        "no text": as_json({k: v for k, v in request(sid).items() if k != "text"}),
        "no session": as_json({k: v for k, v in request(sid).items() if k != "session_id"}),
        "session traversal": as_json(request("../x")),
        "session slash": as_json(request("a/b")),
        "session empty": as_json(request("")),
        "session too long": as_json(request("s" * 200)),
        "session arabic digits": as_json(request("١٢٣")),
        "session accented": as_json(request("séssion")),
        "session null byte": as_json(request("a\x00b")),
        "avatar traversal": as_json(request(sid, avatar_id="../../etc/passwd")),
        "avatar null byte": as_json(request(sid, avatar_id="sample\x00")),
        "empty text": as_json(request(sid, text="")),
        "huge text": as_json(request(sid, text="x" * 150_000)),
        "request id spaces": as_json(request(sid, request_id="a b c")),
        "lone surrogate": as_json(request(sid, text="\ud800")),
        "json with trailing garbage": as_json(request(sid)) + b"}}}",
    }
    hostile = [Hostile(name, value, "dlq") for name, value in dlq.items()]
    unservable = {
        "unknown avatar": ({"avatar_id": "ghost"}, "unknown_avatar"),
        "avatar dot dot": ({"avatar_id": ".."}, "unknown_avatar"),
        "over the text limit": ({"text": "word " * 1000}, "text_too_long"),
        "nothing to say": ({"text": "🙂🙂🙂"}, "nothing_to_say"),
        "only direction marks": ({"text": "\u200f\u202e\u200b\u2066"}, "nothing_to_say"),
    }
    for name, (fields, code) in unservable.items():
        session_id = f"fz-{uuid.uuid4().hex[:8]}"
        hostile.append(Hostile(name, as_json(request(session_id, **fields)), "session_error", session_id, code))
    odd_but_valid = {"null byte in text": "Hello\x00world.", "combining marks": "Hello" + "\u0301" * 300 + ".",
                     "bidi override": "\u202eHello world.\u202c", "mixed scripts": "Hello سلام 你好 world."}
    for name, text in odd_but_valid.items():
        session_id = f"fz-{uuid.uuid4().hex[:8]}"
        hostile.append(Hostile(name, as_json(request(session_id, text=text)), "served", session_id))
    return hostile


def dead_letters_by_key(settings: Settings, keys: set[bytes], timeout_s: float = 45) -> dict[bytes, DeadLetter]:
    consumer = Consumer(consumer_config(settings, None))
    consumer.assign([TopicPartition(settings.kafka_dlq_topic, 0, 0)])
    found: dict[bytes, DeadLetter] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not keys <= found.keys() and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            key = message.key()
            if key is not None and key in keys:
                found[key] = DeadLetter.from_headers(key, message.value(), message.headers() or [])
    finally:
        consumer.close()
    return found


def test_hostile_requests_are_dead_lettered_or_reported_and_a_good_request_is_still_served(
        stack: RunningStack, settings: Settings) -> None:
    hostile = hostile_messages()
    keys = {f"fuzz-{index}-{uuid.uuid4().hex[:6]}".encode(): case for index, case in enumerate(hostile)}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "message.max.bytes": 8_000_000})
    for key, case in keys.items():
        producer.produce(settings.kafka_requests_topic, case.value, key=key)
    good_session = f"fz-good-{uuid.uuid4().hex[:8]}"
    producer.produce(settings.kafka_requests_topic, as_json(request(good_session, text="Still here.")),
                     key=good_session.encode())
    assert producer.flush(30) == 0

    expected_letters = {key for key, case in keys.items() if case.expect == "dlq"}
    letters = dead_letters_by_key(settings, expected_letters)
    missing = sorted(keys[key].name for key in expected_letters - letters.keys())
    assert not missing, f"not dead-lettered: {missing}"
    for key, letter in letters.items():
        assert letter.reason and letter.processor == "tts", (keys[key].name, letter.reason)
        assert letter.source_topic == settings.kafka_requests_topic
        assert letter.value == (keys[key].value or b""), f"{keys[key].name}: the original bytes, untouched"

    for case in (case for case in hostile if case.expect != "dlq"):
        last = read_session_topic(settings, case.session_id)[-1].meta
        if case.expect == "session_error":
            assert isinstance(last, SessionError) and last.code == case.code, (case.name, last)
        else:
            assert isinstance(last, VideoChunkMeta) and last.is_last, (case.name, last)

    events = read_session_topic(settings, good_session)
    assert isinstance(events[-1].meta, VideoChunkMeta) and events[-1].meta.is_last
    assert all(isinstance(event.meta, VideoChunkMeta) for event in events)
    assert stack.get("/ready")[0] == 200
