"""This gateway's streaming sessions: opened and resumed in PostgreSQL, their topics heard, idle ones ended."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING

from consumers.session_stream import Listener, SessionStreamConsumer
from gateway.auth import Principal
from gateway.speak import Refusal
from infra.kafka import TopicAdmin
from infra.session_store import SessionRecord, SessionStore
from infra.settings import Settings
from schemas.common import new_id

log = logging.getLogger(__name__)


class SessionRegistry:
    """Opens, resumes, attaches and ends sessions; a session outlives its connection and its gateway.

    A session's row in PostgreSQL lets any gateway resume it; its topic is heard through the gateway's one
    session-stream consumer while a connection is attached. Connected sessions are kept alive, and sessions
    idle for SESSION_IDLE_TTL_S are ended by whichever gateway claims them first (their topics deleted).
    """

    def __init__(self, settings: Settings, admin: TopicAdmin, store: SessionStore,
                 stream: SessionStreamConsumer) -> None:
        self.settings = settings
        self.admin = admin
        self.store = store
        self.stream = stream
        self._connected: set[str] = set()  # sessions with a connection on this gateway
        self._tapped: Counter[str] = Counter()  # sessions with second readers here (WebRTC peers), how many
        self._lock = threading.Lock()  # the housekeeping thread reads what the event loop changes
        self._stop = threading.Event()

    def open(self, avatar_id: str, user_id: str | None, listener: Listener) -> str:
        """A new session: its topic created, its row written, then heard from the start. Blocking.

        Heard last, so a database that fails the row leaves no listener behind for a session nobody holds.
        """
        session_id = new_id()
        self.admin.ensure_session_topic(session_id)
        self.store.open(session_id, avatar_id, user_id)
        self.attach(session_id, listener, OFFSET_BEGINNING)
        return session_id

    def select(self, session_id: str, avatar_id: str, user_id: str | None) -> None:
        """The open session speaks with another avatar from now on. Blocking."""
        self.store.open(session_id, avatar_id, user_id)

    def resumable(self, session_id: str, who: Principal) -> SessionRecord:
        """The session ``who`` may resume; another user's session is refused as if it did not exist. Blocking."""
        record = self.store.get(session_id)
        if record is None or not (who.is_admin or record.user_id == who.user_id):
            raise Refusal("unknown_session", f"no session '{session_id}' to resume")
        if record.ended:
            raise Refusal("session_ended", f"session '{session_id}' ended after being idle")
        return record

    def attach(self, session_id: str, listener: Listener, from_offset: int) -> None:
        """Deliver the session's records from ``from_offset`` on to ``listener`` (on the consumer's thread)."""
        self.stream.listen(self.settings.session_topic(session_id), listener, from_offset)
        with self._lock:
            self._connected.add(session_id)

    def detach(self, session_id: str) -> None:
        self.stream.forget(self.settings.session_topic(session_id))
        with self._lock:
            self._connected.discard(session_id)

    def tap(self, session_id: str, listener: Listener) -> None:
        """Also deliver the session's records to ``listener``, from where they are read now (its WebRTC output);
        the session counts as connected, so it is not ended as idle, until untapped."""
        self.stream.tap(self.settings.session_topic(session_id), listener)
        with self._lock:
            self._tapped[session_id] += 1

    def untap(self, session_id: str, listener: Listener) -> None:
        self.stream.untap(self.settings.session_topic(session_id), listener)
        with self._lock:
            self._tapped[session_id] -= 1
            if self._tapped[session_id] <= 0:
                del self._tapped[session_id]

    def touch(self, session_id: str) -> None:
        """The session is in use again: it is not idle. Blocking."""
        self.store.touch([session_id])

    def end_idle_sessions(self) -> list[str]:
        """Keep the connected sessions alive, end the idle ones (any gateway's) and delete their topics."""
        with self._lock:
            connected = sorted(self._connected | set(self._tapped))
        self.store.touch(connected)
        ended = self.store.end_idle(self.settings.session_idle_ttl_s)
        if ended:
            self.admin.delete([self.settings.session_topic(session_id) for session_id in ended])
            log.info("idle sessions ended", extra={"sessions": len(ended)})
        return ended

    def start_housekeeping(self) -> None:
        """Run end_idle_sessions every few seconds on a thread of its own, until stop()."""
        interval = min(30.0, max(1.0, self.settings.session_idle_ttl_s / 5))
        threading.Thread(target=self._housekeep, args=(interval,), name="housekeeping", daemon=True).start()

    def _housekeep(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.end_idle_sessions()
            except Exception:  # the database may be down for a while: try again next round
                log.warning("session housekeeping failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
