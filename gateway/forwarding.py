"""Which of a session's chunks and errors a WebSocket client is sent, decided without sockets.

A client must never see a chunk of a request it interrupted, the chunks it already had before it resumed,
a redelivered copy, or a queue that grows without bound because it reads too slowly.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

from consumers.session_reader import Chunk, FirstCopies, StreamError, StreamItem
from gateway.speak import Refusal


class Verdict(Enum):
    FORWARD = "forward"
    DROP = "drop"
    TOO_SLOW = "too_slow"  # the client is this far behind: stop sending, tell it to resume, close


class Forwarder:
    """One connection's filter over its session's items, and the requests it has in flight."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.in_flight: OrderedDict[str, None] = OrderedDict()  # accepted, final chunk not yet forwarded
        self.interrupted: set[str] = set()
        self.resume_after: tuple[str, int] | None = None  # (request_id, seq) the client already received
        self.too_slow = False
        self.copies = FirstCopies()

    def accept(self, request_id: str) -> None:
        """A request is on its way; call before producing it, as its first chunk may come back at once."""
        self.in_flight[request_id] = None

    def withdraw(self, request_id: str) -> None:
        """A request that was not queued after all."""
        self.in_flight.pop(request_id, None)

    @property
    def queued_behind(self) -> int:
        """How many requests play before the newest."""
        return max(0, len(self.in_flight) - 1)

    def interrupt(self, request_id: str | None) -> list[str]:
        """Stop one request in flight, or all: from now on none of their chunks is forwarded."""
        if request_id is not None and request_id not in self.in_flight:
            raise Refusal("unknown_request", f"request '{request_id}' is not in flight")
        stopped = [request_id] if request_id is not None else list(self.in_flight)
        self.interrupted.update(stopped)
        for stopped_id in stopped:
            self.in_flight.pop(stopped_id, None)
        return stopped

    def resume_from_chunk(self, request_id: str, seq: int) -> None:
        """Reading from the session's start, skip everything up to and including this chunk."""
        self.resume_after = (request_id, seq)

    def offer(self, item: StreamItem, pending: int) -> Verdict:
        """Whether ``item`` goes to the client, which has ``pending`` messages not yet sent."""
        if self.too_slow or item.request_id in self.interrupted:
            return Verdict.DROP
        if self.resume_after is not None:
            if isinstance(item, Chunk) and (item.request_id, item.seq) == self.resume_after:
                self.resume_after = None
            return Verdict.DROP
        if not self.copies.first(item):
            return Verdict.DROP  # a duplicate (e.g. redelivered after a processor restart)
        if isinstance(item, StreamError) or item.is_last:
            self.in_flight.pop(item.request_id or "", None)
        if pending >= self.max_pending:
            self.too_slow = True
            return Verdict.TOO_SLOW
        return Verdict.FORWARD
