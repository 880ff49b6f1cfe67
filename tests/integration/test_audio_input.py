"""An agent's own speech over a real WebSocket: streamed in, lip-synced as it comes, interrupted, resumed, refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.request
from typing import Any

import pytest
import websockets

from producers.audio import Utterance, UtteranceTarget, pcm16_samples
from schemas.websocket import pack_audio_frame
from tests.integration.stack import RunningStack
from tests.integration.test_ws_session import Connection, connect, recv, select_sample, send
from tests.media import decode_mp4
from tests.support.agent_audio import PERSIAN, chunks, speech_pcm

pytestmark = pytest.mark.integration
async def send_audio(ws: Connection, pcm: bytes, rate: int, **extra: Any) -> None:
    await send(ws, type="audio_input", sample_rate=rate, data=base64.b64encode(pcm).decode(), **extra)


async def until(ws: Connection, kind: str, timeout_s: float = 20) -> dict[str, Any]:
    while True:
        message = await recv(ws, timeout_s)
        if message["type"] == kind:
            return message


async def chunks_until_last(ws: Connection, request_id: str) -> list[dict[str, Any]]:
    received = []
    while True:
        message = await recv(ws)
        assert message["type"] != "error", message
        if message["type"] == "video_chunk" and message["request_id"] == request_id:
            received.append(message)
            if message["is_last"]:
                return received


def joined(received: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(c["data"]) for c in received)


async def test_audio_streamed_in_100_ms_chunks_moves_the_mouth_before_the_utterance_ends(stack: RunningStack) -> None:
    rate = 16_000
    pcm = speech_pcm(rate)
    async with await connect(stack) as ws:
        await select_sample(ws)
        pieces = chunks(pcm, rate)
        await send_audio(ws, pieces[0], rate, language="en", text="Hello there.")
        accepted = await recv(ws)
        assert accepted["type"] == "request_accepted" and accepted["language"] == "en"
        request_id = accepted["request_id"]
        first: dict[str, Any] | None = None
        for piece in pieces[1:]:  # as an agent's TTS sends it: 100 ms of audio every 100 ms
            await send_audio(ws, piece, rate)
            with contextlib.suppress(TimeoutError):
                first = first or await recv(ws, timeout_s=0.1)
        assert first is not None and first["type"] == "video_chunk", "video came while the audio was still coming"
        assert first["request_id"] == request_id and first["seq"] == 0 and first["text"] == "Hello there."
        await send(ws, type="audio_end")
        received = [first, *await chunks_until_last(ws, request_id)]
    assert [c["seq"] for c in received] == list(range(len(received)))
    assert [c["pts_ms"] for c in received[1:]] == [c["pts_ms"] + c["duration_ms"] for c in received[:-1]]
    decoded = decode_mp4(joined(received))
    assert (decoded.video_codec, decoded.audio_codec) == ("h264", "aac")
    # The video lasts as long as the speech (leading silence is not sent; the end is padded to a frame).
    assert abs(decoded.video_duration_s - len(pcm) / rate) <= 0.25
    assert abs(decoded.audio_duration_s - decoded.video_duration_s) <= 0.05


async def test_binary_frames_carry_48_khz_persian_speech_to_a_whole_video(stack: RunningStack) -> None:
    rate = 48_000
    pcm = speech_pcm(rate, PERSIAN, "fa")
    async with await connect(stack) as ws:
        await select_sample(ws)
        for piece in chunks(pcm, rate, ms=250):
            await ws.send(pack_audio_frame(rate, piece))
        await send(ws, type="audio_end")
        accepted = await recv(ws)
        assert accepted["type"] == "request_accepted" and accepted["language"] == "fa"
        received = await chunks_until_last(ws, accepted["request_id"])
    decoded = decode_mp4(joined(received))
    assert abs(decoded.video_duration_s - len(pcm) / rate) <= 0.25 and decoded.video_frames > 50


async def test_each_bad_audio_input_gets_its_own_error_and_the_session_speaks_on(stack: RunningStack) -> None:
    speech = chunks(speech_pcm(16_000), 16_000, ms=500)
    async with await connect(stack) as ws:
        await send_audio(ws, speech[0], 16_000)
        assert (await recv(ws))["code"] == "no_avatar_selected"
        await select_sample(ws)
        bad: list[tuple[str | bytes, str]] = [
            (json.dumps({"type": "audio_input", "sample_rate": 44_100, "data": "AAAAAA=="}), "unsupported_sample_rate"),
            (json.dumps({"type": "audio_input", "sample_rate": 16_000, "data": "AAAAAA==", "format": "pcm_f32le"}),
             "unsupported_sample_format"),
            (json.dumps({"type": "audio_input", "sample_rate": 16_000, "data": "AAAA"}), "odd_byte_count"),
            (json.dumps({"type": "audio_input", "sample_rate": 16_000, "data": "%%%"}), "invalid_audio_data"),
            (b"\x00\x01" * 800, "missing_audio_header"),
            (b"RIFF" + b"\x00" * 40, "unsupported_sample_format"),
            (pack_audio_frame(16_000, b"\x00\x01" * 16_000 * 6), "audio_message_too_long"),
            (json.dumps({"type": "audio_end"}), "no_audio"),
        ]
        for frame, code in bad:
            await ws.send(frame)
            error = await recv(ws)
            assert (error["type"], error["code"]) == ("error", code), (code, error)
            assert error["message"]
        # Silence only: accepted as it came, refused at its end, nothing rendered.
        await send_audio(ws, bytes(32_000), 16_000)
        silent = await recv(ws)
        assert silent["type"] == "request_accepted"
        await send(ws, type="audio_end")
        error = await recv(ws)
        assert (error["code"], error.get("request_id")) == ("silent_audio", silent["request_id"])
        for piece in speech[:2]:
            await send_audio(ws, piece, 16_000)
        await send(ws, type="audio_end")
        accepted = await until(ws, "request_accepted")
        assert accepted["queued_behind"] == 0, "the refused utterances left nothing in flight"
        received = await chunks_until_last(ws, accepted["request_id"])
        assert decode_mp4(joined(received)).video_frames > 10
        with pytest.raises(TimeoutError):  # and nothing of the silent request ever follows
            while True:
                assert (await recv(ws, timeout_s=1.0)).get("request_id") != silent["request_id"]


async def test_a_rate_change_inside_an_utterance_is_refused_and_the_utterance_goes_on(stack: RunningStack) -> None:
    pcm = speech_pcm(24_000)
    async with await connect(stack) as ws:
        await select_sample(ws)
        pieces = chunks(pcm, 24_000, ms=500)
        await send_audio(ws, pieces[0], 24_000)
        request_id = (await recv(ws))["request_id"]
        await send_audio(ws, pieces[1], 16_000)
        error = await until(ws, "error")
        assert (error["code"], error["request_id"]) == ("sample_rate_changed", request_id)
        await send_audio(ws, pieces[1], 24_000)
        await send(ws, type="audio_end")
        received = await chunks_until_last(ws, request_id)
    assert abs(decode_mp4(joined(received)).video_duration_s - 1.0) <= 0.1


async def test_ten_minutes_in_one_message_closes_only_that_connection_and_the_session_resumes_whole(
        stack: RunningStack) -> None:
    rate = 16_000
    ws = await connect(stack)
    session_id = await select_sample(ws)
    for piece in chunks(speech_pcm(rate), rate, ms=200)[:10]:  # 2 s of an utterance, then the huge message
        await send_audio(ws, piece, rate)
    request_id = (await recv(ws))["request_id"]
    await ws.send(pack_audio_frame(rate, bytes(2 * rate * 600)))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, "too big for WS_MAX_MESSAGE_BYTES"
    async with await connect(stack) as ws2:
        await send(ws2, type="resume", session_id=session_id)
        assert (await recv(ws2))["resumed"]
        received = await chunks_until_last(ws2, request_id)
    assert [c["seq"] for c in received] == list(range(len(received))), "the utterance heard so far, whole"
    assert abs(decode_mp4(joined(received)).video_duration_s - 2.0) <= 0.2


async def test_interrupting_an_utterance_stops_its_video_and_the_next_audio_is_a_new_request(
        stack: RunningStack) -> None:
    rate = 16_000
    pieces = chunks(speech_pcm(rate), rate)
    async with await connect(stack) as ws:
        await select_sample(ws)
        await send_audio(ws, pieces[0], rate)
        request_id = (await recv(ws))["request_id"]
        for piece in pieces[1:10]:
            await send_audio(ws, piece, rate)
        first = await until(ws, "video_chunk")
        assert first["request_id"] == request_id
        await send(ws, type="interrupt")
        while True:
            message = await recv(ws)
            if message["type"] == "interrupted":
                assert message["request_ids"] == [request_id]
                break
            assert message.get("request_id") == request_id
        for piece in pieces[10:20]:  # audio after the interrupt opens a new utterance
            await send_audio(ws, piece, rate)
        await send(ws, type="audio_end")
        accepted = await until(ws, "request_accepted")
        assert accepted["request_id"] != request_id and accepted["queued_behind"] == 0
        received = await chunks_until_last(ws, accepted["request_id"])
        assert abs(decode_mp4(joined(received)).video_duration_s - 1.0) <= 0.15
        with pytest.raises(TimeoutError):
            while True:
                assert (await recv(ws, timeout_s=1.0)).get("request_id") != request_id


async def test_resume_by_cursor_mid_utterance_delivers_every_chunk_once(stack: RunningStack) -> None:
    rate = 22_050
    pcm = speech_pcm(rate)
    ws = await connect(stack)
    session_id = await select_sample(ws)
    for piece in chunks(pcm, rate, ms=1000):
        await send_audio(ws, piece, rate)
    await send(ws, type="audio_end")
    request_id = (await recv(ws))["request_id"]
    received = [await until(ws, "video_chunk"), await until(ws, "video_chunk")]
    await ws.close()
    async with await connect(stack) as ws2:
        await send(ws2, type="resume", session_id=session_id, cursor=received[-1]["cursor"])
        assert (await recv(ws2))["resumed"]
        received += await chunks_until_last(ws2, request_id)
    assert [c["seq"] for c in received] == list(range(len(received))), "no gap and no duplicate"
    assert abs(decode_mp4(joined(received)).video_duration_s - len(pcm) / rate) <= 0.25



def estimated_segments(stack: RunningStack) -> float:
    """The lip-sync processors' count of segments articulated by the audio estimator (from /metrics)."""
    with urllib.request.urlopen(stack.http + "/metrics", timeout=5) as response:
        body = response.read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines()
               if line.startswith("avatar_lipsync_segments_total{") and 'source="estimated"' in line)


async def test_audio_input_is_articulated_by_the_lipsync_audio_estimator(stack: RunningStack) -> None:
    rate = 16_000
    pieces = chunks(speech_pcm(rate), rate)
    mirror = Utterance(UtteranceTarget("r", "s", "sample", rate), max_samples=10**9)  # the gateway's own cut
    expected = sum(len(mirror.add(pcm16_samples(piece))) for piece in pieces) + len(mirror.end())
    before = estimated_segments(stack)
    async with await connect(stack) as ws:
        await select_sample(ws)
        for piece in pieces:
            await send_audio(ws, piece, rate)
        await send(ws, type="audio_end")
        request_id = (await recv(ws))["request_id"]
        await chunks_until_last(ws, request_id)
    deadline = time.monotonic() + 10
    while estimated_segments(stack) - before < expected:  # processors report with their heartbeat, every 2 s
        assert time.monotonic() < deadline, f"{estimated_segments(stack) - before} of {expected} segments estimated"
        await asyncio.sleep(0.5)
