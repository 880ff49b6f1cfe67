"""The lip-sync worker's idle-clip side without a broker: versions, requests, and live work going first."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.idle_clips import idle_clip_url, serving_engine
from infra.avatar_store import AvatarRecord
from infra.idle_clip_store import StoredClip, avatar_version
from processors.common.kafka_app import Inbound, InvalidMessage, Outgoing
from processors.common.priority import BACKGROUND_NICENESS, lower_thread_priority
from processors.lipsync.idle_clips import LiveActivity, parse_request
from schemas.idle_clip import IdleClipRequest


def record(created_at: datetime, face_data_version: int = 1) -> AvatarRecord:
    return AvatarRecord("a", "alice", "A", "", "photo", 512, 512, None, 1, 512, 512, {}, face_data_version,
                        created_at, 0)


def test_the_version_changes_with_a_new_registration_or_face_data_format_only() -> None:
    first = datetime(2025, 1, 1, tzinfo=UTC)
    again = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert avatar_version(record(first)) == avatar_version(record(first))
    assert avatar_version(record(first)) != avatar_version(record(again))
    assert avatar_version(record(first)) != avatar_version(record(first, face_data_version=2))


def test_the_etag_names_the_engine_the_renderer_and_the_avatar_version() -> None:
    clip = StoredClip("a", "wav2lip", "1.123", 2, 50, 25, b"mp4")
    assert clip.etag == '"idle-wav2lip.2.1.123"'
    assert StoredClip("a", "embedded", "1.123", 2, 50, 25, b"mp4").etag != clip.etag, "each engine its own"


def test_the_clip_url_is_the_avatars_idle_mp4() -> None:
    assert idle_clip_url("sample") == "/avatar/sample/idle.mp4"


def test_a_gateway_serves_its_engines_clips_unless_only_another_engine_renders_them() -> None:
    assert serving_engine("embedded", []) == "embedded", "nothing heard yet: the configured engine"
    assert serving_engine("embedded", ["embedded", "wav2lip"]) == "embedded"
    assert serving_engine("embedded", ["wav2lip"]) == "wav2lip", "Wav2Lip workers only: their resting face"


def test_a_request_round_trips_and_a_bad_one_is_refused_naming_what_is_wrong() -> None:
    request = IdleClipRequest(avatar_id="sample", reason="registered", ts_ms=1)
    assert parse_request(request.to_kafka()) == request
    with pytest.raises(InvalidMessage, match=r"not a valid avatar\.idle-clips v1 message"):
        parse_request(b"{not json")
    with pytest.raises(InvalidMessage, match="avatar_id"):
        parse_request(b'{"type": "idle_clip_request", "avatar_id": "a/../b", "reason": "missing", "ts_ms": 1}')


def live_request(steps: int, fail: bool = False) -> Iterator[Outgoing]:
    for _ in range(steps):
        yield Outgoing("avatar.session.s", b"s", b"chunk")
    if fail:
        raise RuntimeError("engine failure")


def test_a_live_request_counts_as_busy_from_its_first_step_until_its_last_output() -> None:
    live = LiveActivity()
    handler = live.track(lambda _message: live_request(2))
    outputs = handler(Inbound(b"s", b""))
    assert not live.busy, "not before the app starts it"
    next(iter(outputs))
    assert live.busy
    next(iter(outputs))
    assert live.busy, "its last output is not out yet"
    assert next(iter(outputs), None) is None
    assert not live.busy


def test_a_failed_live_request_no_longer_counts() -> None:
    live = LiveActivity()
    outputs = iter(live.track(lambda _message: live_request(1, fail=True))(Inbound(b"s", b"")))
    next(outputs)
    with pytest.raises(RuntimeError):
        next(outputs)
    assert not live.busy


def test_background_work_waits_for_the_live_requests_to_end_but_not_for_ever() -> None:
    live = LiveActivity()
    outputs = iter(live.track(lambda _message: live_request(1))(Inbound(b"s", b"")))
    next(outputs)
    started = time.monotonic()
    assert live.wait_until_quiet(0.2) is False and time.monotonic() - started >= 0.2, "gives up after the bound"
    threading.Timer(0.1, lambda: next(outputs, None)).start()
    assert live.wait_until_quiet(5.0) is True and time.monotonic() - started < 2.0, "goes as soon as it ends"


def test_the_clip_thread_runs_at_background_priority_and_the_callers_is_untouched() -> None:
    seen: list[int] = []

    def clip_thread() -> None:
        lower_thread_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=clip_thread)
    thread.start()
    thread.join()
    assert seen == [min(19, own + BACKGROUND_NICENESS)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own
