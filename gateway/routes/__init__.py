"""Every HTTP and WebSocket route of the gateway; app.py includes ROUTERS in this order."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.routes import audit, auth, avatars, health, idle, metrics, pages, process, stream, webrtc

ROUTERS: list[APIRouter] = [health.router, auth.router, metrics.router, stream.router, process.router, pages.router,
                           avatars.router, idle.router, audit.router, webrtc.router]
