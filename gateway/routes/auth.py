"""``POST /auth/token``: the admin issues signed per-user tokens for the WebSocket and REST APIs."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from gateway.auth import Principal, issue_user_token
from gateway.deps import require_admin, services
from gateway.routes.audit import audit_actor
from gateway.services import Services
from infra.audit import TOKEN_ISSUED, AuditEntry, AuditLog

router = APIRouter(tags=["auth"])


class TokenRequest(BaseModel):
    user_id: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")
    ttl_s: int | None = Field(default=None, ge=60, le=365 * 24 * 3600)


class TokenResponse(BaseModel):
    token: str
    user_id: str
    expires_in_s: int


@router.post("/auth/token", summary="Issue a signed token for one user (admin only)",
             responses={401: {"description": "no or bad token"}, 403: {"description": "not the admin"},
                        503: {"description": "AUTH_SECRET is not set"}})
async def issue_token(body: TokenRequest, admin: Annotated[Principal, Depends(require_admin)],
                      running: Annotated[Services, Depends(services)], request: Request) -> TokenResponse:
    settings = running.settings
    if settings.auth_secret is None:
        raise HTTPException(503, detail={"code": "auth_not_configured",
                                         "message": "set AUTH_SECRET to issue user tokens"})
    ttl = body.ttl_s or settings.user_token_ttl_s
    # Logged before the token exists: a token the audit log cannot record is not issued (the database's 503).
    entry = AuditEntry(TOKEN_ISSUED, audit_actor(admin, request), subject_user_id=body.user_id,
                       details={"ttl_s": ttl})
    await asyncio.to_thread(AuditLog(running.store.pool).write, entry)
    return TokenResponse(token=issue_user_token(settings, body.user_id, ttl), user_id=body.user_id,
                         expires_in_s=ttl)
