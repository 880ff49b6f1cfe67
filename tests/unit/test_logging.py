"""Logs are JSON lines, quiet by default, and carry the request and session ids of the work in progress."""

from __future__ import annotations

import json
import logging

import pytest

from infra.logging import JsonFormatter, bind_log_context, log_context, log_scope


def format_line(message: str, **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"name": "test", "levelname": "WARNING", "msg": message, **extra})
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_a_line_is_json_with_time_level_logger_message_and_extra_fields() -> None:
    line = format_line("سلام", processor="tts")
    assert line["msg"] == "سلام" and line["level"] == "warning" and line["processor"] == "tts"
    assert str(line["ts"]).endswith("Z")


def test_ids_bound_in_a_scope_appear_on_every_line_and_vanish_after_it() -> None:
    with log_scope(session_id="s-1"):
        bind_log_context(request_id="r-9")
        line = format_line("inside")
        assert line["session_id"] == "s-1" and line["request_id"] == "r-9"
    assert "request_id" not in format_line("after") and log_context() == {}


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_ids_are_not_bound(empty: str | None) -> None:
    with log_scope(request_id=empty):
        assert log_context() == {}
