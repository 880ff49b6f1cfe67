"""PostgreSQL restarts while a registration job is being analysed: the worker waits for it (offset uncommitted),
finishes the job once it is back, and the synchronous POST that was waiting answers 201, not 504 (issue 12)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from infra.broker import EmbeddedBroker, free_port
from infra.database import ensure_database, with_database
from infra.settings import PROJECT_ROOT
from tests.clips import mid_job_clip
from tests.gateway_server import serve_gateway
from tests.integration.test_database_outage import PrivatePostgres
from tests.integration.test_registration_worker import client, gateway_settings, rows
from tests.registration_worker import start_worker_process, stop_worker_process

pytestmark = pytest.mark.integration
PG_DIR = PROJECT_ROOT / ".data" / "test-pg-registration-outage"
OUTAGE_S = 4.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    PG_DIR.parent.mkdir(parents=True, exist_ok=True)
    server = PrivatePostgres(PG_DIR)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(free_port()).start()
    yield embedded
    embedded.stop()


def job_row(database_url: str) -> tuple[str, float] | None:
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            row = conn.execute("SELECT state, progress FROM registration_jobs ORDER BY created_at DESC LIMIT 1"
                               ).fetchone()
    except psycopg.OperationalError:
        return None
    return None if row is None else (str(row[0]), float(row[1]))


def test_a_database_restart_mid_job_delays_the_registration_but_it_finishes_once(
        postgres: PrivatePostgres, own_broker: EmbeddedBroker) -> None:
    database_url = with_database(postgres.url, f"registration_outage_{uuid.uuid4().hex[:8]}")
    ensure_database(database_url)
    settings = gateway_settings(own_broker.bootstrap, database_url)
    answers: list[httpx.Response] = []
    worker = start_worker_process(settings)  # first: it starts up in its own process while the clip is encoded here
    try:
        clip = mid_job_clip()
        with serve_gateway(settings) as url, client(url) as admin:
            def register() -> None:
                answers.append(admin.post("/avatar/register", data={"avatar_name": "outage", "user_id": "olga"},
                                          files={"file": ("clip.mp4", clip, "video/mp4")}, timeout=300))

            poster = threading.Thread(target=register)
            poster.start()
            deadline = time.monotonic() + 90
            while (row := job_row(database_url)) is None or row[1] < 0.05:
                assert time.monotonic() < deadline and poster.is_alive(), f"the job never got going: {answers}"
                time.sleep(0.05)
            assert row[0] == "analysing", row

            postgres.stop()
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, "the worker waits for the database instead of giving up"
            postgres.start()

            poster.join(240)
            assert not poster.is_alive(), "the synchronous POST ends once the job is finished"
        [answer] = answers
        assert answer.status_code == 201, answer.text
        avatar_id = answer.json()["avatar_id"]
        assert answer.json()["analysis"]["media_kind"] == "video"
        assert rows(database_url, "SELECT attempts, state FROM registration_jobs") == [(1, "done")], \
            "one attempt: the job was not started again, nor dead-lettered"
        assert rows(database_url, "SELECT count(*) FROM avatars WHERE avatar_id = %s", avatar_id) == [(1,)]
        assert rows(database_url, "SELECT count(*) FROM registration_uploads") == [(0,)]
    finally:
        stop_worker_process(worker)
