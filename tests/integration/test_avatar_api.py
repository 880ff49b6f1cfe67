"""The avatar HTTP API against a real gateway, broker and PostgreSQL: registration, limits, ownership, deletion."""

from __future__ import annotations

import asyncio
import io
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import psycopg
import pytest
import websockets
from pydantic import SecretStr
from skimage import data

from gateway.auth import issue_user_token
from gateway.registration import FINISHED_JOBS_KEPT_S, RegistrationRefused, Registrations, validate_request
from infra.avatar_store import AvatarStore
from infra.broker import EmbeddedBroker, free_port
from infra.crypto import face_keyring
from infra.database import open_pool
from infra.face_frames import FramePack, resident_bytes
from infra.registration_jobs import RegistrationJobStore
from infra.settings import Settings
from processors.lipsync.avatar_cache import AvatarCache, InvalidationListener
from processors.registration.main import create as create_registration_worker
from schemas.avatar_events import AvatarInvalidated
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS, RunningStack
from tests.unit.face_fixtures import astronaut_photo
from tests.unit.test_media_end import zip_payload
from tests.unit.test_registration_analysis import HEAD_CROP
from tests.unit.test_registration_media import png_bytes, png_header_only, resized, video_bytes

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-for-the-avatar-api-tests"
MAX_UPLOAD = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def api_settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                    dev_mode=False, admin_token=SecretStr(ADMIN_TOKEN), auth_secret=SecretStr("s" * 32),
                    max_upload_bytes=MAX_UPLOAD, rate_limit_uploads_per_min=10_000,
                    face_data_keys=SecretStr(TEST_FACE_DATA_KEYS))


@pytest.fixture(scope="module")
def gateway(api_settings: Settings, registration_worker: None) -> Iterator[str]:
    with serve_gateway(api_settings) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def admin(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        yield client


def user_client(gateway: str, settings: Settings, user_id: str) -> httpx.Client:
    token = issue_user_token(settings, user_id)
    return httpx.Client(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def store(api_settings: Settings) -> Iterator[AvatarStore]:
    pool = open_pool(api_settings.database_url, 2, name="avatar-api-test")
    yield AvatarStore(pool, face_keyring(api_settings))
    pool.close()


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    return png_bytes(np.asarray(data.astronaut(), dtype=np.uint8))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(client: httpx.Client, content: bytes, *, name: str | None = None, user_id: str = "alice",
             filename: str = "face.png", description: str | None = None, path: str = "/avatar/register",
             ) -> httpx.Response:
    fields = {"avatar_name": name or unique("avatar"), "user_id": user_id}
    if description is not None:
        fields["description"] = description
    return client.post(path, data=fields, files={"file": (filename, content, "application/octet-stream")})


def avatar_rows(database_url: str, name: str) -> int:
    """Rows of avatars named ``name`` and of face data without an avatar: both must stay 0 after a refusal."""
    with psycopg.connect(database_url) as conn:
        named = conn.execute("SELECT count(*) FROM avatars WHERE name = %s", (name,)).fetchone()
        orphans = conn.execute("SELECT count(*) FROM avatar_face_data f LEFT JOIN avatars a USING (avatar_id)"
                               " WHERE a.avatar_id IS NULL").fetchone()
    assert named is not None and orphans is not None
    return int(named[0]) + int(orphans[0])


# ---- registering -----------------------------------------------------------------------------------------


def test_photo_registers_with_201_its_report_and_warnings_and_is_then_listed_and_described(
        admin: httpx.Client, astronaut_png: bytes) -> None:
    name = unique("astronaut")
    response = register(admin, astronaut_png, name=name, description="first test")
    assert response.status_code == 201, response.text
    body = response.json()
    avatar_id = body["avatar_id"]
    assert body["report"]["passed"] is True
    assert any("px across" in warning for warning in body["warnings"]), "the 92 px face is accepted with a warning"
    assert body["analysis"] | {"analysis_ms": 0} == {"detector": "dlib-hog-68", "media_kind": "image", "frames": 1,
                                                      "stride": 1, "frames_dropped": 0, "source_fps": None,
                                                      "analysis_ms": 0}
    info = admin.get(f"/avatar/{avatar_id}/info").json()
    assert (info["name"], info["user_id"], info["description"], info["frame_count"]) == (name, "alice", "first test", 1)
    assert info["quality_report"] == body["report"]
    listed = admin.get("/avatar/list", params={"user_id": "alice"}).json()["avatars"]
    assert avatar_id in [a["avatar_id"] for a in listed]


def test_a_jpeg_with_a_zip_appended_registers_and_only_the_jpeg_is_stored(
        admin: httpx.Client, store: AvatarStore) -> None:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(data.astronaut()), cv2.COLOR_RGB2BGR))
    assert ok
    photo, payload = encoded.tobytes(), zip_payload()
    response = register(admin, photo + payload, filename="face.jpg")
    assert response.status_code == 201, response.text
    stored = store.source(response.json()["avatar_id"])
    assert stored == photo and b"PK\x03\x04" not in stored and b"payload.sh" not in stored


def test_preview_is_the_first_frame_as_jpeg_with_the_face_box_drawn(admin: httpx.Client, astronaut_png: bytes) -> None:
    avatar_id = register(admin, astronaut_png).json()["avatar_id"]
    response = admin.get(f"/avatar/{avatar_id}/preview.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    preview = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    original = np.asarray(data.astronaut())
    assert preview.shape == original.shape
    changed = np.abs(preview.astype(int) - original.astype(int)).max(axis=2) > 80
    assert changed[60:200, 160:290].sum() > 300, "box and landmarks are drawn around the face"
    assert changed[300:, :].sum() < 50, "nothing is drawn far from the face"


def test_async_registration_reports_rising_progress_through_named_stages_until_done(
        admin: httpx.Client, astronaut_png: bytes) -> None:
    large = png_bytes(resized(np.asarray(data.astronaut()), (720, 720)))
    response = register(admin, large, path="/avatar/register?async=true")
    assert response.status_code == 202, response.text
    job = response.json()
    seen: list[tuple[str, float]] = [(job["stage"], job["progress"])]
    deadline = time.monotonic() + 30
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.01)
        job = admin.get(job.get("status_url") or f"/avatar/register/jobs/{job['job_id']}").json()
        seen.append((job["stage"], job["progress"]))
    assert job["state"] == "done" and job["http_status"] == 201 and job["progress"] == 1.0
    progress = [p for _, p in seen]
    assert progress == sorted(progress), "progress never goes back"
    assert {"queued", "done"} <= {stage for stage, _ in seen}
    assert job["result"]["avatar_id"] == job["avatar_id"]
    assert admin.get(f"/avatar/{job['avatar_id']}/info").status_code == 200


def test_video_registration_stores_every_frame_with_its_face(admin: httpx.Client, store: AvatarStore) -> None:
    head = resized(np.asarray(data.astronaut())[HEAD_CROP], (320, 320))
    frames = [np.roll(head, shift, axis=1) for shift in range(0, 20, 1)]
    response = register(admin, video_bytes(frames, fps=20), filename="clip.mp4")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["analysis"]["media_kind"] == "video" and body["analysis"]["frames"] == 20
    face_data = store.load_face_data(body["avatar_id"])
    assert len(face_data.frames) == 20 and face_data.source_fps == pytest.approx(20)
    # The face moves right by a pixel a frame; its stored boxes and landmarks follow it.
    xs = [float(frame.landmarks[:, 0].mean()) for frame in face_data.frames]
    assert xs[-1] - xs[0] == pytest.approx(19, abs=3)
    assert np.abs(face_data.frames[5].image.astype(int) - frames[5].astype(int)).mean() < 6


@pytest.mark.parametrize("container", ["mp4", "mov", "webm"])
def test_a_video_with_a_zip_appended_registers_and_only_the_video_is_stored(
        admin: httpx.Client, store: AvatarStore, container: str) -> None:
    head = resized(np.asarray(data.astronaut())[HEAD_CROP], (288, 288))
    video = video_bytes([np.roll(head, shift, axis=1) for shift in range(4)], fps=10, container=container)
    response = register(admin, video + zip_payload(), filename=f"clip.{container}")
    assert response.status_code == 201, response.text
    assert response.json()["analysis"]["frames"] == 4
    stored = store.source(response.json()["avatar_id"])
    assert stored == video and b"PK\x03\x04" not in stored and b"payload.sh" not in stored


def audio_only_mp4() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=16_000)
        assert isinstance(stream, av.AudioStream)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        silence.sample_rate = 16_000
        for _ in range(4):
            output.mux(stream.encode(silence))
        output.mux(stream.encode())
    return buffer.getvalue()


def bad_uploads() -> dict[str, tuple[bytes, int, str]]:
    astronaut = np.asarray(data.astronaut(), dtype=np.uint8)
    head = astronaut[HEAD_CROP]
    png = png_bytes(astronaut)
    mp4 = video_bytes([resized(head, (96, 96))] * 10)
    return {
        "zero bytes": (b"", 400, "empty_file"),
        "text named .png": (b"name,age\nsara,31\n" * 10, 415, "unsupported_media_type"),
        "HEIC named .jpg": (b"\x00\x00\x00\x18ftypheic" + bytes(100), 415, "unsupported_media_type"),
        "truncated PNG": (png[: len(png) // 2], 400, "corrupt_file"),
        "truncated MP4": (mp4[: len(mp4) // 2], 400, "corrupt_file"),
        "PNG bomb 100000 px square": (png_header_only(100_000, 100_000), 413, "image_too_large"),
        "photo without a face": (png_bytes(np.asarray(data.coffee(), dtype=np.uint8)), 422, "no_face"),
        "two faces": (png_bytes(np.hstack([head, head])), 422, "multiple_faces"),
        "MP4 without video": (audio_only_mp4(), 422, "no_decodable_frames"),
    }


@pytest.mark.parametrize("case", list(bad_uploads()))
def test_bad_file_gets_its_specific_4xx_code_and_nothing_is_stored(
        case: str, admin: httpx.Client, database_url: str) -> None:
    content, status, code = bad_uploads()[case]
    name = unique("bad")
    response = register(admin, content, name=name, filename="avatar.png")
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.json()["message"]
    assert avatar_rows(database_url, name) == 0


@pytest.mark.parametrize(("fields", "status", "code"), [
    ({"user_id": "alice"}, 400, "missing_field"),
    ({"avatar_name": "x"}, 400, "missing_field"),
    ({"avatar_name": "x" * 101, "user_id": "alice"}, 400, "invalid_field"),
    ({"avatar_name": "x", "user_id": "../../etc"}, 400, "invalid_field"),
    ({"avatar_name": "a\x07b", "user_id": "alice"}, 400, "invalid_field"),
    ({"avatar_name": "x", "user_id": "alice", "owner": "bob"}, 400, "unexpected_field"),
])
def test_bad_form_fields_get_a_specific_400(fields: dict[str, str], status: int, code: str, admin: httpx.Client,
                                            astronaut_png: bytes) -> None:
    response = admin.post("/avatar/register", data=fields, files={"file": ("a.png", astronaut_png, "image/png")})
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


def test_form_without_a_file_is_refused_as_missing_field(admin: httpx.Client) -> None:
    response = admin.post("/avatar/register", data={"avatar_name": "x", "user_id": "alice"},
                          files={"other": ("a.txt", b"", "text/plain")})
    assert response.json()["code"] == "unexpected_field"
    only_user = b'--zzz\r\nContent-Disposition: form-data; name="user_id"\r\n\r\nalice\r\n--zzz--\r\n'
    response = admin.post("/avatar/register", headers={"Content-Type": "multipart/form-data; boundary=zzz"},
                          content=only_user)
    assert (response.status_code, response.json()["code"]) == (400, "missing_field")


def test_json_body_is_refused_as_not_multipart(admin: httpx.Client) -> None:
    response = admin.post("/avatar/register", json={"avatar_name": "x", "user_id": "alice"})
    assert (response.status_code, response.json()["code"]) == (415, "not_multipart")


def test_multipart_body_cut_short_is_refused_as_malformed(admin: httpx.Client, astronaut_png: bytes) -> None:
    body = (b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + astronaut_png)
    response = admin.post("/avatar/register", headers={"Content-Type": "multipart/form-data; boundary=zzz"},
                          content=body)
    assert (response.status_code, response.json()["code"]) == (400, "malformed_upload")


# ---- size limits while streaming ----------------------------------------------------------------------


def raw_request(base_url: str, head: bytes, body_chunks: Iterator[bytes],
                timeout_s: float = 20.0) -> tuple[int, int, dict[str, Any]]:
    """Send ``head`` then body chunks until the server answers; returns the status, the body bytes the server
    took, and its JSON reply."""
    host, port = base_url.removeprefix("http://").split(":")
    sent, reply, pending = 0, b"", b""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # count what the server takes, not us
        conn.sendall(head)
        conn.setblocking(False)
        while b"\r\n\r\n" not in reply and time.monotonic() < deadline:
            if not pending:
                pending = next(body_chunks, b"")
            readable, writable, _ = select.select([conn], [conn] if pending else [], [], 0.5)
            if readable:
                try:
                    more = conn.recv(65536)
                except ConnectionResetError:
                    break
                if not more:
                    break
                reply += more
            elif writable:
                try:
                    taken = conn.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += taken
                pending = pending[taken:]
        conn.setblocking(True)
        while not _complete(reply):
            more = conn.recv(65536)
            if not more:
                break
            reply += more
    head_part, _, body = reply.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1]) if head_part.startswith(b"HTTP/1.1") else 0
    return status, sent, json.loads(body) if body else {}


def _complete(reply: bytes) -> bool:
    head, separator, body = reply.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    return bool(separator) and length is not None and len(body) >= length


def request_head(boundary: str, token: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /avatar/register HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n").encode()


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


def endless_file(first: bytes, total: int = 1 << 30) -> Iterator[bytes]:
    """A multipart form whose file starts with ``first`` and claims to go on for ``total`` bytes."""
    yield (b'--b\r\nContent-Disposition: form-data; name="avatar_name"\r\n\r\nbig\r\n--b\r\nContent-Disposition: '
           b'form-data; name="user_id"\r\n\r\nalice\r\n--b\r\nContent-Disposition: form-data; name="file"; '
           b'filename="big.png"\r\n\r\n' + first)
    block = bytes(256 * 1024)
    for _ in range(total // len(block)):
        yield block


def test_declared_content_length_over_the_limit_is_refused_before_the_body_is_sent(gateway: str) -> None:
    status, sent, reply = raw_request(gateway, request_head("b", ADMIN_TOKEN, 1 << 30), iter([b""]))
    assert (status, sent, reply["code"]) == (413, 0, "file_too_large")


def test_undeclared_upload_over_the_limit_is_cut_off_while_streaming(gateway: str, astronaut_png: bytes) -> None:
    started = time.monotonic()
    status, sent, reply = raw_request(gateway, request_head("b", ADMIN_TOKEN, None),
                                      chunked(endless_file(astronaut_png[:1024])))
    assert (status, reply["code"]) == (413, "file_too_large")
    # The server stops reading at the limit; what is still in flight fits in the sockets' buffers.
    assert sent < MAX_UPLOAD + 8 * 1024 * 1024, f"{sent / 1e6:.0f} MB were sent for a 1 GB upload"
    assert time.monotonic() - started < 10


def test_wrong_file_type_is_refused_from_its_first_bytes_without_reading_the_rest(gateway: str) -> None:
    status, sent, reply = raw_request(gateway, request_head("b", ADMIN_TOKEN, None),
                                      chunked(endless_file(b"#!/bin/sh\necho this is not a picture\n" * 4)))
    assert (status, reply["code"]) == (415, "unsupported_media_type")
    # Refused on the first bytes: only what the sockets buffer was sent of the 1 GB.
    assert sent < 8 * 1024 * 1024, f"{sent / 1e6:.0f} MB were sent before the refusal"


# ---- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["../../../../tmp/avatar-path-trick.png", "..\\..\\windows\\avatar.png",
                                      "/etc/passwd", "a\x00b.png", "%2e%2e%2favatar.png", "x" * 2000 + ".png"])
def test_path_tricks_in_file_names_are_never_used_as_paths(
        filename: str, admin: httpx.Client, astronaut_png: bytes, database_url: str) -> None:
    response = register(admin, astronaut_png, filename=filename)
    assert response.status_code == 201, response.text
    avatar_id = response.json()["avatar_id"]
    assert avatar_id.startswith("av-") and "/" not in avatar_id
    assert not Path("/tmp/avatar-path-trick.png").exists()
    info = admin.get(f"/avatar/{avatar_id}/info").json()
    assert filename not in json.dumps(info)


def test_duplicate_name_for_the_same_user_is_refused_with_409_and_other_users_may_reuse_it(
        admin: httpx.Client, astronaut_png: bytes, database_url: str) -> None:
    name = unique("twin") + " دوقلو"
    assert register(admin, astronaut_png, name=name, user_id="alice").status_code == 201
    again = register(admin, astronaut_png, name=name, user_id="alice")
    assert (again.status_code, again.json()["code"]) == (409, "name_taken")
    assert register(admin, astronaut_png, name=name, user_id="bob").status_code == 201
    assert avatar_rows(database_url, name) == 2


def test_two_uploads_racing_for_one_name_store_exactly_one(admin: httpx.Client, astronaut_png: bytes) -> None:
    name = unique("race")
    statuses: list[int] = []

    def upload() -> None:
        statuses.append(register(admin, astronaut_png, name=name, user_id="carol").status_code)

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409]


# ---- who may do what ----------------------------------------------------------------------------------


def test_requests_without_a_token_are_401(gateway: str) -> None:
    with httpx.Client(base_url=gateway) as anonymous:
        assert anonymous.get("/avatar/list").status_code == 401
        assert anonymous.post("/avatar/register", files={"file": ("a.png", b"x")}).json()["code"] == "unauthorized"


def test_user_token_registers_for_its_own_user_id_only(
        gateway: str, api_settings: Settings, astronaut_png: bytes) -> None:
    with user_client(gateway, api_settings, "dave") as dave:
        assert register(dave, astronaut_png, user_id="dave").status_code == 201
        other = register(dave, astronaut_png, user_id="erin")
        assert (other.status_code, other.json()["code"]) == (403, "forbidden")
        shared = register(dave, astronaut_png, user_id="system")
        assert shared.status_code == 403


def test_user_sees_own_and_shared_avatars_and_another_users_avatar_is_404(
        gateway: str, api_settings: Settings, admin: httpx.Client, astronaut_png: bytes) -> None:
    franks = register(admin, astronaut_png, user_id="frank").json()["avatar_id"]
    with user_client(gateway, api_settings, "gina") as gina:
        ginas = register(gina, astronaut_png, user_id="gina").json()["avatar_id"]
        listed = gina.get("/avatar/list").json()["avatars"]
        assert {a["user_id"] for a in listed} <= {"gina", "system"}
        assert ginas in {a["avatar_id"] for a in listed} and api_settings.sample_avatar_id in {
            a["avatar_id"] for a in listed}
        assert gina.get("/avatar/list", params={"user_id": "frank"}).status_code == 403
        for method, path in [("GET", f"/avatar/{franks}/info"), ("GET", f"/avatar/{franks}/preview.jpg"),
                             ("DELETE", f"/avatar/{franks}")]:
            response = gina.request(method, path)
            assert (response.status_code, response.json()["code"]) == (404, "unknown_avatar")
            ghost = gina.request(method, path.replace(franks, "av-does-not-exist"))
            assert ghost.json() == response.json() | {"message": ghost.json()["message"]}, "same answer as absent"
        shared = gina.delete(f"/avatar/{api_settings.sample_avatar_id}")
        assert (shared.status_code, shared.json()["code"]) == (403, "forbidden")
        assert gina.get(f"/avatar/{api_settings.sample_avatar_id}/info").status_code == 200
    assert admin.get(f"/avatar/{franks}/info").status_code == 200
    assert franks in {a["avatar_id"] for a in admin.get("/avatar/list").json()["avatars"]}


def test_another_users_registration_job_is_not_found(
        gateway: str, api_settings: Settings, astronaut_png: bytes) -> None:
    with user_client(gateway, api_settings, "hugo") as hugo, user_client(gateway, api_settings, "ida") as ida:
        job = register(hugo, astronaut_png, user_id="hugo", path="/avatar/register?async=true").json()
        assert ida.get(job["status_url"]).status_code == 404
        assert hugo.get(job["status_url"]).status_code == 200


def test_user_deletes_own_avatar_and_its_face_data_rows_are_gone(
        gateway: str, api_settings: Settings, astronaut_png: bytes, database_url: str) -> None:
    with user_client(gateway, api_settings, "jon") as jon:
        avatar_id = register(jon, astronaut_png, user_id="jon").json()["avatar_id"]
        response = jon.delete(f"/avatar/{avatar_id}")
        assert response.json() == {"avatar_id": avatar_id, "deleted": True, "caches_notified": True}
        assert jon.get(f"/avatar/{avatar_id}/info").status_code == 404
        assert jon.delete(f"/avatar/{avatar_id}").status_code == 404
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT count(*) FROM avatar_face_data WHERE avatar_id = %s", (avatar_id,)).fetchone()
    assert left == (0,)


def test_uploads_beyond_the_workers_and_the_queue_are_refused_as_busy(
        api_settings: Settings, store: AvatarStore, astronaut_png: bytes, registration_worker: None) -> None:
    jobs = RegistrationJobStore(store.pool, store.keyring)
    # Unfinished jobs are counted across every gateway (PostgreSQL); any another test left count as queued.
    queued = jobs.unfinished(younger_than_s=FINISHED_JOBS_KEPT_S)
    settings = api_settings.model_copy(update={"registration_workers": 1, "registration_queue": queued})
    registrations = Registrations.start(settings, jobs)
    try:
        request = validate_request({"avatar_name": unique("busy"), "user_id": "kim"}, astronaut_png, "a.png")
        first = registrations.submit(request, owner=None)
        with pytest.raises(RegistrationRefused) as refused:
            registrations.submit(validate_request({"avatar_name": unique("busy"), "user_id": "kim"}, astronaut_png,
                                                  None), owner=None)
        assert (refused.value.status, refused.value.body["code"]) == (503, "registration_busy")
        done = asyncio.run(registrations.wait(first.job_id))
        assert done is not None and done.state == "done", done
        again = registrations.submit(replace(request, name=unique("busy")), owner=None)
        assert asyncio.run(registrations.wait(again.job_id)) is not None
    finally:
        registrations.stop()


def test_a_worker_with_an_empty_insightface_pack_fails_at_start_up(api_settings: Settings, tmp_path: Path) -> None:
    broken = api_settings.model_copy(update={"face_backend": "insightface", "insightface_model_dir": tmp_path,
                                             "register_sample_avatar": False})
    with pytest.raises(Exception, match="no SCRFD detector"):
        create_registration_worker(broken)


def test_a_gateway_needs_no_face_backend_so_a_broken_pack_does_not_stop_it(api_settings: Settings,
                                                                           tmp_path: Path) -> None:
    broken = api_settings.model_copy(update={"face_backend": "insightface", "insightface_model_dir": tmp_path,
                                             "port": free_port(), "register_sample_avatar": False})
    with serve_gateway(broken) as url:
        assert httpx.get(f"{url}/health").status_code == 200


# ---- the lip-sync side: cache loads, statistics and invalidation ------------------------------------------


def test_deletion_is_announced_and_a_listening_cache_forgets_the_avatar(
        admin: httpx.Client, api_settings: Settings, store: AvatarStore, astronaut_png: bytes) -> None:
    avatar_id = register(admin, astronaut_png).json()["avatar_id"]
    cache = AvatarCache(store.load_face_data)
    listener = InvalidationListener(api_settings, cache).start()
    try:
        loaded = cache.get(avatar_id)
        assert cache.get(avatar_id) is loaded and (cache.hits, cache.misses) == (1, 1)
        time.sleep(1.0)  # the listener's end offset is resolved on its first fetch
        assert admin.delete(f"/avatar/{avatar_id}").status_code == 200
        deadline = time.monotonic() + 10
        while avatar_id in cache and time.monotonic() < deadline:
            time.sleep(0.05)
        assert avatar_id not in cache and cache.stats().invalidations == 1
    finally:
        listener.stop()


def test_a_load_racing_a_deletion_does_not_put_the_deleted_avatar_back(store: AvatarStore) -> None:
    release, loading = threading.Event(), threading.Event()

    def slow_loader(avatar_id: str) -> Any:
        loading.set()
        release.wait(5)
        return store.load_face_data("sample")

    cache = AvatarCache(slow_loader)
    worker = threading.Thread(target=cache.get, args=("sample",))
    worker.start()
    loading.wait(5)
    cache.forget("sample")
    release.set()
    worker.join()
    assert "sample" not in cache


def test_cache_evicts_the_least_recently_used_avatar_when_over_its_byte_budget() -> None:
    photo = astronaut_photo()
    size = resident_bytes(photo)
    cache = AvatarCache(lambda avatar_id: photo, max_entries=10, max_bytes=int(size * 2.5))
    for avatar_id in ("a", "b", "a", "c"):  # "a" was used again, so "b" is the oldest when "c" arrives
        cache.get(avatar_id)
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.misses) == (2, 1, 3)
    assert stats.bytes >= 2 * size - 1


def test_packed_frames_decode_on_demand_and_keep_only_a_few_decoded() -> None:
    head = resized(np.asarray(data.astronaut())[HEAD_CROP], (256, 256))
    images = [np.roll(head, shift, axis=0) for shift in range(40)]
    pack = FramePack.from_images(images, keep_decoded=4)
    compressed = pack.nbytes
    assert compressed < sum(image.nbytes for image in images) / 5
    decoded = [pack.image(index) for index in range(len(images))]
    assert all(np.abs(d.astype(int) - i.astype(int)).mean() < 4 for d, i in zip(decoded, images, strict=True))
    assert pack.nbytes == compressed + 4 * images[0].nbytes, "only the last four decoded frames are kept"
    assert pack.image(39) is decoded[39] and not decoded[0].flags.writeable


def test_invalidation_messages_follow_the_v1_schema() -> None:
    event = AvatarInvalidated(avatar_id="av-1", reason="deleted", ts_ms=1)
    assert json.loads(event.to_kafka()) == {"schema_version": 1, "type": "avatar_invalidated", "avatar_id": "av-1",
                                            "reason": "deleted", "ts_ms": 1}


async def speak_with(stack: RunningStack, avatar_id: str) -> None:
    async with websockets.connect(stack.ws, max_size=16 * 1024 * 1024) as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": avatar_id}))
        assert json.loads(await ws.recv())["type"] == "session_ready"
        await ws.send(json.dumps({"type": "text_input", "text": "Hi.", "language": "en"}))
        async with asyncio.timeout(30):
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] != "error", message
                if message["type"] == "video_chunk" and message["is_last"]:
                    return


def wait_for_cache(stack: RunningStack, ready: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = stack.get("/avatar/cache/status")[1]
        if ready(status):
            return status
        time.sleep(0.25)
    raise AssertionError(f"cache status never matched: {status}")


async def test_lipsync_cache_status_counts_loads_and_hits_and_deletion_empties_it(
        stack: RunningStack, astronaut_png: bytes) -> None:
    with httpx.Client(base_url=stack.http, timeout=60) as client:
        avatar_id = register(client, astronaut_png).json()["avatar_id"]
        before = wait_for_cache(stack, lambda s: s["workers"] >= 1)
        await speak_with(stack, avatar_id)
        await speak_with(stack, avatar_id)
        loaded = wait_for_cache(stack, lambda s: s["misses"] >= before["misses"] + 1 and s["hits"] > before["hits"])
        assert loaded["entries"] >= 1 and loaded["bytes"] > 50_000
        assert 0 < loaded["hit_rate"] <= 1
        assert client.delete(f"/avatar/{avatar_id}").json()["caches_notified"] is True
        emptied = wait_for_cache(stack, lambda s: s["invalidations"] > loaded["invalidations"])
        assert emptied["entries"] == loaded["entries"] - 1
