"""``POST /webrtc/offer``, ``POST /webrtc/peers/{id}/interrupt``, ``DELETE /webrtc/peers/{id}``: WebRTC output.

Signalling is one HTTP exchange (the browser gathers its candidates first, aiortc does not trickle); the
session is the caller's, checked as a WebSocket resume checks it. The WebSocket stays the control channel:
text in, interrupts, subtitles. A WebSocket interrupt reaches the peer through ``avatar.control`` only for
requests still in flight; one whose chunks have all arrived may still be queued for playback on the peer, so
the client also flushes its peer here (the MSE player drops its buffer the same way, in the browser).

Every dependency of these routes runs on the event loop (gateway/deps.py says why: a thread hop delayed the flush).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from gateway.auth import Principal
from gateway.deps import principal, services
from gateway.services import Services
from gateway.speak import Refusal
from gateway.webrtc.peers import PeerRefused, WebRtcHub, WebRtcPeer
from schemas.common import SessionId

router = APIRouter(tags=["webrtc"])
MAX_SDP_CHARS = 64 * 1024  # a browser's offer is a few kB; this bounds what aiortc is asked to parse


class WebRtcOffer(BaseModel):
    session_id: SessionId = Field(description="the session_ready's session_id of the caller's WebSocket")
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS, description="the browser's complete offer "
                     "(after ICE gathering: no trickle)")
    type: Literal["offer"] = "offer"


class WebRtcAnswer(BaseModel):
    peer_id: str = Field(description="DELETE /webrtc/peers/{peer_id} closes it")
    sdp: str
    type: Literal["answer"] = "answer"


async def hub(request: Request) -> WebRtcHub:
    found: WebRtcHub | None = getattr(request.app.state, "webrtc", None)
    if found is None:
        raise HTTPException(503, detail={"code": "webrtc_disabled",
                                         "message": "WebRTC output is off on this gateway (WEBRTC_MAX_PEERS=0)"})
    return found


async def _owned_session(running: Services, session_id: str, who: Principal) -> str | None:
    """The session's user (None: the admin's) if ``who`` may use it; 404 or 410 otherwise."""
    try:
        return (await asyncio.to_thread(running.sessions.resumable, session_id, who)).user_id
    except Refusal as refusal:
        status = 410 if refusal.code == "session_ended" else 404
        raise HTTPException(status, detail={"code": refusal.code, "message": refusal.message}) from None


async def _owned_peer(running: Services, peers: WebRtcHub, peer_id: str, session_id: str, who: Principal) -> WebRtcPeer:
    """The caller's peer ``peer_id`` of ``session_id``; 404 (or the session's refusal) otherwise."""
    await _owned_session(running, session_id, who)
    peer = peers.peer_of(peer_id, session_id)
    if peer is None:
        raise HTTPException(404, detail={"code": "unknown_peer", "message": f"no WebRTC peer '{peer_id}'"})
    return peer


@router.post("/webrtc/offer", summary="Receive a session's video and audio over WebRTC (SDP offer in, answer out)",
             responses={401: {"description": "no or bad token"}, 404: {"description": "no such session of yours"},
                        400: {"description": "the offer was refused"},
                        503: {"description": "WebRTC is off or this gateway serves its maximum of peers"}})
async def offer(body: WebRtcOffer, who: Annotated[Principal, Depends(principal)],
                running: Annotated[Services, Depends(services)],
                peers: Annotated[WebRtcHub, Depends(hub)]) -> WebRtcAnswer:
    owner = await _owned_session(running, body.session_id, who)
    try:
        peer_id, answer = await peers.answer(body.session_id, body.sdp, body.type, owner)
    except PeerRefused as refusal:
        raise HTTPException(refusal.status, detail={"code": refusal.code, "message": refusal.message}) from None
    return WebRtcAnswer(peer_id=peer_id, sdp=answer.sdp)


@router.delete("/webrtc/peers/{peer_id}", status_code=204, summary="Close a WebRTC peer",
               responses={404: {"description": "no such peer of yours"}})
async def close(peer_id: str, session_id: SessionId, who: Annotated[Principal, Depends(principal)],
                running: Annotated[Services, Depends(services)],
                peers: Annotated[WebRtcHub, Depends(hub)]) -> Response:
    await _owned_peer(running, peers, peer_id, session_id, who)
    await peers.close(peer_id)
    return Response(status_code=204)


@router.post("/webrtc/peers/{peer_id}/interrupt", status_code=204, summary="Flush a WebRTC peer's queued media",
             responses={404: {"description": "no such peer of yours"}})
async def interrupt(peer_id: str, session_id: SessionId, who: Annotated[Principal, Depends(principal)],
                    running: Annotated[Services, Depends(services)],
                    peers: Annotated[WebRtcHub, Depends(hub)]) -> Response:
    peer = peers.peer_of(peer_id, session_id)
    if peer is None or not (who.is_admin or peer.owner == who.user_id):
        # No database round trip on the interrupt's path when the peer knows its owner: it is the time to
        # stop. Anything else is refused as the session's own check refuses it.
        peer = await _owned_peer(running, peers, peer_id, session_id, who)
    peer.interrupt(None)
    return Response(status_code=204)
