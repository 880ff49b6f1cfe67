"""MAX_CONCURRENT_USERS caps the WebSocket sessions of one gateway: the next one is told why and closed."""

from __future__ import annotations

import json

import pytest
import websockets

from infra.broker import EmbeddedBroker, free_port
from infra.settings import Settings
from tests.gateway_server import serve_gateway

pytestmark = pytest.mark.integration


async def test_a_session_past_the_cap_is_refused_and_a_freed_slot_is_reused(
        broker: EmbeddedBroker, database_url: str) -> None:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                        max_concurrent_users=1, register_sample_avatar=False, _env_file=None)
    with serve_gateway(settings) as url:
        ws_url = url.replace("http://", "ws://") + "/ws/stream"
        async with websockets.connect(ws_url) as first:
            await first.send(json.dumps({"type": "ping"}))
            assert json.loads(await first.recv())["type"] == "pong"
            async with websockets.connect(ws_url) as second:
                refusal = json.loads(await second.recv())
                assert refusal["type"] == "error" and refusal["code"] == "too_many_sessions"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await second.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        async with websockets.connect(ws_url) as third:
            await third.send(json.dumps({"type": "ping"}))
            assert json.loads(await third.recv())["type"] == "pong", "the slot was freed when the first left"
