"""Per-caller rate limits (token buckets) for uploads, text requests and WebSocket connections."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request, WebSocket

from gateway.auth import AuthError, bearer, principal_for
from infra.settings import Settings


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` actions per key, with bursts up to ``burst``; memory bounded by ``max_keys`` (LRU).

    In-process: each gateway limits what reaches it; behind a load balancer with N gateways a caller gets at
    most N times the rate (sticky sessions, or a shared store, tighten that).
    """

    def __init__(self, per_minute: float, burst: int | None = None, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, int(per_minute)))
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token for ``key`` if there is one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(self.burst, now)
                self._buckets[key] = bucket
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
                bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return True
            return False

    def retry_after_s(self) -> int:
        return max(1, int(1 / self.rate + 0.999)) if self.rate else 60


@dataclass(frozen=True)
class Limits:
    uploads: RateLimiter
    requests: RateLimiter
    connections: RateLimiter


def caller_key(settings: Settings, request: Request | WebSocket) -> str:
    """Whom a limit counts against: the token's user (or the admin), else the client address."""
    token = bearer(request)
    if token:
        try:
            who = principal_for(settings, token)
            return "admin" if who.is_admin else f"user:{who.user_id}"
        except AuthError:
            pass
    return f"ip:{request.client.host if request.client else 'unknown'}"
