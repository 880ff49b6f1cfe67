"""Rate limits on the gateway's costly POSTs (uploads, whole-file requests, WebRTC offers), as pure ASGI middleware.

Pure ASGI rather than ``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware): that one runs every request
through an extra task and memory stream, a cost each request pays on a busy event loop (the WebRTC flush is one
of them), and it buffers nothing it needs to here. Requests it does not limit pass straight through.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.ratelimit import Limits, RateLimiter, caller_key
from infra.settings import Settings

LIMITED_POSTS = {"/avatar/register": "uploads", "/avatar/process": "requests", "/webrtc/offer": "connections"}


class PostRateLimits:
    """Answers 429 ``rate_limited`` (with Retry-After) when a caller's bucket for a limited POST is empty."""

    def __init__(self, app: ASGIApp, settings: Settings, limits: Limits) -> None:
        self.app = app
        self.settings = settings
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = limited_kind(scope)
        if kind is not None:
            limiter: RateLimiter = getattr(self.limits, kind)
            if not limiter.allow(caller_key(self.settings, Request(scope))):
                refusal = JSONResponse({"code": "rate_limited", "message": f"too many {kind}; try again later"},
                                       status_code=429, headers={"Retry-After": str(limiter.retry_after_s())})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def limited_kind(scope: Scope) -> str | None:
    """Which limit an HTTP request counts against, or None (not a limited POST, or not HTTP at all)."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    return LIMITED_POSTS.get(scope.get("path", ""))
