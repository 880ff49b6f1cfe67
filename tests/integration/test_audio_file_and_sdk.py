"""Whole audio files on ``POST /avatar/process``, the SDK's audio calls and ``avatar-stream say --audio``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from infra.settings import Settings
from producers.audio import AudioError
from producers.client import AvatarProducer, Chunk, PipelineError
from tests.integration.stack import RunningStack
from tests.media import decode_mp4
from tests.support.agent_audio import PERSIAN, speech_pcm, wav_bytes

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "avatar-stream")
TONE = (8000 * np.sin(2 * np.pi * 200 * np.arange(16_000) / 16_000)).astype(np.int16)


def upload(base_url: str, data: bytes, name: str = "speech.wav", **fields: str) -> httpx.Response:
    return httpx.post(f"{base_url}/avatar/process", files={"file": (name, data)},
                      data={"avatar_id": "sample", **fields}, timeout=60)


def opus_file(pcm: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as file:
        stream = file.add_stream("libopus", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            file.mux(packet)
    return out.getvalue()


def test_a_wav_file_comes_back_as_an_mp4_of_its_length_with_its_subtitle(stack: RunningStack) -> None:
    pcm = speech_pcm(22_050, PERSIAN, "fa")
    response = upload(stack.http, wav_bytes(pcm, 22_050), language="fa", text="سلام")
    assert response.status_code == 200, response.text
    decoded = decode_mp4(response.content)
    assert (decoded.video_codec, decoded.audio_codec) == ("h264", "aac")
    assert abs(decoded.video_duration_s - len(pcm) / 22_050) <= 0.25
    assert decoded.video_duration_s == pytest.approx(int(response.headers["x-video-duration-ms"]) / 1000, abs=0.1)


def test_an_ogg_opus_file_is_decoded_with_pyav_and_rendered(stack: RunningStack) -> None:
    pcm = speech_pcm(48_000)
    response = upload(stack.http, opus_file(pcm, 48_000), name="speech.ogg")
    assert response.status_code == 200, response.text
    assert abs(decode_mp4(response.content).audio_duration_s - len(pcm) / 48_000) <= 0.25


@pytest.mark.parametrize(("data", "fields", "status", "code"), [
    (b"this is not audio" * 50, {}, 422, "unreadable_audio"),
    (wav_bytes(np.zeros(16_000, np.int16), 16_000), {}, 422, "silent_audio"),
    (wav_bytes(TONE, 16_000), {"avatar_id": "ghost"}, 404, "unknown_avatar"),
    (wav_bytes(TONE, 16_000), {"language": "de"}, 422, "unsupported_language"),
])
def test_a_bad_upload_is_refused_with_its_code(stack: RunningStack, data: bytes, fields: dict[str, str], status: int,
                                               code: str) -> None:
    response = upload(stack.http, data, **fields)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.json()["message"]


def test_a_form_without_a_file_is_missing_field(stack: RunningStack) -> None:
    response = httpx.post(f"{stack.http}/avatar/process", files={"avatar_id": (None, "sample")}, timeout=10)
    assert (response.status_code, response.json()["code"]) == (422, "missing_field"), response.text


def test_say_audio_returns_the_mp4_of_the_speech(stack: RunningStack, settings: Settings) -> None:
    producer = AvatarProducer(settings)
    chunks: list[Chunk] = []
    pcm = speech_pcm(24_000)
    mp4 = producer.say_audio(avatar_id="sample", pcm16=pcm.astype("<i2").tobytes(), sample_rate=24_000,
                             language="en", text="Hello there.", on_chunk=chunks.append)
    assert [c.seq for c in chunks] == list(range(len(chunks))) and chunks[0].text == "Hello there."
    assert abs(decode_mp4(mp4).video_duration_s - len(pcm) / 24_000) <= 0.25


def test_send_audio_for_an_unknown_avatar_ends_with_the_pipelines_error(stack: RunningStack,
                                                                         settings: Settings) -> None:
    producer = AvatarProducer(settings)
    with pytest.raises(PipelineError) as raised:
        producer.say_audio(avatar_id="ghost", pcm16=speech_pcm(16_000)[:16_000].tobytes(), sample_rate=16_000)
    assert raised.value.code == "unknown_avatar"


def test_say_audio_refuses_bad_audio_before_sending_anything(settings: Settings) -> None:
    producer = AvatarProducer(settings)
    for pcm, rate, code in [(b"\x00\x01\x02", 16_000, "odd_byte_count"), (bytes(3200), 16_000, "silent_audio"),
                            (b"\x10\x10", 44_100, "unsupported_sample_rate")]:
        with pytest.raises(AudioError) as raised:
            producer.say_audio(avatar_id="sample", pcm16=pcm, sample_rate=rate)
        assert raised.value.code == code


def test_an_audio_stream_sent_through_the_sdk_renders_as_it_arrives(stack: RunningStack, settings: Settings) -> None:
    producer = AvatarProducer(settings)
    session = "sdk-stream-test"
    pcm = speech_pcm(16_000)
    stream = producer.audio_stream(session_id=session, avatar_id="sample", sample_rate=16_000)
    items = producer.stream(session, request_id=stream.request_id, timeout_s=30)
    for start in range(0, 16_000, 1600):
        stream.write(pcm[start : start + 1600])
    first = next(items)  # the video of the first second, before the utterance has ended
    assert isinstance(first, Chunk) and first.seq == 0
    stream.write(pcm[16_000:])
    stream.end()
    rest = [item for item in items if isinstance(item, Chunk)]
    assert rest[-1].is_last and [c.seq for c in [first, *rest]] == list(range(len(rest) + 1))


def test_cli_say_audio_writes_the_mp4(stack: RunningStack, settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "speech.wav"
    source.write_bytes(wav_bytes(speech_pcm(16_000), 16_000))
    out = tmp_path / "out.mp4"
    done = subprocess.run([CLI, "say", "--audio", str(source), "--bootstrap", settings.kafka_bootstrap_servers,
                           "-o", str(out)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "sent audio request" in done.stderr and decode_mp4(out.read_bytes()).video_frames > 50
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage" * 30)
    failed = subprocess.run([CLI, "say", "--audio", str(bad), "--bootstrap", settings.kafka_bootstrap_servers],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "unreadable_audio" in failed.stderr
