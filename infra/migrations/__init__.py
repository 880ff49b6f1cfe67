"""Applies the numbered SQL files in this folder once each, in order, under an advisory lock."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent
_LOCK_KEY = 0x4156_4154  # any constant; serialises services migrating at the same moment


def pending_files(applied: set[str]) -> list[Path]:
    return [path for path in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")) if path.name not in applied]


def migrate(url: str) -> list[str]:
    """Bring the database at ``url`` up to date; returns the names of the files applied now."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            done = []
            for path in pending_files(applied):
                with conn.transaction():
                    conn.execute(path.read_text(encoding="utf-8").encode())
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                log.info("migration applied", extra={"migration": path.name})
                done.append(path.name)
            return done
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


@contextmanager
def throwaway_database(prefix: str, local_server: str = "postgresql://postgres@127.0.0.1:5432/postgres",
                       embedded_dir: str = "scratch-pg", *, migrated: bool = True) -> Iterator[str]:
    """A fresh, migrated database named ``<prefix>_<random>`` (tests, benchmarks), dropped afterwards.

    Uses the local server when one answers, else an embedded one under ``.data/<embedded_dir>``. ``migrated=False``
    leaves it empty, for a service of another checkout that migrates it itself.
    """
    from infra.database import ensure_database, server_is_reachable, start_embedded_server, with_database
    from infra.settings import PROJECT_ROOT

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server = None
    if server_is_reachable(local_server):
        url = with_database(local_server, name)
        ensure_database(url)
    else:
        server, url = start_embedded_server(PROJECT_ROOT / ".data" / embedded_dir, name)
    if migrated:
        migrate(url)
    try:
        yield url
    finally:
        try:
            with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            if server is not None:
                server.cleanup()
