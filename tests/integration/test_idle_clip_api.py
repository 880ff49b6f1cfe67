"""``GET /avatar/{id}/idle.mp4`` on a real gateway, broker and PostgreSQL: served, cached by version, owned."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import av
import httpx
import numpy as np
import pytest
import websockets
from pydantic import SecretStr
from skimage import data

from gateway.auth import issue_user_token
from infra.broker import EmbeddedBroker, free_port
from infra.settings import Settings
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS
from tests.unit.test_registration_media import png_bytes

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-for-the-idle-clip-tests"


@pytest.fixture(scope="module")
def clip_settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                    dev_mode=False, admin_token=SecretStr(ADMIN_TOKEN), auth_secret=SecretStr("i" * 32),
                    rate_limit_uploads_per_min=10_000, face_data_keys=SecretStr(TEST_FACE_DATA_KEYS))


@pytest.fixture(scope="module")
def gateway(clip_settings: Settings, registration_worker: None) -> Iterator[str]:
    with serve_gateway(clip_settings) as base_url:
        yield base_url


def client(gateway: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def admin(gateway: str) -> Iterator[httpx.Client]:
    with client(gateway, ADMIN_TOKEN) as admin_client:
        yield admin_client


@pytest.fixture(scope="module")
def franks_avatar(admin: httpx.Client) -> str:
    """A photo avatar registered by the user 'frank'."""
    fields = {"avatar_name": f"idle-{uuid.uuid4().hex[:8]}", "user_id": "frank"}
    png = png_bytes(np.asarray(data.astronaut(), dtype=np.uint8))
    response = admin.post("/avatar/register", data=fields, files={"file": ("face.png", png, "image/png")})
    assert response.status_code == 201, response.text
    avatar_id: str = response.json()["avatar_id"]
    return avatar_id


def video_frame_count(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4), "r") as container:
        assert [stream.type for stream in container.streams] == ["video"]
        return sum(1 for _ in container.decode(video=0))


def test_the_sample_avatars_idle_clip_is_an_mp4_of_a_few_seconds_with_a_version_etag(
        admin: httpx.Client, clip_settings: Settings) -> None:
    response = admin.get(f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["etag"].startswith('"idle-')
    assert 2 * 25 <= video_frame_count(response.content) <= 10 * 25
    again = admin.get(f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4")
    assert again.content == response.content and again.headers["etag"] == response.headers["etag"]


def test_a_matching_etag_is_answered_304_without_the_clip(admin: httpx.Client, clip_settings: Settings) -> None:
    path = f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4"
    etag = admin.get(path).headers["etag"]
    unchanged = admin.get(path, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    other = admin.get(path, headers={"If-None-Match": '"idle-some-older-version"'})
    assert other.status_code == 200 and other.content


def test_a_byte_range_of_the_clip_is_served_as_206(admin: httpx.Client, clip_settings: Settings) -> None:
    path = f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4"
    whole = admin.get(path).content
    part = admin.get(path, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    tail = admin.get(path, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == whole[-50:]
    beyond = admin.get(path, headers={"Range": f"bytes={len(whole)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(whole)}"


def test_the_owner_gets_their_avatars_clip_and_another_user_gets_the_same_404_as_for_no_avatar(
        gateway: str, clip_settings: Settings, franks_avatar: str) -> None:
    with client(gateway, issue_user_token(clip_settings, "frank")) as frank:
        mine = frank.get(f"/avatar/{franks_avatar}/idle.mp4")
        assert mine.status_code == 200 and video_frame_count(mine.content) > 0
    with client(gateway, issue_user_token(clip_settings, "gina")) as gina:
        foreign = gina.get(f"/avatar/{franks_avatar}/idle.mp4")
        assert (foreign.status_code, foreign.json()["code"]) == (404, "unknown_avatar")
        absent = gina.get("/avatar/av-does-not-exist/idle.mp4")
        assert (absent.status_code, absent.json()["code"]) == (404, "unknown_avatar")
        assert gina.get(f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4").status_code == 200, "shared avatar"


def test_without_a_token_the_clip_is_401(gateway: str, clip_settings: Settings) -> None:
    response = httpx.get(f"{gateway}/avatar/{clip_settings.sample_avatar_id}/idle.mp4", timeout=10)
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


async def test_session_ready_carries_the_url_of_the_selected_avatars_idle_clip(
        gateway: str, clip_settings: Settings, franks_avatar: str) -> None:
    token = issue_user_token(clip_settings, "frank")
    async with websockets.connect(f"{gateway.replace('http', 'ws', 1)}/ws/stream?token={token}") as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": franks_avatar}))
        ready = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "resume", "session_id": ready["session_id"], "cursor": -1}))
        resumed = json.loads(await ws.recv())
    assert ready["type"] == "session_ready" and ready["idle_clip_url"] == f"/avatar/{franks_avatar}/idle.mp4"
    assert resumed["resumed"] is True and resumed["idle_clip_url"] == ready["idle_clip_url"]
    async with httpx.AsyncClient(base_url=gateway, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as frank:
        response = await frank.get(ready["idle_clip_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
