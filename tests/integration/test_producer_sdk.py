"""The producer SDK and the ``avatar-stream`` CLI against the real broker and the running service."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import skimage.data
import skimage.io
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.broker import free_port
from infra.kafka import TopicAdmin, consumer_config
from infra.settings import Settings
from producers.client import AvatarProducer, Chunk, PipelineError, StreamError, StreamItem, StreamTimeout
from schemas.common import new_id
from schemas.requests import TextRequest
from tests.integration.stack import RunningStack
from tests.media import decode_mp4

pytestmark = pytest.mark.integration
PERSIAN = "سلام، حال شما چطور است؟"
CLI = str(Path(sys.executable).parent / "avatar-stream")


@pytest.fixture
def producer(settings: Settings) -> AvatarProducer:
    return AvatarProducer(settings)


def topic_exists(settings: Settings, topic: str) -> bool:
    return topic in AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}).list_topics(timeout=5).topics


def test_say_returns_one_playable_mp4_and_deletes_its_transient_topic(
        stack: RunningStack, settings: Settings, producer: AvatarProducer) -> None:
    chunks: list[Chunk] = []
    sent: list[TextRequest] = []
    mp4 = producer.say(avatar_id="sample", text=PERSIAN, language="fa", on_chunk=chunks.append, on_sent=sent.append)
    decoded = decode_mp4(mp4)
    assert decoded.video_codec == "h264" and decoded.audio_codec == "aac"
    assert [c.seq for c in chunks] == list(range(len(chunks))) and chunks[-1].is_last
    assert decoded.video_duration_s == pytest.approx(sum(c.duration_ms for c in chunks) / 1000, abs=0.1)
    assert chunks[0].text and "سلام" in chunks[0].text, "the first chunk carries its subtitle"
    assert not topic_exists(settings, settings.session_topic(sent[0].session_id))


def test_say_sends_the_backend_and_voice_it_is_given(stack: RunningStack, producer: AvatarProducer) -> None:
    sent: list[TextRequest] = []
    mp4 = producer.say(avatar_id="sample", text="Hello.", language="en", tts="espeak", voice="f3", on_sent=sent.append)
    assert (sent[0].tts, sent[0].voice) == ("espeak", "f3") and decode_mp4(mp4).video_codec == "h264"


def chunks_only(items: list[StreamItem]) -> list[Chunk]:
    assert all(isinstance(item, Chunk) for item in items), items
    return [item for item in items if isinstance(item, Chunk)]


def record_at(settings: Settings, topic: str, offset: int) -> bytes:
    consumer = Consumer(consumer_config(settings, None))
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                return message.value() or b""
    finally:
        consumer.close()
    raise AssertionError(f"no record at offset {offset} of {topic}")


def test_stream_yields_each_chunk_once_even_when_the_broker_holds_a_duplicate(
        stack: RunningStack, settings: Settings, producer: AvatarProducer) -> None:
    session = f"sdk-test-{new_id()}"
    topic = settings.session_topic(session)
    request = producer.send_text(session_id=session, avatar_id="sample", text="Good morning.", language="en")
    first = chunks_only(list(producer.stream(session, request_id=request.request_id, timeout_s=20)))
    assert [c.seq for c in first] == list(range(len(first))) and first[-1].is_last
    # Redeliver chunk 0 as a retried produce would: the same bytes once more, after the last chunk.
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    raw.produce(topic, record_at(settings, topic, first[0].offset), key=session.encode())
    assert raw.flush(10) == 0
    again: list[StreamItem] = []
    with pytest.raises(StreamTimeout):  # read the whole topic, duplicate included, until it goes quiet
        for item in producer.stream(session, timeout_s=1.0):
            again.append(item)
    assert [c.seq for c in chunks_only(again)] == [c.seq for c in first]


def test_stream_without_a_request_follows_the_session_across_requests_and_resumes_from_an_offset(
        stack: RunningStack, producer: AvatarProducer) -> None:
    session = f"sdk-test-{new_id()}"
    requests = [producer.send_text(session_id=session, avatar_id="sample", text=text)
                for text in ("Hello.", "سلام.")]
    seen: list[StreamItem] = []
    for item in producer.stream(session, timeout_s=20):
        seen.append(item)
        if sum(c.is_last for c in chunks_only(seen)) == len(requests):
            break  # leaving the loop closes the iterator and its consumer
    chunks = chunks_only(seen)
    assert [r.request_id for r in requests] == list(dict.fromkeys(c.request_id for c in chunks)), "in send order"
    resumed = producer.stream(session, from_offset=chunks[2].offset + 1, timeout_s=20)
    after = chunks_only([next(resumed) for _ in range(len(chunks) - 3)])
    resumed.close()
    assert [(c.request_id, c.seq) for c in after] == [(c.request_id, c.seq) for c in chunks[3:]]


def test_say_with_an_unknown_avatar_raises_the_pipelines_error_code(
        stack: RunningStack, producer: AvatarProducer) -> None:
    with pytest.raises(PipelineError) as raised:
        producer.say(avatar_id="ghost", text="Hello.", language="en", timeout_s=20)
    assert raised.value.code == "unknown_avatar" and "ghost" in raised.value.message


def test_stream_of_a_request_ends_with_its_error(stack: RunningStack, producer: AvatarProducer) -> None:
    session = f"sdk-test-{new_id()}"
    request = producer.send_text(session_id=session, avatar_id="ghost", text="Hello.")
    items = list(producer.stream(session, request_id=request.request_id, timeout_s=20))
    assert len(items) == 1 and isinstance(items[0], StreamError) and items[0].code == "unknown_avatar"


def test_stream_times_out_when_the_session_is_silent_or_missing(settings: Settings, producer: AvatarProducer) -> None:
    silent = f"sdk-test-{new_id()}"
    TopicAdmin(settings).ensure_session_topic(silent)
    started = time.monotonic()
    with pytest.raises(StreamTimeout):
        next(producer.stream(silent, timeout_s=0.5))
    with pytest.raises(StreamTimeout, match="did not appear"):
        next(producer.stream(f"sdk-missing-{new_id()}", timeout_s=0.5))
    assert time.monotonic() - started < 5


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout_s, check=False)


def test_cli_say_writes_the_mp4_and_reports_progress(stack: RunningStack, settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    done = run_cli("say", "--avatar", "sample", "--lang", "fa", "--bootstrap", settings.kafka_bootstrap_servers,
                   PERSIAN, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "first chunk after" in done.stderr and f"wrote {out}" in done.stderr and "سلام" in done.stderr
    assert decode_mp4(out.read_bytes()).video_frames > 10


def test_cli_say_explains_an_unknown_avatar_and_an_unreachable_broker(
        stack: RunningStack, settings: Settings, tmp_path: Path) -> None:
    ghost = run_cli("say", "--avatar", "ghost", "--bootstrap", settings.kafka_bootstrap_servers, "Hello.",
                    "-o", str(tmp_path / "x.mp4"))
    assert ghost.returncode == 1 and "error: the pipeline refused the request: unknown_avatar" in ghost.stderr
    nowhere = run_cli("say", "--bootstrap", f"127.0.0.1:{free_port()}", "--connect-timeout", "1", "Hello.",
                      "-o", str(tmp_path / "y.mp4"))
    assert nowhere.returncode == 1 and "error: cannot reach the Kafka broker" in nowhere.stderr
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "y.mp4").exists()


def test_cli_say_passes_its_voice_to_the_tts_processor_which_refuses_an_unknown_one(
        stack: RunningStack, settings: Settings, tmp_path: Path) -> None:
    refused = run_cli("say", "--bootstrap", settings.kafka_bootstrap_servers, "--tts", "espeak", "--voice",
                      "no-such-voice", "-o", str(tmp_path / "x.mp4"), "Hello.")
    assert refused.returncode == 1 and "unknown_voice" in refused.stderr, refused.stderr


def test_cli_register_explains_a_missing_file_and_an_unreachable_server(tmp_path: Path) -> None:
    missing = run_cli("register", str(tmp_path / "nope.jpg"), "--name", "n", "--user", "u")
    assert missing.returncode == 1 and "nope.jpg: no such file" in missing.stderr
    photo = tmp_path / "face.jpg"
    skimage.io.imsave(photo, skimage.data.astronaut())
    nowhere = run_cli("register", str(photo), "--name", "n", "--user", "u", "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 1 and "error: cannot reach" in nowhere.stderr


def test_cli_register_uploads_a_photo_with_its_default_voice_and_prints_the_new_avatar(
        stack: RunningStack, tmp_path: Path) -> None:
    _status, spec = stack.get("/openapi.json")
    if "/avatar/register" not in spec.get("paths", {}):
        pytest.skip("POST /avatar/register is not part of this gateway yet (issue 3)")
    photo = tmp_path / "astronaut.jpg"
    skimage.io.imsave(photo, skimage.data.astronaut())
    name = f"cli-{new_id()[:8]}"
    done = run_cli("register", str(photo), "--name", name, "--user", "cli-tests", "--url", stack.http,
                   "--tts", "espeak", "--voice", "f3")
    assert done.returncode == 0, done.stderr
    assert "uploading astronaut.jpg" in done.stderr and done.stdout.startswith("registered avatar ")
    avatar_id = done.stdout.split()[2].rstrip(";")
    status, info = stack.get(f"/avatar/{avatar_id}/info")
    assert status == 200 and (info["tts"], info["voice"]) == ("espeak", "f3")
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("this is text, not a JPEG")
    refused = run_cli("register", str(not_a_photo), "--name", f"{name}-x", "--user", "cli-tests", "--url", stack.http)
    assert refused.returncode == 1 and "error: the server refused the registration (4" in refused.stderr
