"""``GET /admin/audit``: the admin reads the audit log, newest first, a page at a time; and who a caller is in it."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from gateway.auth import Principal
from gateway.deps import require_admin, services
from gateway.services import Services
from infra.audit import MAX_PAGE, AuditActor, AuditLog

router = APIRouter(tags=["admin"])
_FILTER = r"^[A-Za-z0-9_.@:-]{1,128}$"


def audit_actor(who: Principal, request: Request) -> AuditActor:
    """The caller as the audit log names them, with the address the request came from."""
    client_ip = request.client.host if request.client else None
    if who.is_admin or who.user_id is None:
        return AuditActor.admin(client_ip)
    return AuditActor.user(who.user_id, client_ip)


@router.get("/admin/audit", summary="The audit log, newest first (admin only)",
            responses={401: {"description": "no or bad token"}, 403: {"description": "not the admin"}})
async def read_audit_log(
    _admin: Annotated[Principal, Depends(require_admin)],
    running: Annotated[Services, Depends(services)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="entries per page")] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="the next_before of the previous page")]
    = None,
    action: Annotated[str | None, Query(pattern=_FILTER, description="e.g. avatar.registered")] = None,
    avatar_id: Annotated[str | None, Query(pattern=_FILTER)] = None,
    user_id: Annotated[str | None, Query(pattern=_FILTER, description="as actor or as subject")] = None,
) -> dict[str, Any]:
    entries = await asyncio.to_thread(AuditLog(running.store.pool).page, limit=limit, before_id=before,
                                      action=action, avatar_id=avatar_id, user_id=user_id)
    # A full page may have more behind it; the cursor is the oldest id shown, so new entries never shift pages.
    next_before = entries[-1].id if len(entries) == limit else None
    return {"entries": [entry.to_dict() for entry in entries], "count": len(entries), "next_before": next_before}
