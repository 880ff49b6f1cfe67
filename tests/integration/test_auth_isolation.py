"""Outside dev mode every call needs a token, and users are isolated: no one sees, selects, deletes or
joins what belongs to another user; only the admin token sees everything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from aiortc import RTCPeerConnection

from infra.broker import EmbeddedBroker, free_port
from infra.settings import Settings
from processors.registration.sample import sample_png
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def secure_gateway(broker: EmbeddedBroker, database_url: str, registration_worker: None) -> Iterator[str]:
    """A real gateway (uvicorn on a port) in production mode: auth on."""
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                        dev_mode=False, admin_token=ADMIN, auth_secret="signing-secret-for-tests-0123456789",
                        face_data_keys=TEST_FACE_DATA_KEYS, _env_file=None)
    with serve_gateway(settings) as url:
        yield url.removeprefix("http://")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(base: str, user_id: str) -> str:
    response = httpx.post(f"http://{base}/auth/token", json={"user_id": user_id}, headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def register(base: str, token: str, user_id: str, name: str) -> httpx.Response:
    return httpx.post(f"http://{base}/avatar/register", headers=bearer(token), timeout=30,
                      data={"avatar_name": name, "user_id": user_id},
                      files={"file": ("face.png", sample_png(), "image/png")})


def test_without_a_token_everything_but_health_is_refused(secure_gateway: str) -> None:
    assert httpx.get(f"http://{secure_gateway}/health").status_code == 200
    refused = httpx.get(f"http://{secure_gateway}/avatar/list")
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    forged = httpx.get(f"http://{secure_gateway}/avatar/list", headers=bearer("dXNlcg.9999999999.forged"))
    assert forged.status_code == 401


def test_only_the_admin_issues_tokens(secure_gateway: str) -> None:
    alice = token_for(secure_gateway, "alice")
    response = httpx.post(f"http://{secure_gateway}/auth/token", json={"user_id": "mallory"}, headers=bearer(alice))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


def test_users_see_and_delete_only_their_own_avatars(secure_gateway: str) -> None:
    alice, bob = token_for(secure_gateway, "alice"), token_for(secure_gateway, "bob")
    created = register(secure_gateway, alice, "alice", "Alice's face")
    assert created.status_code == 201, created.text
    avatar_id = created.json()["avatar_id"]
    assert register(secure_gateway, bob, "alice", "Not mine").status_code == 403, "no registering for others"

    def ids(token: str) -> set[str]:
        listed = httpx.get(f"http://{secure_gateway}/avatar/list", headers=bearer(token)).json()
        entries = listed["avatars"] if isinstance(listed, dict) else listed
        return {entry["avatar_id"] for entry in entries}

    assert avatar_id in ids(alice) and avatar_id not in ids(bob) and avatar_id in ids(ADMIN)
    assert httpx.get(f"http://{secure_gateway}/avatar/{avatar_id}/info", headers=bearer(bob)).status_code == 404
    assert httpx.delete(f"http://{secure_gateway}/avatar/{avatar_id}", headers=bearer(bob)).status_code == 404
    assert httpx.get(f"http://{secure_gateway}/avatar/{avatar_id}/info", headers=bearer(alice)).status_code == 200
    asyncio.run(_bob_cannot_select_or_join(secure_gateway, alice, bob, avatar_id))
    assert httpx.delete(f"http://{secure_gateway}/avatar/{avatar_id}", headers=bearer(alice)).status_code in (200, 204)


async def _bob_cannot_select_or_join(base: str, alice: str, bob: str, avatar_id: str) -> None:
    async def ask(token: str, message: dict[str, Any]) -> dict[str, Any]:
        async with websockets.connect(f"ws://{base}/ws/stream?token={token}") as ws:
            await ws.send(json.dumps(message))
            reply: dict[str, Any] = json.loads(await ws.recv())
            return reply

    mine = await ask(alice, {"type": "avatar_selection", "avatar_id": avatar_id})
    assert mine["type"] == "session_ready"
    theirs = await ask(bob, {"type": "avatar_selection", "avatar_id": avatar_id})
    assert theirs["type"] == "error" and theirs["code"] == "unknown_avatar"
    joined = await ask(bob, {"type": "resume", "session_id": mine["session_id"], "cursor": -1})
    assert joined["type"] == "error" and joined["code"] == "unknown_session"


async def test_a_websocket_without_a_valid_token_is_closed_with_4401(secure_gateway: str) -> None:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with websockets.connect(f"ws://{secure_gateway}/ws/stream") as ws:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_only_the_owner_of_a_webrtc_peer_flushes_it(secure_gateway: str) -> None:
    """The interrupt route skips the session look-up for the peer's own user (it is on the interrupt's critical
    path); anyone else still meets the session's check."""
    alice, bob = token_for(secure_gateway, "alice"), token_for(secure_gateway, "bob")
    created = register(secure_gateway, alice, "alice", "Alice on WebRTC")
    assert created.status_code == 201, created.text
    asyncio.run(_flush_as_owner_and_as_another(secure_gateway, alice, bob, created.json()["avatar_id"]))


async def _flush_as_owner_and_as_another(base: str, alice: str, bob: str, avatar_id: str) -> None:
    async with websockets.connect(f"ws://{base}/ws/stream?token={alice}") as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": avatar_id}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "session_ready", ready
        session_id = ready["session_id"]
        browser = RTCPeerConnection()
        try:
            browser.addTransceiver("video", direction="recvonly")
            browser.addTransceiver("audio", direction="recvonly")
            await browser.setLocalDescription(await browser.createOffer())
            async with httpx.AsyncClient(base_url=f"http://{base}", timeout=30) as http:
                answer = await http.post("/webrtc/offer", headers=bearer(alice), json={
                    "session_id": session_id, "sdp": browser.localDescription.sdp, "type": "offer"})
                assert answer.status_code == 200, answer.text
                flush = f"/webrtc/peers/{answer.json()['peer_id']}/interrupt"
                theirs = await http.post(flush, params={"session_id": session_id}, headers=bearer(bob))
                assert theirs.status_code == 404 and theirs.json()["code"] == "unknown_session", theirs.text
                mine = await http.post(flush, params={"session_id": session_id}, headers=bearer(alice))
                assert mine.status_code == 204, mine.text
                admin = await http.post(flush, params={"session_id": session_id}, headers=bearer(ADMIN))
                assert admin.status_code == 204, admin.text
        finally:
            await browser.close()
