"""Structured, quiet-by-default logging shared by every service (JSON lines on stderr)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)
TRACE_FIELDS = ("request_id", "session_id")  # carried through Kafka headers from hop to hop


def log_context() -> dict[str, str]:
    """The ids bound to the work in progress (added to every log line and to produced Kafka headers)."""
    return _CONTEXT.get() or {}


def bind_log_context(**fields: str | None) -> None:
    """Add ids to the current context (e.g. once a message is parsed); cleared by ``log_scope``'s end."""
    _CONTEXT.set({**log_context(), **{k: v for k, v in fields.items() if v}})


@contextmanager
def log_scope(**fields: str | None) -> Iterator[None]:
    """A fresh context for one unit of work (one Kafka message, one WebSocket request)."""
    token = _CONTEXT.set({k: v for k, v in fields.items() if v})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(log_context())
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "WARNING", fmt: str = "json", service: str | None = None) -> None:
    """Set up the root logger once per process; `service` tags every line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if service:
        handler.addFilter(_ServiceTag(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _ServiceTag(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        return True
