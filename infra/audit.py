"""The audit log: who registered or deleted which avatar and which admin actions ran, when and from where."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

ActorKind = Literal["admin", "user", "system"]
AVATAR_REGISTERED = "avatar.registered"
AVATAR_DELETED = "avatar.deleted"
AVATAR_DELETE_REFUSED = "avatar.delete_refused"  # details name the refusal's code; nothing was deleted
AVATAR_VOICE_CHANGED = "avatar.voice_changed"
TOKEN_ISSUED = "token.issued"
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditActor:
    """Who acts: the admin, a user (by the id in their token), or the service itself; and from which address."""

    actor: str
    kind: ActorKind
    client_ip: str | None = None

    @classmethod
    def admin(cls, client_ip: str | None) -> AuditActor:
        return cls("admin", "admin", client_ip)

    @classmethod
    def user(cls, user_id: str, client_ip: str | None) -> AuditActor:
        return cls(user_id, "user", client_ip)

    @classmethod
    def system(cls) -> AuditActor:
        """The service acting on its own (at start-up, say): no caller, no address."""
        return cls("system", "system")


@dataclass(frozen=True)
class AuditEntry:
    """One thing that happened; ``details`` holds what else matters (never a secret or face data)."""

    action: str
    actor: AuditActor
    avatar_id: str | None = None
    subject_user_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """An entry as stored, with its id (the paging cursor) and time."""

    id: int
    created_at: datetime
    actor: str
    actor_kind: str
    action: str
    avatar_id: str | None
    subject_user_id: str | None
    client_ip: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = self.__dict__.copy()
        out["created_at"] = self.created_at.isoformat()
        return out


def write_entry(conn: psycopg.Connection[Any], entry: AuditEntry) -> None:
    """Insert on ``conn``: inside the caller's transaction, the entry commits or rolls back with the change."""
    conn.execute(
        "INSERT INTO audit_log (actor, actor_kind, action, avatar_id, subject_user_id, client_ip, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (entry.actor.actor, entry.actor.kind, entry.action, entry.avatar_id, entry.subject_user_id,
         entry.actor.client_ip, Jsonb(entry.details)),
    )


class AuditLog:
    """The audit_log table: append entries that have no transaction of their own, read them newest first."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def write(self, entry: AuditEntry) -> None:
        with self.pool.connection() as conn:
            write_entry(conn, entry)

    def page(self, *, limit: int = 100, before_id: int | None = None, action: str | None = None,
             avatar_id: str | None = None, user_id: str | None = None) -> list[AuditRecord]:
        """Up to ``limit`` entries older than ``before_id``, newest first; ``user_id`` matches actor or subject."""
        conditions: list[str] = []
        params: list[Any] = []
        for column, value in (("id < %s", before_id), ("action = %s", action), ("avatar_id = %s", avatar_id)):
            if value is not None:
                conditions.append(column)
                params.append(value)
        if user_id is not None:
            conditions.append("(actor = %s OR subject_user_id = %s)")
            params += [user_id, user_id]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        params.append(max(1, min(limit, MAX_PAGE)))
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, created_at, actor, actor_kind, action, avatar_id, subject_user_id, client_ip, details"
                f" FROM audit_log{where} ORDER BY id DESC LIMIT %s", params).fetchall()
        return [AuditRecord(*row) for row in rows]
