"""The session protocol over a real WebSocket: ping, interrupt, queueing, and resume without duplicates."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
import websockets

from tests.integration.stack import RunningStack
from tests.media import decode_mp4

pytestmark = pytest.mark.integration
LONG_ENGLISH = ("This is a long sentence that keeps the avatar talking for quite a while, so that there is time "
                "to interrupt it. It goes on and on, with more words, and more clauses, and even more words.")
Connection = websockets.ClientConnection


async def connect(stack: RunningStack) -> Connection:
    return await websockets.connect(stack.ws, max_size=16 * 1024 * 1024)


async def recv(ws: Connection, timeout_s: float = 20) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


async def send(ws: Connection, **message: Any) -> None:
    await ws.send(json.dumps(message, ensure_ascii=False))


async def select_sample(ws: Connection) -> str:
    await send(ws, type="avatar_selection", avatar_id="sample")
    ready = await recv(ws)
    assert ready["type"] == "session_ready", ready
    return str(ready["session_id"])


async def chunks_until_last(ws: Connection, request_id: str) -> list[dict[str, Any]]:
    chunks = []
    while True:
        message = await recv(ws)
        if message["type"] == "video_chunk" and message["request_id"] == request_id:
            chunks.append(message)
            if message["is_last"]:
                return chunks


async def test_ping_gets_pong(stack: RunningStack) -> None:
    async with await connect(stack) as ws:
        await send(ws, type="ping")
        pong = await recv(ws)
        assert pong["type"] == "pong" and abs(pong["ts_ms"] - time.time() * 1000) < 5000


async def test_interrupt_stops_the_request_and_the_session_goes_on(stack: RunningStack) -> None:
    async with await connect(stack) as ws:
        await select_sample(ws)
        await send(ws, type="text_input", text=LONG_ENGLISH, language="en")
        request_id = (await recv(ws))["request_id"]
        first = await recv(ws)
        assert first["type"] == "video_chunk" and first["request_id"] == request_id
        sent_at = time.perf_counter()
        await send(ws, type="interrupt")
        last_of_interrupted = sent_at
        while True:
            message = await recv(ws)
            if message["type"] == "interrupted":
                assert message["request_ids"] == [request_id]
                break
            assert message.get("request_id") == request_id
            last_of_interrupted = time.perf_counter()
        assert last_of_interrupted - sent_at <= 0.15, "no chunk of an interrupted request after 150 ms"

        await send(ws, type="text_input", text="Still here.", language="en")
        accepted = await recv(ws)
        assert accepted["type"] == "request_accepted" and accepted["queued_behind"] == 0
        chunks = await chunks_until_last(ws, accepted["request_id"])
        assert decode_mp4(b"".join(base64.b64decode(c["data"]) for c in chunks)).video_frames > 0
        with pytest.raises(asyncio.TimeoutError):  # and nothing of the interrupted request ever follows
            while True:
                message = await recv(ws, timeout_s=1.0)
                assert message.get("request_id") != request_id


async def test_queued_requests_play_in_order(stack: RunningStack) -> None:
    async with await connect(stack) as ws:
        await select_sample(ws)
        await send(ws, type="text_input", text="First one.", language="en")
        await send(ws, type="text_input", text="Second one.", language="en")
        order: list[str] = []
        accepted: list[dict[str, Any]] = []
        while len(order) < 2:
            message = await recv(ws)
            if message["type"] == "request_accepted":
                accepted.append(message)
            elif message["type"] == "video_chunk" and message["is_last"]:
                order.append(message["request_id"])
        assert [a["queued_behind"] for a in accepted] == [0, 1]
        assert order == [a["request_id"] for a in accepted]


async def test_resume_by_cursor_delivers_every_missed_chunk_exactly_once(stack: RunningStack) -> None:
    ws = await connect(stack)
    session_id = await select_sample(ws)
    await send(ws, type="text_input", text=LONG_ENGLISH, language="en")
    request_id = (await recv(ws))["request_id"]
    received = [await recv(ws), await recv(ws)]
    await ws.close()  # the connection drops mid-request
    async with await connect(stack) as ws2:
        await send(ws2, type="resume", session_id=session_id, cursor=received[-1]["cursor"])
        ready = await recv(ws2)
        assert ready["type"] == "session_ready" and ready["resumed"] and ready["session_id"] == session_id
        received += await chunks_until_last(ws2, request_id)
    seqs = [c["seq"] for c in received]
    assert seqs == list(range(len(seqs))), "no gap and no duplicate"
    assert decode_mp4(b"".join(base64.b64decode(c["data"]) for c in received)).video_frames > 0


async def test_resume_by_last_seq_skips_what_the_client_has(stack: RunningStack) -> None:
    ws = await connect(stack)
    session_id = await select_sample(ws)
    await send(ws, type="text_input", text="Good evening to you all.", language="en")
    request_id = (await recv(ws))["request_id"]
    first = await recv(ws)
    await ws.close()
    async with await connect(stack) as ws2:
        await send(ws2, type="resume", session_id=session_id, request_id=request_id, seq=first["seq"])
        assert (await recv(ws2))["resumed"]
        rest = await chunks_until_last(ws2, request_id)
    assert [c["seq"] for c in rest] == list(range(1, len(rest) + 1))


async def test_resuming_an_unknown_session_is_an_error(stack: RunningStack) -> None:
    async with await connect(stack) as ws:
        await send(ws, type="resume", session_id="no-such-session", cursor=3)
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "unknown_session"


async def test_a_text_input_rate_speeds_the_speech_and_an_out_of_range_one_is_invalid_rate(
        stack: RunningStack) -> None:
    async with await connect(stack) as ws:
        await select_sample(ws)
        await send(ws, type="text_input", text="سلام، حال شما چطور است؟", rate=2.5)
        refused = await recv(ws)
        assert refused["type"] == "error" and refused["code"] == "invalid_rate", refused
        lengths = {}
        for rate in (1.0, 1.8):
            await send(ws, type="text_input", text="سلام، حال شما چطور است؟", rate=rate)
            accepted = await recv(ws)
            assert accepted["type"] == "request_accepted", accepted
            chunks = await chunks_until_last(ws, accepted["request_id"])
            lengths[rate] = chunks[-1]["pts_ms"] + chunks[-1]["duration_ms"]
        assert lengths[1.8] < 0.8 * lengths[1.0], lengths
