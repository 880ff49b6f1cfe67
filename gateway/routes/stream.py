"""The WebSocket route ``/ws/stream`` (the protocol itself lives in gateway/ws.py)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.auth import AuthError, bearer, principal_for
from gateway.ratelimit import caller_key
from gateway.ws import StreamSession
from schemas.websocket import Error

router = APIRouter()


@router.websocket("/ws/stream")
async def stream(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    # Accepted first, then closed with a code and reason: a refused handshake would tell the client nothing.
    await websocket.accept()
    try:
        who = principal_for(services.settings, bearer(websocket))
    except AuthError as error:
        await websocket.close(code=4401, reason=str(error.detail["message"]))  # type: ignore[index]
        return
    limits = websocket.app.state.limits
    if not limits.connections.allow(caller_key(services.settings, websocket)):
        await websocket.close(code=4429, reason="too many connections; try again later")
        return
    cap = services.settings.max_concurrent_users
    if cap and services.open_streams >= cap:  # one event loop per gateway: no lock needed
        refusal = Error(code="too_many_sessions", message=f"this gateway serves at most {cap} sessions at once; "
                                                          "try again later")
        await websocket.send_json(refusal.model_dump(exclude_none=True))
        await websocket.close(code=1013, reason="too many sessions")
        return
    services.open_streams += 1
    try:
        await StreamSession(websocket, services, who).run()
    finally:
        services.open_streams -= 1
