"""``GET /avatar/{id}/idle.mp4`` on a real gateway, broker and PostgreSQL: rendered by a lip-sync worker with its
own engine (never by the gateway), stored per avatar version and engine, served with ETag/304/ranges, owned."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import httpx
import numpy as np
import onnx
import psycopg
import pytest
import websockets
from pydantic import SecretStr
from skimage import data

from gateway.auth import issue_user_token
from infra.avatar_store import AvatarStore
from infra.broker import EmbeddedBroker, free_port
from infra.crypto import face_keyring
from infra.database import open_pool
from infra.idle_clip_store import IdleClipStore
from infra.kafka import new_producer
from infra.settings import Settings
from processors.lipsync.engines.base import LipSyncEngine
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.engines.wav2lip import Wav2LipEngine
from processors.lipsync.idle_clips import IdleClipWorker, LiveActivity
from schemas.dlq import DeadLetter
from schemas.idle_clip import IdleClipRequest
from scripts.wav2lip.graph import build_model, random_state_dict, wav2lip_architecture
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS, RunningStack
from tests.integration.test_tts_processor import read_until
from tests.unit.test_registration_media import png_bytes
from tests.unit.test_wav2lip_engine import SLIM

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-for-the-idle-clip-tests"


@pytest.fixture(scope="module")
def clip_settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                    dev_mode=False, admin_token=SecretStr(ADMIN_TOKEN), auth_secret=SecretStr("i" * 32),
                    rate_limit_uploads_per_min=10_000, face_data_keys=SecretStr(TEST_FACE_DATA_KEYS))


@contextmanager
def clip_worker(settings: Settings, engine: LipSyncEngine) -> Iterator[IdleClipWorker]:
    """The lip-sync worker's idle-clip side (the class processors/lipsync/main.py starts) with ``engine``, in a
    thread of this process: its own consumer group per engine on the real broker, the real database."""
    pool = open_pool(settings.database_url, 2, name="test-idle-clips")
    keyring = face_keyring(settings)
    worker = IdleClipWorker(settings, engine, AvatarStore(pool, keyring), IdleClipStore(pool, keyring),
                            LiveActivity()).start()
    try:
        yield worker
    finally:
        worker.stop()
        pool.close()


@pytest.fixture(scope="module")
def embedded_worker(clip_settings: Settings) -> Iterator[IdleClipWorker]:
    with clip_worker(clip_settings, EmbeddedEngine()) as worker:
        yield worker


@pytest.fixture(scope="module")
def gateway(clip_settings: Settings, registration_worker: None, embedded_worker: IdleClipWorker) -> Iterator[str]:
    with serve_gateway(clip_settings) as base_url:
        yield base_url


def client(gateway: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def admin(gateway: str) -> Iterator[httpx.Client]:
    with client(gateway, ADMIN_TOKEN) as admin_client:
        yield admin_client


def register_photo(admin: httpx.Client, user_id: str) -> str:
    fields = {"avatar_name": f"idle-{uuid.uuid4().hex[:8]}", "user_id": user_id}
    png = png_bytes(np.asarray(data.astronaut(), dtype=np.uint8))
    response = admin.post("/avatar/register", data=fields, files={"file": ("face.png", png, "image/png")})
    assert response.status_code == 201, response.text
    avatar_id: str = response.json()["avatar_id"]
    return avatar_id


@pytest.fixture(scope="module")
def franks_avatar(admin: httpx.Client) -> str:
    """A photo avatar registered by the user 'frank'."""
    return register_photo(admin, "frank")


def fetch_clip(http: httpx.Client, path: str, timeout_s: float = 90, **headers: str) -> httpx.Response:
    """The clip once a worker rendered it: 503 ``idle_clip_pending`` (with Retry-After) until then."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get(path, headers=headers)
        if response.status_code != 503:
            return response
        assert response.json()["code"] == "idle_clip_pending" and response.headers["retry-after"] == "2"
        assert time.monotonic() < deadline, f"{path} still pending after {timeout_s} s"
        time.sleep(0.3)


def clip_rows(database_url: str, avatar_id: str) -> dict[str, str]:
    """engine → avatar version of the stored clips of an avatar."""
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT engine, avatar_version FROM idle_clips WHERE avatar_id = %s",
                                 (avatar_id,)).fetchall())


def video_frame_count(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4), "r") as container:
        assert [stream.type for stream in container.streams] == ["video"]
        return sum(1 for _ in container.decode(video=0))


def test_the_sample_avatars_idle_clip_is_an_mp4_of_a_few_seconds_with_a_version_etag(
        admin: httpx.Client, clip_settings: Settings) -> None:
    response = fetch_clip(admin, f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["etag"].startswith('"idle-embedded.')
    assert 2 * 25 <= video_frame_count(response.content) <= 10 * 25
    again = admin.get(f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4")
    assert again.content == response.content and again.headers["etag"] == response.headers["etag"]


def test_a_matching_etag_is_answered_304_without_the_clip(admin: httpx.Client, clip_settings: Settings) -> None:
    path = f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4"
    etag = fetch_clip(admin, path).headers["etag"]
    unchanged = admin.get(path, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    other = admin.get(path, headers={"If-None-Match": '"idle-some-older-version"'})
    assert other.status_code == 200 and other.content


def test_a_byte_range_of_the_clip_is_served_as_206(admin: httpx.Client, clip_settings: Settings) -> None:
    path = f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4"
    whole = fetch_clip(admin, path).content
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
        mine = fetch_clip(frank, f"/avatar/{franks_avatar}/idle.mp4")
        assert mine.status_code == 200 and video_frame_count(mine.content) > 0
    with client(gateway, issue_user_token(clip_settings, "gina")) as gina:
        foreign = gina.get(f"/avatar/{franks_avatar}/idle.mp4")
        assert (foreign.status_code, foreign.json()["code"]) == (404, "unknown_avatar")
        absent = gina.get("/avatar/av-does-not-exist/idle.mp4")
        assert (absent.status_code, absent.json()["code"]) == (404, "unknown_avatar")
        assert fetch_clip(gina, f"/avatar/{clip_settings.sample_avatar_id}/idle.mp4").status_code == 200, "shared"


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
    with client(gateway, token) as frank:
        response = fetch_clip(frank, ready["idle_clip_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"


# ---- who renders: the lip-sync worker, on registration or when a gateway misses a clip --------------------


def test_a_registration_has_its_clip_rendered_by_the_worker_before_anyone_asks_for_it(
        admin: httpx.Client, database_url: str, embedded_worker: IdleClipWorker) -> None:
    avatar_id = register_photo(admin, "hana")
    deadline = time.monotonic() + 60
    while "embedded" not in clip_rows(database_url, avatar_id):
        assert time.monotonic() < deadline, "the registration worker's request was never rendered"
        time.sleep(0.2)
    response = admin.get(f"/avatar/{avatar_id}/idle.mp4")
    assert response.status_code == 200, "stored before the first GET: served at once"
    version = clip_rows(database_url, avatar_id)["embedded"]
    assert response.headers["etag"].endswith(f'.{version}"') and video_frame_count(response.content) >= 2 * 25


@pytest.fixture(scope="module")
def slim_wav2lip(tmp_path_factory: pytest.TempPathFactory) -> Wav2LipEngine:
    path: Path = tmp_path_factory.mktemp("wav2lip") / "slim.onnx"
    architecture = wav2lip_architecture(SLIM)
    onnx.save(build_model(random_state_dict(architecture, seed=3), architecture), str(path))
    return Wav2LipEngine(path, batch_size=8, threads=1)


def test_a_missing_clip_is_503_idle_clip_pending_until_the_worker_the_gateway_asked_has_rendered_it(
        clip_settings: Settings, database_url: str, franks_avatar: str, embedded_worker: IdleClipWorker) -> None:
    path = f"/avatar/{franks_avatar}/idle.mp4"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM idle_clips WHERE avatar_id = %s", (franks_avatar,))
    fresh = clip_settings.model_copy(update={"port": free_port()})  # no clip in its memory either
    with serve_gateway(fresh) as url, client(url, ADMIN_TOKEN) as http:
        pending = http.get(path)
        assert (pending.status_code, pending.json()["code"]) == (503, "idle_clip_pending")
        assert pending.headers["retry-after"] == "2" and pending.headers["cache-control"] == "no-store"
        served = fetch_clip(http, path)
    assert served.status_code == 200 and "embedded" in clip_rows(database_url, franks_avatar)


def test_a_worker_of_another_engine_renders_its_own_version_which_a_gateway_of_that_engine_serves(
        clip_settings: Settings, admin: httpx.Client, database_url: str, franks_avatar: str,
        slim_wav2lip: Wav2LipEngine) -> None:
    path = f"/avatar/{franks_avatar}/idle.mp4"
    embedded = fetch_clip(admin, path)
    wav2lip_settings = clip_settings.model_copy(update={"port": free_port(), "lipsync_engine": "wav2lip"})
    with serve_gateway(wav2lip_settings) as url, client(url, ADMIN_TOKEN) as wav2lip_admin:
        # No Wav2Lip worker yet: the gateway serves the clips of the engine that does run.
        stand_in = until_etag(wav2lip_admin, path, '"idle-embedded.')
        assert stand_in.content == embedded.content
        with clip_worker(wav2lip_settings, slim_wav2lip):
            served = until_etag(wav2lip_admin, path, '"idle-wav2lip.')
    assert video_frame_count(served.content) == 2 * 25, "Wav2Lip's photo loop: one resting face, 2 s"
    assert served.content != embedded.content
    rows = clip_rows(database_url, franks_avatar)
    assert set(rows) == {"embedded", "wav2lip"} and rows["embedded"] == rows["wav2lip"], "one version, two engines"
    assert admin.get(path).content == embedded.content, "the embedded gateway still serves its own engine's"


def until_etag(http: httpx.Client, path: str, prefix: str, timeout_s: float = 90) -> httpx.Response:
    """The clip once the gateway serves one whose ETag starts with ``prefix``."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = fetch_clip(http, path)
        assert response.status_code == 200, response.text
        if response.headers["etag"].startswith(prefix):
            return response
        assert time.monotonic() < deadline, f"still {response.headers['etag']} after {timeout_s} s"
        time.sleep(0.3)


def test_bad_idle_clip_requests_are_dead_lettered_with_the_reason(
        clip_settings: Settings, embedded_worker: IdleClipWorker) -> None:
    producer = new_producer(clip_settings)
    unknown = IdleClipRequest(avatar_id="av-never-registered", reason="missing", ts_ms=0)
    producer.produce(clip_settings.kafka_idle_clip_topic, b"{not json", key=b"idle-garbage")
    producer.produce(clip_settings.kafka_idle_clip_topic, unknown.to_kafka(), key=b"av-never-registered")
    assert producer.flush(10) == 0
    letters = read_until(clip_settings, clip_settings.kafka_dlq_topic,
                         lambda got: {m.key for m in got} >= {b"idle-garbage", b"av-never-registered"}, timeout_s=60)
    found = {m.key: DeadLetter.from_headers(m.key, m.value, m.headers) for m in letters}
    assert "not a valid avatar.idle-clips v1 message" in found[b"idle-garbage"].reason
    assert "'av-never-registered', which does not exist" in found[b"av-never-registered"].reason
    assert found[b"idle-garbage"].processor == "lipsync-idle-embedded"


def test_the_running_service_renders_clips_in_its_lip_sync_worker_and_serves_them(stack: RunningStack) -> None:
    """`make run`'s own processes: the gateway never renders, so the clip is the lip-sync worker's."""
    with httpx.Client(base_url=stack.http, timeout=30) as http:
        response = fetch_clip(http, "/avatar/sample/idle.mp4")
    assert response.status_code == 200 and response.headers["etag"].startswith('"idle-embedded.')
    assert clip_rows(stack.database_url, "sample").keys() >= {"embedded"}
