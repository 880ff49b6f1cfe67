"""Reads and writes streaming sessions in PostgreSQL (so a session outlives the gateway that opened it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import ConnectionPool


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    avatar_id: str
    user_id: str | None
    created_at: datetime
    last_active_at: datetime
    ended_at: datetime | None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class SessionStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def open(self, session_id: str, avatar_id: str, user_id: str | None) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO sessions (session_id, avatar_id, user_id) VALUES (%s, %s, %s)"
                         " ON CONFLICT (session_id) DO UPDATE SET avatar_id = EXCLUDED.avatar_id,"
                         " last_active_at = now()", (session_id, avatar_id, user_id))

    def get(self, session_id: str) -> SessionRecord | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT session_id, avatar_id, user_id, created_at, last_active_at, ended_at"
                               " FROM sessions WHERE session_id = %s", (session_id,)).fetchone()
        return None if row is None else SessionRecord(*row)

    def touch(self, session_ids: list[str]) -> None:
        if session_ids:
            with self.pool.connection() as conn:
                conn.execute("UPDATE sessions SET last_active_at = now() WHERE session_id = ANY(%s)"
                             " AND ended_at IS NULL", (session_ids,))

    def end_idle(self, idle_s: float) -> list[str]:
        """Mark sessions idle for ``idle_s`` as ended and return them; each is claimed by one gateway only."""
        with self.pool.connection() as conn:
            rows = conn.execute("UPDATE sessions SET ended_at = now() WHERE ended_at IS NULL"
                                " AND last_active_at < now() - make_interval(secs => %s) RETURNING session_id",
                                (idle_s,)).fetchall()
        return [row[0] for row in rows]
