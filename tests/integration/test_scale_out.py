"""Two lip-sync workers share the sessions through their consumer group; when one leaves mid-request, the
rebalance hands its sessions to the other and no client misses or repeats a chunk."""

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

from infra.settings import PROJECT_ROOT
from tests.integration.stack import TEST_FACE_DATA_KEYS, RunningStack, isolated_stack
from tests.media import decode_mp4

pytestmark = pytest.mark.integration
SESSIONS = 6
TEXT = "Each of us speaks two sentences here. The second one keeps the worker busy for a while longer."


@pytest.fixture(scope="module")
def two_worker_stack(database_url: str) -> Iterator[tuple[RunningStack, subprocess.Popen[bytes]]]:
    with isolated_stack(database_url) as (broker, running):
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, DATABASE_URL=database_url,
                   LOG_LEVEL="WARNING", FACE_DATA_KEYS=TEST_FACE_DATA_KEYS)
        second = subprocess.Popen([sys.executable, "-m", "processors.lipsync.main"], cwd=PROJECT_ROOT, env=env)
        try:
            yield running, second
        finally:  # the extra worker goes first: the stack and its broker stop after it
            if second.poll() is None:
                second.terminate()
                second.wait(10)


def live_lipsync_workers(stack: RunningStack) -> int:
    return len(stack.get("/ready")[1]["processors"]["lipsync"])


async def one_session(stack: RunningStack, started: asyncio.Event) -> list[dict[str, Any]]:
    async with websockets.connect(stack.ws, max_size=1 << 24) as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
        assert json.loads(await ws.recv())["type"] == "session_ready"
        await ws.send(json.dumps({"type": "text_input", "text": TEXT, "language": "en"}))
        chunks: list[dict[str, Any]] = []
        async with asyncio.timeout(90):
            while not chunks or not chunks[-1]["is_last"]:
                message = json.loads(await ws.recv())
                assert message["type"] != "error", message
                if message["type"] == "video_chunk":
                    chunks.append(message)
                    started.set()
        return chunks


async def test_two_workers_split_sessions_and_a_rebalance_loses_nothing(
        two_worker_stack: tuple[RunningStack, subprocess.Popen[bytes]]) -> None:
    stack, second = two_worker_stack
    deadline = time.monotonic() + 60
    while live_lipsync_workers(stack) < 2:
        assert time.monotonic() < deadline, "the second worker joins the group"
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # let the group settle on two members

    started = asyncio.Event()
    sessions = [asyncio.create_task(one_session(stack, started)) for _ in range(SESSIONS)]
    await asyncio.wait_for(started.wait(), 30)
    second.send_signal(signal.SIGTERM)  # a worker leaves mid-request: its partitions move to the other
    results = await asyncio.gather(*sessions)

    for chunks in results:
        assert [c["seq"] for c in chunks] == list(range(len(chunks))), "every chunk once, in order"
        assert decode_mp4(b"".join(base64.b64decode(c["data"]) for c in chunks)).video_frames > 0
    assert second.wait(15) == 0, "the leaving worker stops cleanly"
