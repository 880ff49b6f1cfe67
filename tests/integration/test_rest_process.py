"""``POST /avatar/process`` on the running service: the finished MP4 through Kafka, limits, documented errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from infra.broker import free_port
from infra.settings import Settings
from tests.gateway_server import serve_gateway
from tests.integration.stack import RunningStack
from tests.media import decode_mp4

pytestmark = pytest.mark.integration
PERSIAN = "سلام، حال شما چطور است؟"
LONG_TEXT = " ".join(["This sentence is here to make a long speech that takes a while to render."] * 24)


def process(base_url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{base_url}/avatar/process", json=body, timeout=60)


def topic_gone(settings: Settings, topic: str, within_s: float = 10) -> bool:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if topic not in admin.list_topics(timeout=5).topics:
            return True
        time.sleep(0.1)
    return False


def test_a_persian_sentence_comes_back_as_one_playable_mp4_and_its_session_is_dropped(
        stack: RunningStack, settings: Settings) -> None:
    response = process(stack.http, text=PERSIAN, avatar_id="sample", language="fa")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    decoded = decode_mp4(response.content)
    assert decoded.video_codec == "h264" and decoded.audio_codec == "aac" and decoded.video_frames > 25
    assert decoded.video_duration_s == pytest.approx(int(response.headers["x-video-duration-ms"]) / 1000, abs=0.1)
    assert 0 <= int(response.headers["x-first-chunk-ms"]) < 1000
    assert topic_gone(settings, settings.session_topic(response.headers["x-session-id"])), "transient topic deleted"


def test_english_without_a_language_is_detected_and_rendered(stack: RunningStack) -> None:
    response = process(stack.http, text="Good morning, how are you?", avatar_id="sample")
    assert response.status_code == 200, response.text
    assert decode_mp4(response.content).audio_duration_s > 0.5


def test_an_unknown_avatar_is_a_404_with_a_json_error(stack: RunningStack) -> None:
    response = process(stack.http, text="Hello.", avatar_id="ghost")
    assert response.status_code == 404
    assert response.json() == {"code": "unknown_avatar", "message": "no registered avatar with id 'ghost'"}


@pytest.mark.parametrize(("body", "code"), [
    ({"text": "   ", "avatar_id": "sample"}, "empty_text"),
    ({"text": "a" * 2001, "avatar_id": "sample"}, "text_too_long"),
    ({"text": "Hallo.", "avatar_id": "sample", "language": "de"}, "invalid_request"),
    ({"text": "Hello."}, "invalid_request"),
    ({"text": "Hello.", "avatar_id": "../etc/passwd"}, "invalid_request"),
    ({"text": "Hello.", "avatar_id": "sample", "rate": 2.5}, "invalid_rate"),
    ({"text": "Hello.", "avatar_id": "sample", "rate": 0.2}, "invalid_rate"),
])
def test_bad_input_is_a_422_with_a_specific_code(stack: RunningStack, body: dict[str, object], code: str) -> None:
    response = process(stack.http, **body)
    assert response.status_code == 422 and response.json()["code"] == code, response.text
    assert response.json()["message"]


def test_a_faster_rate_makes_a_shorter_video_of_the_same_text(stack: RunningStack) -> None:
    durations = {}
    for rate in (1.0, 1.8):
        response = process(stack.http, text="Good morning, how are you today?", avatar_id="sample", rate=rate)
        assert response.status_code == 200, response.text
        durations[rate] = int(response.headers["x-video-duration-ms"])
    assert durations[1.8] < 0.8 * durations[1.0], durations


def test_the_voice_list_has_the_tts_processors_voices(stack: RunningStack) -> None:
    deadline = time.monotonic() + 15
    listed: dict[str, object] = {}
    while time.monotonic() < deadline and not listed.get("count"):  # the first heartbeat may still be on its way
        listed = httpx.get(f"{stack.http}/avatar/voices", params={"tts": "espeak"}, timeout=10).json()
        time.sleep(0.25)
    voices = listed["voices"]
    assert isinstance(voices, list) and listed["tts_processors"] == 1
    assert {"tts": "espeak", "voice": "f3", "languages": ["fa", "en"]}.items() <= next(
        v for v in voices if v["voice"] == "f3").items()
    persian = httpx.get(f"{stack.http}/avatar/voices", params={"language": "de"}, timeout=10).json()
    assert persian["count"] == 0


def test_a_body_that_is_not_json_is_a_422(stack: RunningStack) -> None:
    response = httpx.post(f"{stack.http}/avatar/process", content=b"{text:", timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


def test_the_openapi_document_describes_the_endpoint_its_body_and_its_errors(stack: RunningStack) -> None:
    spec = httpx.get(f"{stack.http}/openapi.json", timeout=10).json()
    operation = spec["paths"]["/avatar/process"]["post"]
    assert operation["summary"]
    bodies = operation["requestBody"]["content"]
    assert set(bodies["application/json"]["schema"]["properties"]) == {"text", "avatar_id", "language", "tts", "voice",
                                                                        "rate"}
    assert set(bodies["multipart/form-data"]["schema"]["required"]) == {"file", "avatar_id"}, "an audio file"
    assert "video/mp4" in operation["responses"]["200"]["content"]
    for status in ("401", "404", "413", "422", "429", "502", "503", "504"):
        assert status in operation["responses"], status
    error_schema = operation["responses"]["504"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(spec["components"]["schemas"][error_schema]["properties"]) == {"code", "message"}
    assert httpx.get(f"{stack.http}/docs", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def strict_gateway(stack: RunningStack, settings: Settings) -> Iterator[str]:
    """A second gateway on the same broker and database, with a 1 s render timeout and one render at a time."""
    strict = settings.model_copy(update={"port": free_port(), "rest_process_timeout_s": 1.0,
                                         "rest_max_concurrent": 1, "register_sample_avatar": False})
    with serve_gateway(strict) as url:
        yield url


def test_a_render_past_the_timeout_is_a_504_with_a_json_error(strict_gateway: str) -> None:
    started = time.monotonic()
    response = process(strict_gateway, text=LONG_TEXT, avatar_id="sample", language="en")
    assert response.status_code == 504 and response.json()["code"] == "timeout", response.text
    assert "1 s" in response.json()["message"]
    assert time.monotonic() - started < 5


def test_renders_beyond_the_concurrency_limit_are_refused_with_429(strict_gateway: str) -> None:
    first: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: first.append(
        process(strict_gateway, text=LONG_TEXT, avatar_id="sample", language="en")))
    holder.start()
    time.sleep(0.3)  # the long render has taken the only slot by now
    refused = process(strict_gateway, text="Hello.", avatar_id="sample")
    holder.join(10)
    assert refused.status_code == 429 and refused.json()["code"] == "busy", refused.text
    assert first and first[0].status_code == 504
    assert process(strict_gateway, text="Hi.", avatar_id="sample", language="en").status_code == 200, \
        "the slot is free again once the long render ended"
