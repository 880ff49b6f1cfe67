"""PostgreSQL restarts while sessions run: speaking goes on from the cache, new work gets a clear 503, then
everything recovers with no restart of ours and no exhausted pool."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from infra.settings import PROJECT_ROOT
from tests.integration.stack import RunningStack, isolated_stack

pytestmark = pytest.mark.integration
PG_DIR = PROJECT_ROOT / ".data" / "test-pg-outage"


class PrivatePostgres:
    """A PostgreSQL of this test's own (pgserver's bundled server), so stopping it disturbs nobody."""

    def __init__(self, directory: Path) -> None:
        import pgserver

        self._pgserver = pgserver
        self.directory = directory
        self.server = pgserver.get_server(directory, cleanup_mode="stop")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        self.server.cleanup()

    def start(self) -> None:
        self.server = self._pgserver.get_server(self.directory, cleanup_mode="stop")


@pytest.fixture(scope="module")
def outage_stack() -> Iterator[tuple[RunningStack, PrivatePostgres]]:
    PG_DIR.parent.mkdir(parents=True, exist_ok=True)
    postgres = PrivatePostgres(PG_DIR)
    try:
        with isolated_stack(postgres.url) as (_, running):
            yield running, postgres
    finally:
        postgres.stop()


def http_get(stack: RunningStack, path: str) -> tuple[int, dict[str, Any]]:
    return stack.get(path)


async def say_and_collect(ws: websockets.ClientConnection, text: str) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "text_input", "text": text, "language": "en"}))
    chunks: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while not chunks or not chunks[-1]["is_last"]:
            message = json.loads(await ws.recv())
            assert message["type"] != "error", message
            if message["type"] == "video_chunk":
                chunks.append(message)
    return chunks


async def test_sessions_survive_a_database_restart_and_new_work_waits_for_it(
        outage_stack: tuple[RunningStack, PrivatePostgres]) -> None:
    stack, postgres = outage_stack
    async with websockets.connect(stack.ws, max_size=1 << 24) as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
        assert json.loads(await ws.recv())["type"] == "session_ready"
        assert await say_and_collect(ws, "Before the outage.")

        postgres.stop()
        assert await say_and_collect(ws, "The database is down, and I still speak."), "cache keeps it going"
        status, body = http_get(stack, "/avatar/list")
        assert status == 503 and body["code"] == "database_unavailable"
        status, body = http_get(stack, "/ready")
        assert status == 503 and "database" in body["missing"]
        async with websockets.connect(stack.ws) as other:
            await other.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
            reply = json.loads(await other.recv())
            assert reply["type"] == "error" and reply["code"] == "database_unavailable"

        postgres.start()
        deadline = time.monotonic() + 30
        while http_get(stack, "/ready")[0] != 200:
            assert time.monotonic() < deadline, "the gateway recovers by itself"
            await asyncio.sleep(0.5)
        for _ in range(30):  # more than the pool holds: broken connections were replaced, not leaked
            assert http_get(stack, "/avatar/list")[0] == 200
        assert await say_and_collect(ws, "And after it.")

