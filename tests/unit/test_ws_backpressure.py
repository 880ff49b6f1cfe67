"""A slow WebSocket client is dropped at a bound (told why, resumable) instead of buffering without end."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

from consumers.session_reader import Chunk
from gateway.ws import CLOSE_TOO_SLOW, StreamSession
from infra.settings import Settings


class StalledSocket:
    """A client whose network has stopped draining: every send waits until the test ends."""

    headers: ClassVar[dict[str, str]] = {}
    query_params: ClassVar[dict[str, str]] = {}
    client = None

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.release = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        await self.release.wait()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code


def chunk(seq: int) -> Chunk:
    return Chunk(request_id="r1", seq=seq, pts_ms=seq * 480, duration_ms=480, mime="video/mp4", is_last=False,
                 text=None, data=b"x" * 100, offset=seq)


async def test_a_stalled_client_is_dropped_at_the_bound_with_a_resumable_error() -> None:
    settings = Settings(ws_max_pending_messages=8, _env_file=None)
    detached: list[str] = []
    services: Any = SimpleNamespace(settings=settings, sessions=SimpleNamespace(detach=detached.append))
    socket = StalledSocket()
    session = StreamSession(socket, services)  # type: ignore[arg-type]
    session.session_id = "s1"
    sender = asyncio.create_task(session._send_loop())
    for seq in range(50):
        session._forward(chunk(seq))
    await asyncio.sleep(0.05)
    assert session.forwarder.too_slow and detached == ["s1"], "it stops reading the session's topic"
    assert session.outbox.qsize() <= 2, "the queue is bounded, not 50 deep"
    socket.release.set()
    await asyncio.wait_for(sender, 2)
    assert '"client_too_slow"' in socket.sent[-1] and "resume" in socket.sent[-1]
    assert socket.closed_with == CLOSE_TOO_SLOW
