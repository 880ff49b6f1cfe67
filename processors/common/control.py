"""Hears ``avatar.control`` on every processor instance (assigned, no group) and remembers interrupts."""

from __future__ import annotations

import threading
from collections import OrderedDict

from infra.settings import Settings
from processors.common.broadcast import BroadcastListener
from schemas.control import Interrupt


class InterruptRegistry:
    """Which requests were interrupted; bounded so a long-running processor does not grow."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._requests: OrderedDict[str, None] = OrderedDict()
        self._sessions: OrderedDict[str, int] = OrderedDict()  # session → interrupt time, for "all so far"
        self._lock = threading.Lock()

    def record(self, interrupt: Interrupt) -> None:
        with self._lock:
            for request_id in interrupt.request_ids:
                self._requests[request_id] = None
            if not interrupt.request_ids:
                self._sessions[interrupt.session_id] = interrupt.ts_ms
            for table in (self._requests, self._sessions):
                while len(table) > self.max_entries:
                    table.popitem(last=False)

    def is_interrupted(self, session_id: str, request_id: str, created_at_ms: int | None) -> bool:
        with self._lock:
            if request_id in self._requests:
                return True
            cutoff = self._sessions.get(session_id)
        return cutoff is not None and (created_at_ms is None or created_at_ms <= cutoff)


class ControlListener(BroadcastListener):
    """Feeds an InterruptRegistry from ``avatar.control``, on every processor instance."""

    def __init__(self, settings: Settings, registry: InterruptRegistry | None = None) -> None:
        self.registry = registry or InterruptRegistry()
        super().__init__(settings, settings.kafka_control_topic, self._record, name="control-listener")

    def _record(self, value: bytes) -> None:
        self.registry.record(Interrupt.model_validate_json(value))
