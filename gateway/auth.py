"""Who is calling: the admin token, signed per-user tokens, or (in dev mode) anyone as admin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request, WebSocket

from infra.settings import Settings


@dataclass(frozen=True)
class Principal:
    user_id: str | None  # None for the admin
    is_admin: bool
    # Dev mode lets a caller without a token act as the admin; it is told apart from one holding ADMIN_TOKEN for
    # what must survive any anonymous caller (the bundled sample avatar every new user opens first).
    anonymous: bool = False

    def may_use(self, owner: str) -> bool:
        """Admins use every avatar; a user their own and the shared system ones."""
        return self.is_admin or owner in (self.user_id, "system")

    def may_manage(self, owner: str) -> bool:
        return self.is_admin or owner == self.user_id


ADMIN = Principal(user_id=None, is_admin=True)
DEV_MODE_CALLER = Principal(user_id=None, is_admin=True, anonymous=True)


class AuthError(HTTPException):
    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(status_code=status_code, detail={"code": "unauthorized" if status_code == 401
                                                          else "forbidden", "message": message})


def issue_user_token(settings: Settings, user_id: str, ttl_s: int | None = None) -> str:
    """``<user_id b64>.<expiry>.<hmac>``: verifiable by any gateway sharing AUTH_SECRET, no lookup."""
    expiry = int(time.time()) + (ttl_s or settings.user_token_ttl_s)
    body = f"{_b64(user_id.encode())}.{expiry}"
    return f"{body}.{_sign(settings, body)}"


def verify_user_token(settings: Settings, token: str) -> str | None:
    """The user id of a valid, unexpired token; None otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or settings.auth_secret is None:
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(parts[2], _sign(settings, body)) or int(parts[1]) < time.time():
        return None
    try:
        return base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def principal_for(settings: Settings, token: str | None) -> Principal:
    """Resolve a bearer token (or its absence) to a principal, or raise AuthError."""
    if token:
        if settings.admin_token and hmac.compare_digest(token, settings.admin_token.get_secret_value()):
            return ADMIN
        user_id = verify_user_token(settings, token)
        if user_id is not None:
            return Principal(user_id=user_id, is_admin=False)
        raise AuthError("the token is invalid or expired")
    if settings.dev_mode:
        return DEV_MODE_CALLER
    raise AuthError("a bearer token is required (Authorization: Bearer <token>, or ?token= on WebSockets)")


def bearer(request: Request | WebSocket) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query_params.get("token") or None


def _sign(settings: Settings, body: str) -> str:
    assert settings.auth_secret is not None
    digest = hmac.new(settings.auth_secret.get_secret_value().encode(), body.encode(), hashlib.sha256).digest()
    return _b64(digest)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
