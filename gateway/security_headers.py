"""Security headers on every HTTP response: a Content-Security-Policy fitted to the pages, no framing, no sniffing."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What the player and registration pages load (gateway/static): their own scripts, stylesheets and Vazirmatn
# fonts; the player's MediaSource and idle clip as blob: URLs (no camera, so no mediastream:); the
# registration page's thumbnail of the chosen file as a blob: URL; the icon is a data: URL; fetch and the
# WebSocket go to this origin only ('self' covers ws:/wss: to the same host). Nothing inline, nothing remote.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; font-src 'self'; "
            "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
            "worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

# The same on every response, including JSON and MP4: a browser never renders them as another type, never
# frames them, and never sends a URL (which may carry ?token=) to another site.
FIXED_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure ASGI middleware (not BaseHTTPMiddleware), so streamed responses pass through unbuffered.

    A response that sets its own Content-Security-Policy (the /docs pages) keeps it; every other gets PAGE_CSP.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus each security header it does not already have."""
    present = {name.lower() for name, _ in headers}
    added = [(name, value) for name, value in FIXED_HEADERS if name not in present]
    if b"content-security-policy" not in present:
        added.append((b"content-security-policy", PAGE_CSP.encode()))
    return headers + added
