"""Tracks which processors announced themselves on ``avatar.status`` recently (for ``/ready``)."""

from __future__ import annotations

import threading
import time

from pydantic import ValidationError

from schemas.status import ServiceStatus

REQUIRED_SERVICES = ("tts", "lipsync", "registration")


class ProcessorStatus:
    def __init__(self, stale_after_s: float = 10.0) -> None:
        self.stale_after_s = stale_after_s
        self._latest: dict[tuple[str, str], ServiceStatus] = {}
        self._lock = threading.Lock()

    def record(self, value: bytes) -> None:
        try:
            status = ServiceStatus.model_validate_json(value)
        except ValidationError:
            return
        with self._lock:
            self._latest[(status.service, status.instance)] = status

    def live(self, service: str) -> list[ServiceStatus]:
        cutoff = time.time() * 1000 - self.stale_after_s * 1000
        with self._lock:
            return [s for (name, _), s in self._latest.items() if name == service and s.ready and s.ts_ms >= cutoff]

    def all_live(self) -> list[ServiceStatus]:
        return [status for service in sorted({name for name, _ in self._latest}) for status in self.live(service)]

    def missing(self) -> list[str]:
        return [service for service in REQUIRED_SERVICES if not self.live(service)]
