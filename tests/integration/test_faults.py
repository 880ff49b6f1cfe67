"""Processes die mid-request (SIGKILL); the client still gets every chunk exactly once, in order."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from infra.broker import free_port
from infra.settings import PROJECT_ROOT
from tests.integration.stack import TEST_FACE_DATA_KEYS, RunningStack, child_pid, isolated_stack
from tests.media import decode_mp4

pytestmark = pytest.mark.integration
LONG_TEXT = ("The first sentence is short. The second one is a little longer, so that the avatar keeps talking. "
             "A third sentence follows it, and then a fourth, to make sure the request spans many chunks.")


@pytest.fixture(scope="module")
def own_stack(database_url: str) -> Iterator[RunningStack]:
    """A stack of its own (own broker): killing its processes must not disturb the other tests."""
    with isolated_stack(database_url) as (_, running):
        yield running


async def recv(ws: websockets.ClientConnection, timeout_s: float = 60) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


async def start_request(ws: websockets.ClientConnection, text: str) -> tuple[str, str]:
    await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
    session_id = (await recv(ws))["session_id"]
    await ws.send(json.dumps({"type": "text_input", "text": text, "language": "en"}))
    accepted = await recv(ws)
    assert accepted["type"] == "request_accepted", accepted
    return session_id, accepted["request_id"]


async def rest_of_request(ws: websockets.ClientConnection, request_id: str) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    while not chunks or not chunks[-1]["is_last"]:
        message = await recv(ws)
        assert message["type"] != "error", message
        if message["type"] == "video_chunk" and message["request_id"] == request_id:
            chunks.append(message)
    return chunks


def assert_exactly_once_in_order(chunks: list[dict[str, Any]]) -> None:
    assert [c["seq"] for c in chunks] == list(range(len(chunks))), "every chunk once, in order"
    assert [c["pts_ms"] for c in chunks[1:]] == [c["pts_ms"] + c["duration_ms"] for c in chunks[:-1]]
    decoded = decode_mp4(b"".join(base64.b64decode(c["data"]) for c in chunks))
    assert decoded.video_frames == sum(c["duration_ms"] for c in chunks) // 40


async def test_lipsync_killed_mid_request_is_restarted_and_the_client_misses_nothing(
        own_stack: RunningStack) -> None:
    async with websockets.connect(own_stack.ws, max_size=1 << 24) as ws:
        _, request_id = await start_request(ws, LONG_TEXT)
        first = await rest_of_request_until(ws, request_id, count=2)
        os.kill(child_pid(own_stack, "processors.lipsync.main"), signal.SIGKILL)
        chunks = first + await rest_of_request(ws, request_id)
    assert_exactly_once_in_order(chunks)


async def rest_of_request_until(ws: websockets.ClientConnection, request_id: str, count: int) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    while len(chunks) < count:
        message = await recv(ws)
        if message["type"] == "video_chunk" and message["request_id"] == request_id:
            chunks.append(message)
    return chunks


async def test_tts_killed_as_a_request_arrives_is_restarted_and_the_request_served_once(
        own_stack: RunningStack) -> None:
    await wait_ready(own_stack)
    async with websockets.connect(own_stack.ws, max_size=1 << 24) as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
        await recv(ws)
        os.kill(child_pid(own_stack, "processors.tts.main"), signal.SIGKILL)
        await ws.send(json.dumps({"type": "text_input", "text": LONG_TEXT, "language": "en"}))
        request_id = (await recv(ws))["request_id"]
        chunks = await rest_of_request(ws, request_id)
    assert_exactly_once_in_order(chunks)


async def test_a_killed_gateway_session_resumes_on_another_gateway(own_stack: RunningStack) -> None:
    await wait_ready(own_stack)
    second_port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=own_stack.bootstrap,
               DATABASE_URL=own_stack.database_url,
               PORT=str(second_port), LOG_LEVEL="WARNING", REGISTER_SAMPLE_AVATAR="false",
               FACE_DATA_KEYS=TEST_FACE_DATA_KEYS)
    second = subprocess.Popen([sys.executable, "-m", "gateway.main"], cwd=PROJECT_ROOT, env=env)
    try:
        await wait_ready(RunningStack(second, second_port, own_stack.bootstrap, own_stack.database_url))
        ws = await websockets.connect(own_stack.ws, max_size=1 << 24)
        session_id, request_id = await start_request(ws, LONG_TEXT)
        received = await rest_of_request_until(ws, request_id, count=2)
        os.kill(child_pid(own_stack, "gateway.main"), signal.SIGKILL)
        received += await chunks_until_closed(ws, request_id, timeout_s=10)
        async with websockets.connect(f"ws://127.0.0.1:{second_port}/ws/stream", max_size=1 << 24) as ws2:
            await ws2.send(json.dumps({"type": "resume", "session_id": session_id,
                                       "cursor": received[-1]["cursor"]}))
            assert (await recv(ws2))["resumed"]
            if not received[-1]["is_last"]:
                received += await rest_of_request(ws2, request_id)
        assert_exactly_once_in_order(received)
    finally:
        second.terminate()
        second.wait(10)


async def chunks_until_closed(ws: websockets.ClientConnection, request_id: str,
                              timeout_s: float) -> list[dict[str, Any]]:
    """The chunks already on their way when the gateway died, read until the connection reports closed.

    A chunk the dead gateway sent before the kill is still delivered from the socket's buffer: it was
    received, so it counts, and the resume cursor is the last one of them.
    """
    chunks: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            message = await recv(ws, timeout_s=max(0.0, deadline - time.monotonic()))
            if message["type"] == "video_chunk" and message["request_id"] == request_id:
                chunks.append(message)
    return chunks


async def wait_ready(stack: RunningStack, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if stack.get("/ready")[0] == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"{stack.http} not ready within {timeout_s} s")
