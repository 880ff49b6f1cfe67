"""Reads a session topic: records decoded to chunks and errors, each passed once, a request's chunks assembled.

The one reader of ``avatar.session.<id>`` records, shared by the gateway's WebSocket and REST routes and the
SDK (``producers.client``). Delivery is at-least-once, so a record may come twice (redelivered, or rendered
again by a lip-sync worker taking over a crashed one's partition): a reader passes each (request, seq) once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas.envelope import EnvelopeError
from schemas.session import SessionError, SessionEvent, VideoChunkMeta

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """The pipeline reported an error for the request (its ``code`` is the protocol's error code)."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Chunk:
    """One piece of a request's fragmented MP4, as read from the session topic."""

    request_id: str
    seq: int
    pts_ms: int
    duration_ms: int
    mime: str
    is_last: bool
    text: str | None
    data: bytes
    offset: int  # position on the session topic: resume a stream after it with ``from_offset=offset + 1``


@dataclass(frozen=True)
class StreamError:
    """The pipeline's report that a request (or, with no request id, the session) failed."""

    request_id: str | None
    code: str
    message: str
    offset: int


StreamItem = Chunk | StreamError


def decode_session_record(value: bytes, offset: int) -> StreamItem | None:
    """A session-topic record as a Chunk or StreamError; None for anything this reader does not know."""
    try:
        event = SessionEvent.from_kafka(value)
    except (EnvelopeError, ValidationError) as error:
        log.warning("skipping an unreadable session event", extra={"offset": offset, "error": str(error)})
        return None
    meta = event.meta
    if isinstance(meta, VideoChunkMeta):
        return Chunk(request_id=meta.request_id, seq=meta.seq, pts_ms=meta.pts_ms, duration_ms=meta.duration_ms,
                     mime=meta.mime, is_last=meta.is_last, text=meta.text, data=event.payload, offset=offset)
    if isinstance(meta, SessionError):
        return StreamError(request_id=meta.request_id, code=meta.code, message=meta.message, offset=offset)
    return None


class FirstCopies:
    """Says whether a session item is seen for the first time: a chunk by (request, seq), an error by
    (request, code). Remembers the ``max_requests`` requests seen last, so a long session costs bounded memory.
    """

    def __init__(self, max_requests: int = 1024) -> None:
        self.max_requests = max_requests
        self._seen: OrderedDict[str | None, set[int | str]] = OrderedDict()

    def first(self, item: StreamItem) -> bool:
        seen = self._seen.setdefault(item.request_id, set())
        self._seen.move_to_end(item.request_id)
        while len(self._seen) > self.max_requests:
            self._seen.popitem(last=False)
        identity = item.seq if isinstance(item, Chunk) else f"error:{item.code}"
        if identity in seen:
            return False
        seen.add(identity)
        return True


@dataclass
class RequestAssembler:
    """Collects one request's chunks into its MP4, whatever duplicates or reordering the delivery brings.

    The first copy of each seq is kept. The request is complete once its last chunk and every seq before it
    are here; an error for it (or for its whole session) finishes it too.
    """

    request_id: str
    chunks: dict[int, Chunk] = field(default_factory=dict)
    last_seq: int | None = None
    error: StreamError | None = None

    def add(self, item: StreamItem) -> None:
        if item.request_id != self.request_id and not (isinstance(item, StreamError) and item.request_id is None):
            return
        if isinstance(item, StreamError):
            self.error = self.error or item
            return
        self.chunks.setdefault(item.seq, item)
        if item.is_last:
            self.last_seq = item.seq

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and all(seq in self.chunks for seq in range(self.last_seq + 1))

    @property
    def finished(self) -> bool:
        return self.complete or self.error is not None

    @property
    def duration_ms(self) -> int:
        return sum(chunk.duration_ms for chunk in self.chunks.values())

    def mp4(self) -> bytes:
        """The whole MP4; raises PipelineError if the pipeline failed the request."""
        if self.error is not None:
            raise PipelineError(self.error.code, self.error.message, self.error.request_id)
        if not self.complete:
            raise PipelineError("incomplete", f"request {self.request_id} is missing chunks", self.request_id)
        assert self.last_seq is not None
        return b"".join(self.chunks[seq].data for seq in range(self.last_seq + 1))
