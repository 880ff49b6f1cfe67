"""The broker stops answering for OUTAGE_S mid-session: /ready says so, nothing is silently lost, and the
session recovers without restarting anything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from infra.broker import EmbeddedBroker, free_port
from tests.integration.stack import RunningStack, isolated_stack, start_stack, stop_stack

pytestmark = pytest.mark.integration
# Over twice the consumer session timeout the tests run with (KAFKA_SESSION_TIMEOUT_MS=2000, tests/conftest.py):
# every group member misses its heartbeats and the groups form again afterwards, a real outage and a real recovery.
OUTAGE_S = 5.0


@pytest.fixture(scope="module")
def paused_broker_stack(database_url: str) -> Iterator[tuple[RunningStack, EmbeddedBroker]]:
    with isolated_stack(database_url) as (broker, running):
        yield running, broker


async def next_outcome(ws: websockets.ClientConnection, timeout_s: float) -> dict[str, Any]:
    """The request's end: its last chunk, or an error naming it."""
    async with asyncio.timeout(timeout_s):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == "error" or (message["type"] == "video_chunk" and message["is_last"]):
                return message


async def test_a_broker_outage_delays_or_fails_requests_but_loses_none(
        paused_broker_stack: tuple[RunningStack, EmbeddedBroker]) -> None:
    stack, broker = paused_broker_stack
    assert broker.process is not None
    async with websockets.connect(stack.ws, max_size=1 << 24) as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
        assert json.loads(await ws.recv())["type"] == "session_ready"

        os.kill(broker.process.pid, signal.SIGSTOP)  # the broker hangs: no answers, no data lost
        try:
            await asyncio.sleep(1)
            status, body = await asyncio.to_thread(stack.get, "/ready")
            assert status == 503 and "broker" in body["missing"]
            sent_at = time.monotonic()
            await ws.send(json.dumps({"type": "text_input", "text": "Said while the broker is away.",
                                      "language": "en"}))
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - sent_at)))
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)

        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply["type"] == "request_accepted":  # queued through the outage: it must now be served
            outcome = await next_outcome(ws, 60)
            assert outcome["type"] == "video_chunk", outcome
        else:  # or refused with a clear error, never silence
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply

        deadline = time.monotonic() + 60
        while (await asyncio.to_thread(stack.get, "/ready"))[0] != 200:
            assert time.monotonic() < deadline, "everything recovers without a restart"
            await asyncio.sleep(0.5)
        await ws.send(json.dumps({"type": "text_input", "text": "And after it.", "language": "en"}))
        assert json.loads(await ws.recv())["type"] == "request_accepted"
        outcome = await next_outcome(ws, 60)
        assert outcome["type"] == "video_chunk", outcome


async def test_services_started_before_the_broker_wait_for_it_and_then_serve(database_url: str) -> None:
    port = free_port()
    starting = asyncio.create_task(asyncio.to_thread(start_stack, f"127.0.0.1:{port}", database_url, free_port()))
    await asyncio.sleep(5)  # every service is up and waiting: nothing has crashed, nothing is ready
    assert not starting.done()
    broker = EmbeddedBroker(port).start()
    try:
        stack = await asyncio.wait_for(starting, 120)
        try:
            async with websockets.connect(stack.ws, max_size=1 << 24) as ws:
                await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
                assert json.loads(await ws.recv())["type"] == "session_ready"
                await ws.send(json.dumps({"type": "text_input", "text": "Late but here.", "language": "en"}))
                assert json.loads(await ws.recv())["type"] == "request_accepted"
                assert (await next_outcome(ws, 60))["type"] == "video_chunk"
        finally:
            stop_stack(stack)
    finally:
        broker.stop()
