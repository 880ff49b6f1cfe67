"""Fuzzing fixtures: a production-mode gateway in-process on its own throw-away database, and leak checks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from infra.broker import EmbeddedBroker, free_port
from infra.crypto import new_key
from infra.database import ensure_database, with_database
from infra.migrations import migrate
from infra.settings import Settings
from tests.gateway_server import serve_gateway
from tests.registration_worker import worker_process

ADMIN_TOKEN = "fuzz-admin-token-0123456789abcdef"
# What must never reach a client: a stack trace, a path of this machine, the database driver, SQL.
# SQL keywords are matched in capitals only: page text may well say "select an avatar".
LEAK_PATTERNS = re.compile(r"Traceback|File \"|/work/|/root/|site-packages|psycopg|SELECT |INSERT INTO|UPDATE \w+ SET|"
                           r"DELETE FROM|syntax error at")


def leaks_in(text: str) -> list[str]:
    return sorted({match.group(0) for match in LEAK_PATTERNS.finditer(text)})


@pytest.fixture(scope="session")
def fuzz_database(database_url: str) -> Iterator[str]:
    """A database of its own: fuzzing as the admin may delete or register anything, other tests never see it."""
    name = f"avatar_fuzz_{uuid.uuid4().hex[:8]}"
    url = with_database(database_url, name)
    ensure_database(url)
    migrate(url)
    yield url
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def fuzz_broker() -> Iterator[EmbeddedBroker]:
    """A broker of its own: the registration worker of the fuzz database must not share the stack's group."""
    embedded = EmbeddedBroker(free_port()).start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def fuzz_settings(fuzz_broker: EmbeddedBroker, fuzz_database: str) -> Settings:
    # Production mode (auth on), limits high enough that fuzzing measures handling, not the rate limiter.
    return Settings(kafka_bootstrap_servers=fuzz_broker.bootstrap, database_url=fuzz_database, port=free_port(),
                    dev_mode=False, admin_token=ADMIN_TOKEN, auth_secret="fuzz-signing-secret-0123456789",
                    face_data_keys=new_key("fuzz").to_text(), rate_limit_uploads_per_min=100_000,
                    rate_limit_requests_per_min=100_000, rate_limit_connections_per_min=100_000,
                    rest_process_timeout_s=2.0, max_upload_bytes=2 * 1024 * 1024,
                    _env_file=None)


@pytest.fixture(scope="session")
def fuzz_gateway(fuzz_settings: Settings) -> Iterator[str]:
    with worker_process(fuzz_settings), serve_gateway(fuzz_settings) as base_url:
        yield base_url
