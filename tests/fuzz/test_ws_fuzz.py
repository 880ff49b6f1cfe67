"""The WebSocket protocol fuzzed: random and mutated messages, huge and deep frames, binary frames, floods.

Each message gets an answer, or the connection closes with a clean code; a session speaking at the same time
on the same gateway still receives every chunk; the gateway stays ready.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets

from tests.integration.stack import RunningStack

pytestmark = pytest.mark.integration
Connection = websockets.ClientConnection
# 1000 normal, 1001 going away, 1008 policy, 1009 too big, 4008 client too slow, 4401/4429 auth/rate limit.
CLEAN_CLOSE_CODES = {1000, 1001, 1008, 1009, 4008, 4401, 4429}
ANSWERS = {"error", "session_ready", "request_accepted", "interrupted", "pong"}
VALID: list[dict[str, Any]] = [
    {"type": "avatar_selection", "avatar_id": "sample"},
    {"type": "text_input", "text": "Hi.", "language": "en"},
    {"type": "interrupt"},
    {"type": "resume", "session_id": "no-such-session", "cursor": 0, "request_id": "r1", "seq": 0},
    {"type": "ping"},
]
HOSTILE_VALUES: list[Any] = [
    None, 0, -1, 2**70, -(2**70), 1e308, True, [], {}, ["sample"], {"$gt": ""}, "", " ", "x" * 100_000,
    "\x00", "a\x00b", "\ud800", "../x", "../../etc/passwd", "🙂" * 50, "\u202e\u200f", "sample\n", "SAMPLE",
    "'; DROP TABLE avatars;--", "%s%s%n", "ه" * 3000,
]


def mutants(seed: int = 7) -> Iterator[dict[str, Any]]:
    """Every valid message with each field removed, each field set to each hostile value, and extras added."""
    rng = random.Random(seed)
    for message in VALID:
        for name in message:
            yield {key: value for key, value in message.items() if key != name}
            for value in HOSTILE_VALUES:
                yield message | {name: value}
        yield message | {"extra": "x" * 10_000, "type2": rng.choice(HOSTILE_VALUES)}
    for _ in range(40):  # a random type with random fields
        yield {"type": rng.choice([*(m["type"] for m in VALID), "sing", ""]),
               **{rng.choice(["avatar_id", "text", "session_id", "cursor", "seq", "z"]): rng.choice(HOSTILE_VALUES)
                  for _ in range(rng.randint(0, 4))}}


def raw_frames() -> list[str | bytes]:
    """Frames no mutation of a valid message produces."""
    deep = '{"type":"ping","x":' + "[" * 50_000 + "]" * 50_000 + "}"
    deep_objects = '{"a":' * 20_000 + "1" + "}" * 20_000
    return ["", "{", "}", "null", "[]", "42", '"text"', "{oops", "\x00", deep, deep_objects,
            '{"type":' + '"x"' * 10 + "}", '{"type":"ping"}' * 3, b"", b"\x00\x01\x02", b'{"type":"ping"}',
            bytes(range(256)), "🙂" * 100_000, '{"type": "ping", "type": "text_input"}']


@dataclass
class FuzzRun:
    """What the fuzzing connection saw: answers by type, clean closes by code, and anything unclean."""

    answers: dict[str, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    closes: dict[int, int] = field(default_factory=dict)
    unclean: list[str] = field(default_factory=list)
    connections: int = 0


async def open_connection(stack: RunningStack, run: FuzzRun, select: bool) -> Connection:
    ws = await websockets.connect(stack.ws, max_size=None, open_timeout=10)
    run.connections += 1
    if select:
        await ws.send(json.dumps(VALID[0]))
        assert (await answer(ws))["type"] == "session_ready"
    return ws


async def answer(ws: Connection, timeout_s: float = 10) -> dict[str, Any]:
    """The next direct answer, skipping the pipeline's messages about accepted requests (chunks, their errors)."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if (message.get("type") in ANSWERS and "request_id" not in message) or message.get("type") in (
                    "request_accepted", "interrupted"):
                return dict(message)


async def exchange(ws: Connection, frame: str | bytes, run: FuzzRun) -> bool:
    """Send one frame; True while the connection is still open afterwards."""
    label = repr(frame[:80])
    try:
        await ws.send(frame)
        reply = await answer(ws)
    except websockets.ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
        if code in CLEAN_CLOSE_CODES:
            run.closes[code] = run.closes.get(code, 0) + 1
        else:
            run.unclean.append(f"{label}: closed with {code} {closed.rcvd.reason if closed.rcvd else ''}")
        return False
    except TimeoutError:
        run.unclean.append(f"{label}: no answer within 10 s")
        return False
    run.answers[reply["type"]] = run.answers.get(reply["type"], 0) + 1
    if reply["type"] == "error":
        run.error_codes[reply.get("code", "")] = run.error_codes.get(reply.get("code", ""), 0) + 1
        if not (reply.get("code") and reply.get("message")) or reply["code"] == "internal_error":
            run.unclean.append(f"{label}: {reply}")
    if reply["type"] == "request_accepted":  # keep the pipeline's work small: stop what the mutant started
        await ws.send(json.dumps({"type": "interrupt"}))
        await answer(ws)
    return True


async def fuzz(stack: RunningStack, frames: Sequence[str | bytes], run: FuzzRun, select: bool) -> None:
    ws = await open_connection(stack, run, select)
    try:
        for frame in frames:
            if not await exchange(ws, frame, run):
                ws = await open_connection(stack, run, select)
    finally:
        await ws.close()


async def speak_and_collect(stack: RunningStack, text: str) -> list[dict[str, Any]]:
    """A well-behaved client: its chunks, in order, until the last one (fails on any error)."""
    async with websockets.connect(stack.ws, max_size=None) as ws:
        await ws.send(json.dumps(VALID[0]))
        assert (await answer(ws))["type"] == "session_ready"
        await ws.send(json.dumps({"type": "text_input", "text": text, "language": "en"}))
        chunks: list[dict[str, Any]] = []
        async with asyncio.timeout(90):
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] != "error", message
                if message["type"] == "video_chunk":
                    chunks.append(message)
                    if message["is_last"]:
                        return chunks


def assert_complete(chunks: list[dict[str, Any]]) -> None:
    assert [c["seq"] for c in chunks] == list(range(len(chunks))), "every chunk, once, in order"
    assert chunks[-1]["is_last"]


async def test_mutated_and_raw_messages_get_answers_or_clean_closes_and_another_session_is_unaffected(
        stack: RunningStack) -> None:
    run = FuzzRun()
    frames: list[str | bytes] = [json.dumps(m) for m in mutants()] + raw_frames() + ["x" * (2 * 1024 * 1024)]
    bystander = asyncio.create_task(speak_and_collect(stack, "The quick brown fox jumps over the lazy dog."))
    await fuzz(stack, frames, run, select=True)
    assert not run.unclean, "\n".join(run.unclean[:20])
    assert run.answers.get("error", 0) > 100 and run.closes.get(1009) == 1, run  # the 2 MB frame: too big
    assert {"invalid_json", "invalid_message", "unknown_type", "missing_audio_header", "unknown_avatar",
            "empty_text", "text_too_long", "unsupported_language", "unknown_session"} <= run.error_codes.keys(), run
    assert run.connections <= 10, f"{run.connections} connections: handlers were dropped far more than expected"
    assert_complete(await bystander)


async def test_mutants_before_any_selection_are_answered_one_by_one(stack: RunningStack) -> None:
    run = FuzzRun()
    await fuzz(stack, [json.dumps(m) for m in mutants(seed=11)], run, select=False)
    assert not run.unclean, "\n".join(run.unclean[:20])
    assert run.connections == 1, f"the connection was closed {run.connections - 1} times: {run.closes}"


async def test_a_flood_of_500_messages_is_answered_in_full_and_another_session_is_unaffected(
        stack: RunningStack) -> None:
    bystander = asyncio.create_task(speak_and_collect(stack, "Floods do not stop me."))
    flood: list[str | bytes] = [json.dumps({"type": "ping"}), "{oops", b"\x01", json.dumps({"type": "interrupt"}),
                                json.dumps({"type": "text_input", "text": "no avatar yet"})]
    async with websockets.connect(stack.ws, max_size=None) as ws:
        for index in range(500):
            await ws.send(flood[index % len(flood)])
        replies = [await answer(ws, timeout_s=20) for _ in range(500)]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await answer(ws))["type"] == "pong", "the connection is still usable after the flood"
    assert [r["type"] for r in replies].count("pong") == 100
    assert {r["code"] for r in replies if r["type"] == "error"} == {
        "invalid_json", "no_avatar_selected", "no_session", "missing_audio_header"}
    assert_complete(await bystander)
    assert stack.get("/ready")[0] == 200


async def test_resuming_a_real_session_with_hostile_cursors_is_answered(stack: RunningStack) -> None:
    async with websockets.connect(stack.ws, max_size=None) as ws:
        await ws.send(json.dumps(VALID[0]))
        session_id = (await answer(ws))["session_id"]
    run = FuzzRun()
    resumes = [json.dumps({"type": "resume", "session_id": session_id} | fields) for fields in (
        {"cursor": 2**63}, {"cursor": 2**70}, {"cursor": -1}, {"cursor": -2}, {"cursor": 1.5}, {"cursor": "0"},
        {"request_id": "r", "seq": 2**70}, {"request_id": "r" * 200, "seq": 0}, {"seq": -5}, {"cursor": None})]
    await fuzz(stack, resumes, run, select=False)
    assert not run.unclean, "\n".join(run.unclean)
    assert run.connections == 1 and run.answers.get("session_ready", 0) >= 1, run
