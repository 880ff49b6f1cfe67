"""What a WebSocket client is sent of its session (gateway/forwarding.py), decided without sockets."""

from __future__ import annotations

import pytest

from consumers.session_reader import Chunk, StreamError
from gateway.forwarding import Forwarder, Verdict
from gateway.speak import Refusal

FORWARD, DROP, TOO_SLOW = Verdict.FORWARD, Verdict.DROP, Verdict.TOO_SLOW


def chunk(request_id: str, seq: int, *, last: bool = False) -> Chunk:
    return Chunk(request_id=request_id, seq=seq, pts_ms=seq * 480, duration_ms=480, mime="video/mp4",
                 is_last=last, text=None, data=b"", offset=seq)


def failure(request_id: str | None, code: str = "tts_failed") -> StreamError:
    return StreamError(request_id=request_id, code=code, message="it failed", offset=0)


def offered(forwarder: Forwarder, *items: Chunk | StreamError) -> list[Verdict]:
    return [forwarder.offer(item, pending=0) for item in items]


def test_chunks_are_forwarded_once_each_and_a_request_leaves_the_flight_with_its_last() -> None:
    forwarder = Forwarder(max_pending=8)
    forwarder.accept("r1")
    forwarder.accept("r2")
    assert forwarder.queued_behind == 1
    assert offered(forwarder, chunk("r1", 0), chunk("r1", 0), chunk("r1", 1, last=True)) == [FORWARD, DROP, FORWARD]
    assert list(forwarder.in_flight) == ["r2"] and forwarder.queued_behind == 0


def test_an_error_ends_its_request_and_a_redelivered_error_is_not_shown_again() -> None:
    forwarder = Forwarder(max_pending=8)
    forwarder.accept("r1")
    assert offered(forwarder, failure("r1"), failure("r1")) == [FORWARD, DROP]
    assert not forwarder.in_flight


def test_interrupting_everything_stops_every_request_in_flight_and_their_later_chunks() -> None:
    forwarder = Forwarder(max_pending=8)
    for request_id in ("r1", "r2"):
        forwarder.accept(request_id)
    assert forwarder.interrupt(None) == ["r1", "r2"] and not forwarder.in_flight
    assert offered(forwarder, chunk("r1", 3), chunk("r2", 0), failure("r2", "interrupted")) == [DROP, DROP, DROP]
    forwarder.accept("r3")
    assert offered(forwarder, chunk("r3", 0)) == [FORWARD], "a request sent after the interrupt plays"


def test_interrupting_one_request_leaves_the_others() -> None:
    forwarder = Forwarder(max_pending=8)
    for request_id in ("r1", "r2"):
        forwarder.accept(request_id)
    assert forwarder.interrupt("r2") == ["r2"]
    assert offered(forwarder, chunk("r1", 0), chunk("r2", 0)) == [FORWARD, DROP]
    with pytest.raises(Refusal) as raised:
        forwarder.interrupt("r2")
    assert raised.value.code == "unknown_request"


def test_a_resume_after_a_chunk_skips_everything_up_to_it_then_forwards() -> None:
    forwarder = Forwarder(max_pending=8)
    forwarder.resume_from_chunk("r1", 1)
    assert offered(forwarder, chunk("r1", 0), failure(None), chunk("r1", 1), chunk("r1", 2)) == [
        DROP, DROP, DROP, FORWARD]


def test_a_withdrawn_request_is_no_longer_in_flight() -> None:
    forwarder = Forwarder(max_pending=8)
    forwarder.accept("r1")
    forwarder.withdraw("r1")
    assert not forwarder.in_flight and forwarder.queued_behind == 0


def test_at_the_bound_the_client_is_too_slow_and_nothing_more_is_forwarded() -> None:
    forwarder = Forwarder(max_pending=4)
    assert forwarder.offer(chunk("r1", 0), pending=3) is FORWARD
    assert forwarder.offer(chunk("r1", 1), pending=4) is TOO_SLOW
    assert forwarder.too_slow and forwarder.offer(chunk("r1", 2), pending=0) is DROP
