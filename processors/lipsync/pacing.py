"""When a session's next chunk must be out: the end of what its client has been sent, on the client's clock.

A client starts playing a request when its first chunk arrives and plays in real time, so chunk k + 1 must
leave before ``first chunk's send time + end of chunk k``. The scheduler (processors/common/scheduling.py)
puts a session whose next chunk is nearly due before new work. Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import OrderedDict

from schemas.session import SessionError, VideoChunkMeta

MAX_REQUESTS = 1024  # requests whose start is remembered; an abandoned one is forgotten oldest first


class PlaybackDeadlines:
    """Per request: when its playback started (as the client sees it), and so when its next chunk is due."""

    def __init__(self, max_requests: int = MAX_REQUESTS) -> None:
        self.max_requests = max_requests
        self._started: OrderedDict[str, float] = OrderedDict()

    def next_due(self, meta: VideoChunkMeta | SessionError, now: float) -> float | None:
        """When the chunk after ``meta`` (sent at ``now``) must be sent; None once the request is over."""
        if isinstance(meta, SessionError) or meta.is_last:
            if meta.request_id is not None:
                self._started.pop(meta.request_id, None)
            return None
        # A worker that took the request over mid-way: the client has been playing up to this chunk.
        started = self._started.setdefault(meta.request_id, now - meta.pts_ms / 1000)
        while len(self._started) > self.max_requests:
            self._started.popitem(last=False)
        return started + (meta.pts_ms + meta.duration_ms) / 1000
