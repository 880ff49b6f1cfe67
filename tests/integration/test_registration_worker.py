"""Registration as a processor, on a real broker and PostgreSQL: a job uploaded through one gateway is followed
and answered through another; a worker killed mid-job loses nothing and doubles nothing; bad jobs are
dead-lettered with the reason."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from pydantic import SecretStr
from skimage import data

from gateway.auth import issue_user_token
from infra.broker import EmbeddedBroker, free_port
from infra.kafka import new_producer
from infra.settings import Settings
from processors.common.kafka_app import Inbound
from schemas.dlq import DeadLetter
from schemas.registration import RegistrationJobMessage
from scripts.benchmark_registration import photo_720p
from tests.clips import mid_job_clip
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS
from tests.integration.test_tts_processor import read_until
from tests.registration_worker import run_registration_worker, start_worker_process, stop_worker_process
from tests.unit.test_registration_media import png_bytes

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-the-registration-worker-tests"


def gateway_settings(bootstrap: str, database_url: str) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, database_url=database_url, port=free_port(), dev_mode=False,
                    admin_token=SecretStr(ADMIN), auth_secret=SecretStr("r" * 32), register_sample_avatar=False,
                    face_data_keys=SecretStr(TEST_FACE_DATA_KEYS), rate_limit_uploads_per_min=10_000,
                    log_level="WARNING", _env_file=None)


def client(base_url: str, token: str = ADMIN) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def upload(gateway: httpx.Client, content: bytes, filename: str, user_id: str = "alice") -> dict[str, Any]:
    response = gateway.post("/avatar/register?async=true", data={"avatar_name": f"w-{uuid.uuid4().hex[:8]}",
                                                                 "user_id": user_id},
                            files={"file": (filename, content, "application/octet-stream")})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def poll_until(gateway: httpx.Client, job: dict[str, Any], done: Any, timeout_s: float = 90) -> list[dict[str, Any]]:
    """Every view of the job until ``done(view)`` (or the timeout)."""
    seen = [job]
    deadline = time.monotonic() + timeout_s
    while not done(seen[-1]) and time.monotonic() < deadline:
        time.sleep(0.05)
        response = gateway.get(job["status_url"])
        assert response.status_code == 200, response.text
        seen.append(response.json())
    return seen


def finished(view: dict[str, Any]) -> bool:
    return view["state"] in ("done", "failed")


def rows(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def two_gateways(broker: EmbeddedBroker, database_url: str, registration_worker: None) -> Iterator[tuple[str, str]]:
    with (serve_gateway(gateway_settings(broker.bootstrap, database_url)) as a,
          serve_gateway(gateway_settings(broker.bootstrap, database_url)) as b):
        yield a, b


def test_an_upload_through_gateway_a_is_followed_and_answered_through_gateway_b(
        two_gateways: tuple[str, str], database_url: str) -> None:
    a, b = two_gateways
    settings = gateway_settings("unused:9092", database_url)
    photo = photo_720p()
    with client(a, issue_user_token(settings, "alice")) as alice_a, \
            client(b, issue_user_token(settings, "alice")) as alice_b, \
            client(b, issue_user_token(settings, "bob")) as bob_b:
        job = upload(alice_a, photo, "face.jpg")
        assert job["status_url"] == f"/avatar/register/jobs/{job['job_id']}"
        assert bob_b.get(job["status_url"]).status_code == 404, "another user's job is not found on B either"
        seen = poll_until(alice_b, job, finished)
    final = seen[-1]
    assert final["state"] == "done" and final["http_status"] == 201, final["error"]
    progress = [view["progress"] for view in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0, "B's progress bar only grows, to 100%"
    assert final["result"]["avatar"]["avatar_id"] == job["avatar_id"] == final["result"]["avatar_id"]
    assert final["result"]["report"]["passed"] and final["result"]["analysis"]["media_kind"] == "image"
    with client(b) as admin_b:
        assert admin_b.get(f"/avatar/{job['avatar_id']}/info").json()["source_width"] == 1280
    assert rows(database_url, "SELECT count(*) FROM registration_uploads WHERE job_id = %s", job["job_id"]) == [(0,)]


def test_a_refusal_written_by_the_worker_is_mapped_to_its_status_by_any_gateway(
        two_gateways: tuple[str, str]) -> None:
    a, b = two_gateways
    with client(a) as admin_a, client(b) as admin_b:
        job = upload(admin_a, png_bytes(np.asarray(data.coffee(), dtype=np.uint8)), "coffee.png")
        final = poll_until(admin_b, job, finished)[-1]
        assert (final["state"], final["http_status"], final["error"]["code"]) == ("failed", 422, "no_face")
        sync = admin_b.post("/avatar/register", data={"avatar_name": f"w-{uuid.uuid4().hex[:8]}", "user_id": "al"},
                            files={"file": ("coffee.png", png_bytes(np.asarray(data.coffee())), "image/png")})
    assert (sync.status_code, sync.json()["code"]) == (422, "no_face")
    assert sync.json()["report"]["passed"] is False


# ---- a worker killed mid-job, on a broker of its own (the shared worker must not take the job) ------------


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(free_port()).start()
    yield embedded
    embedded.stop()


def test_a_worker_killed_mid_job_loses_nothing_and_its_successor_registers_the_avatar_once(
        own_broker: EmbeddedBroker, database_url: str) -> None:
    settings = gateway_settings(own_broker.bootstrap, database_url)
    first = start_worker_process(settings)  # first: it starts up in its own process while the clip is encoded here
    successor: subprocess.Popen[bytes] | None = None
    try:
        clip = mid_job_clip()
        with serve_gateway(settings) as url, client(url) as admin:
            job = upload(admin, clip, "clip.mp4")
            busy = poll_until(admin, job, lambda view: view["progress"] >= 0.05 or finished(view))[-1]
            assert busy["state"] == "analysing", f"the job should be mid-analysis when the worker dies: {busy}"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            successor = start_worker_process(settings)
            final = poll_until(admin, job, finished, timeout_s=180)[-1]
        assert (final["state"], final["http_status"]) == ("done", 201), final["error"]
        assert final["result"]["analysis"]["media_kind"] == "video" and final["result"]["analysis"]["frames"] > 100
        avatar_id = job["avatar_id"]
        assert rows(database_url, "SELECT attempts FROM registration_jobs WHERE job_id = %s", job["job_id"]) == [(2,)]
        assert rows(database_url, "SELECT count(*) FROM avatars WHERE avatar_id = %s", avatar_id) == [(1,)]
        assert rows(database_url, "SELECT count(*) FROM avatar_face_data WHERE avatar_id = %s", avatar_id) == [(1,)]
        assert rows(database_url, "SELECT count(*) FROM audit_log WHERE avatar_id = %s AND action = %s", avatar_id,
                    "avatar.registered") == [(1,)]
        staged = rows(database_url, "SELECT count(*) FROM registration_uploads WHERE job_id = %s", job["job_id"])
        assert staged == [(0,)], "the staged bytes go with the job's end"
    finally:
        stop_worker_process(first)
        if successor is not None:
            stop_worker_process(successor)


def test_a_redelivered_finished_job_changes_nothing_and_bad_jobs_are_dead_lettered_with_the_reason(
        own_broker: EmbeddedBroker, database_url: str) -> None:
    settings = gateway_settings(own_broker.bootstrap, database_url)
    photo = png_bytes(np.asarray(data.astronaut(), dtype=np.uint8))
    with run_registration_worker(settings) as worker, serve_gateway(settings) as url, client(url) as admin:
        job = upload(admin, photo, "face.png")
        assert poll_until(admin, job, finished)[-1]["state"] == "done"
        again = RegistrationJobMessage(job_id=job["job_id"], avatar_id=job["avatar_id"], upload_bytes=len(photo),
                                       upload_sha256=hashlib.sha256(photo).hexdigest(), ts_ms=0)
        assert list(worker.handle(Inbound(job["job_id"].encode(), again.to_kafka(), recovering=True))) == []
        assert rows(database_url, "SELECT count(*) FROM avatars WHERE avatar_id = %s", job["avatar_id"]) == [(1,)]
        assert rows(database_url, "SELECT attempts, state FROM registration_jobs WHERE job_id = %s",
                    job["job_id"]) == [(1, "done")]
        unknown = RegistrationJobMessage(job_id="never-staged", avatar_id="av-nowhere", upload_bytes=1,
                                         upload_sha256="0" * 64, ts_ms=0)
        producer = new_producer(settings)
        producer.produce(settings.kafka_registration_topic, b"{not json", key=b"garbage")
        producer.produce(settings.kafka_registration_topic, unknown.to_kafka(), key=b"never-staged")
        assert producer.flush(10) == 0
        letters = read_until(settings, settings.kafka_dlq_topic,
                             lambda got: {m.key for m in got} >= {b"garbage", b"never-staged"})
    reasons = {m.key: DeadLetter.from_headers(m.key, m.value, m.headers).reason for m in letters}
    assert "not a valid avatar.registrations v1 message" in reasons[b"garbage"]
    assert "no registration job 'never-staged'" in reasons[b"never-staged"]
