"""PostgreSQL wiring: make sure the database exists (or start an embedded server), then a connection pool."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)


class DatabaseError(RuntimeError):
    """The database cannot be reached or prepared."""


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise DatabaseError(f"DATABASE_URL {url!r} names no database")
    return name


def server_is_reachable(url: str, timeout_s: int = 3) -> bool:
    try:
        with psycopg.connect(with_database(url, "postgres"), connect_timeout=timeout_s):
            return True
    except psycopg.OperationalError:
        return False


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if the server does not have it yet."""
    name = database_name(url)
    try:
        with psycopg.connect(with_database(url, "postgres"), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    log.info("database created", extra={"database": name})
                except psycopg.errors.DuplicateDatabase:
                    pass  # another service created it at the same moment
    except psycopg.OperationalError as error:
        raise DatabaseError(f"cannot reach PostgreSQL at {_redact(url)}: {error}".strip()) from error


def start_embedded_server(data_dir: Path, database: str) -> tuple[Any, str]:
    """Start pgserver's bundled PostgreSQL (Unix socket only) under ``data_dir``; returns (server, url)."""
    import pgserver  # imported here: only machines without a server need it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    base = server.get_uri()
    url = with_database(base, database)
    ensure_database(url)
    log.warning("no PostgreSQL server reachable: using the embedded one", extra={"data_dir": str(data_dir)})
    return server, url


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def open_pool(url: str, size: int, *, wait: bool = True, name: str = "avatar",
              acquire_timeout_s: float = 10.0) -> ConnectionPool:
    pool = ConnectionPool(url, min_size=1, max_size=size, open=True, name=name, timeout=acquire_timeout_s,
                          kwargs={"autocommit": True, "connect_timeout": 5})
    if wait:
        try:
            pool.wait(timeout=10)
        except Exception as error:
            pool.close()
            raise DatabaseError(f"cannot open a connection to {_redact(url)}: {error}") from error
    return pool


# Backoff between attempts while the database is away: quick at first (a failover takes seconds), then capped.
RETRY_FIRST_WAIT_S = 0.2
RETRY_MAX_WAIT_S = 5.0


def retry_while_unavailable[T](operation: Callable[[], T], *, what: str, give_up_after_s: float,
                               while_waiting: Callable[[], None] = lambda: None,
                               sleep: Callable[[float], None] = time.sleep) -> T:
    """``operation()``, tried again with backoff for as long as it fails with a transient database error, for at
    most ``give_up_after_s``; then that error is raised. ``while_waiting`` is called between attempts (a
    processor's heartbeat). Only for operations that are safe to repeat (one transaction each)."""
    deadline = time.monotonic() + give_up_after_s
    wait = RETRY_FIRST_WAIT_S
    announced = False
    while True:
        try:
            result = operation()
        except psycopg.OperationalError as error:
            if time.monotonic() + wait > deadline:
                raise
            if not announced:
                log.warning("database unavailable; retrying", extra={"operation": what, "error": str(error)[:300]})
                announced = True
            while_waiting()
            sleep(wait)
            wait = min(2 * wait, RETRY_MAX_WAIT_S)
            continue
        if announced:
            log.info("database back", extra={"operation": what})
        return result
