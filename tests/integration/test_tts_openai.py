"""The openai backend against a local OpenAI-compatible server on 127.0.0.1: streaming, retries, timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from infra.settings import Settings
from processors.tts.audio import gated_rms_dbfs, to_float
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.engines.base import TtsFailure
from processors.tts.engines.espeak import EspeakEngine
from processors.tts.engines.openai_tts import PCM_RATE, OpenAiEngine
from processors.tts.engines.registry import EngineSet
from processors.tts.main import TtsConfigError, start_core
from schemas.requests import TextRequest
from schemas.session import SessionError
from schemas.speech import SpeechSegment
from tests.support.local_openai_server import LocalSpeechServer, SpeechRequestHandler
from tests.unit.test_tts_core import CORPUS, SECONDS_PER_SPOKEN_CHARACTER

pytestmark = pytest.mark.integration
PERSIAN = "سلام، حال شما چطور است؟ امروز هوا آفتابی است."


class FaultyHandler(SpeechRequestHandler):
    """The real endpoint, preceded by whatever failures the test queued on the server (one per request)."""

    server: FaultyServer

    def respond(self, request: dict[str, Any]) -> None:
        self.server.voices.append(str(request.get("voice")))
        self.server.speeds.append(request.get("speed"))
        fault = self.server.faults.pop(0) if self.server.faults else "ok"
        if fault == "busy":
            self.send_json_error(HTTPStatus.SERVICE_UNAVAILABLE, "overloaded", {"retry-after-ms": "10"})
        elif fault == "stall":
            time.sleep(1.5)
            super().respond(request)
        elif fault == "break":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "audio/pcm")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.write_chunk(b"\x00\x01" * 2000)
            self.wfile.write(b"ff\r\nshort")  # promises 255 bytes, sends 5, hangs up
            self.close_connection = True
        elif fault == "bad_request":
            self.send_json_error(HTTPStatus.BAD_REQUEST, "voice 'nobody' is not supported")
        else:
            super().respond(request)


class FaultyServer(LocalSpeechServer):
    def __init__(self, espeak: EspeakEngine) -> None:
        super().__init__(engine=espeak, handler=FaultyHandler)
        self.faults: list[str] = []
        self.voices: list[str] = []
        self.speeds: list[object] = []  # the `speed` field of each request, None when it was left out


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture
def server(espeak: EspeakEngine) -> Iterator[FaultyServer]:
    running = FaultyServer(espeak)
    running.start()
    yield running
    running.stop()


def engine_for(server: LocalSpeechServer, *, key: str = "local-key", timeout_s: float = 5.0,
               max_retries: int = 2) -> OpenAiEngine:
    return OpenAiEngine(key, model="gpt-4o-mini-tts", voice="alloy", base_url=server.base_url,
                        timeout_s=timeout_s, max_retries=max_retries)


def request(text: str = PERSIAN, request_id: str = "r1", voice: str | None = None) -> TextRequest:
    return TextRequest(session_id="s1", avatar_id="sample", text=text, request_id=request_id, tts="openai",
                       voice=voice)


def test_a_request_rate_is_sent_as_openai_speed_and_left_out_at_the_normal_rate(server: FaultyServer) -> None:
    engine = engine_for(server)
    normal = engine.synthesize("Good morning to you all.", "en")
    fast = engine.synthesize("Good morning to you all.", "en", rate=1.8)
    assert server.speeds == [None, 1.8]
    assert fast.duration_s < 0.75 * normal.duration_s


def test_streamed_pcm_is_read_as_24_kilohertz_speech_of_plausible_length(server: FaultyServer) -> None:
    speech = engine_for(server).synthesize("سلام، حال شما چطور است؟", "fa")
    assert speech.sample_rate == PCM_RATE
    assert 1.0 < speech.duration_s < 4.0
    assert np.abs(speech.pcm).max() > 3000


def test_openai_segments_match_espeak_segments_in_format_and_loudness(server: FaultyServer,
                                                                       espeak: EspeakEngine) -> None:
    core = TtsCore(EngineSet.of(espeak, engine_for(server)), max_text_chars=2000)
    for tts in ("openai", "espeak"):
        text_request = request().model_copy(update={"tts": tts})
        segments = [event for event in core.handle(text_request) if isinstance(event, SpeechSegment)]
        assert {s.meta.engine for s in segments} == {tts}
        assert all(s.meta.sample_rate == OUTPUT_RATE and s.meta.sample_count % 882 == 0 for s in segments)
        levels = [gated_rms_dbfs(to_float(np.frombuffer(s.pcm16, "<i2")), OUTPUT_RATE) for s in segments]
        assert all(level == pytest.approx(-20.0, abs=0.75) for level in levels), (tts, levels)


def test_the_requests_voice_reaches_the_server_and_the_settings_voice_is_the_default(
        server: FaultyServer) -> None:
    core = TtsCore(engine_for(server), max_text_chars=2000)
    list(core.handle(request("Hello.", voice="nova")))
    list(core.handle(request("Hello.", request_id="r2")))
    assert server.voices == ["nova", "alloy"]


def test_a_busy_server_is_retried_until_it_answers(server: FaultyServer) -> None:
    server.faults = ["busy", "busy"]
    speech = engine_for(server, max_retries=2).synthesize("Hello there.", "en")
    assert speech.duration_s > 0.3 and server.requests_served == 3


def test_retries_are_bounded_and_then_only_that_request_fails(server: FaultyServer) -> None:
    server.faults = ["busy", "busy"]
    core = TtsCore(engine_for(server, max_retries=1), max_text_chars=2000)
    [event] = list(core.handle(request()))
    assert isinstance(event, SessionError) and event.code == "tts_failed" and "503" in event.message
    assert server.requests_served == 2
    assert all(isinstance(e, SpeechSegment) for e in core.handle(request(request_id="r2")))


def test_a_stalled_server_times_out_instead_of_hanging_the_processor(server: FaultyServer) -> None:
    server.faults = ["stall"]
    started = time.monotonic()
    with pytest.raises(TtsFailure, match="timed out"):
        engine_for(server, timeout_s=0.3, max_retries=0).synthesize("Hello.", "en")
    assert time.monotonic() - started < 1.2


def test_a_stream_that_breaks_off_fails_the_piece(server: FaultyServer) -> None:
    server.faults = ["break"]
    with pytest.raises(TtsFailure, match="broke off"):
        engine_for(server, max_retries=0).synthesize("Hello.", "en")


def test_a_rejected_request_is_not_retried(server: FaultyServer) -> None:
    server.faults = ["bad_request"]
    with pytest.raises(TtsFailure, match=r"400.*nobody"):
        engine_for(server, max_retries=3).synthesize("Hello.", "en")
    assert server.requests_served == 1


def test_a_wrong_key_stops_the_processor_at_start_up_not_at_the_first_request(server: FaultyServer) -> None:
    settings = Settings(tts_engine="openai", openai_api_key=SecretStr("wrong-key"), openai_base_url=server.base_url,
                        openai_max_retries=0)
    with pytest.raises(TtsConfigError, match=r"'openai' failed its start-up check.*401"):
        start_core(settings)


def test_a_wrong_key_fails_with_the_servers_answer(server: FaultyServer) -> None:
    with pytest.raises(TtsFailure, match="401"):
        engine_for(server, key="wrong-key", max_retries=2).synthesize("Hello.", "en")
    assert server.requests_served == 1


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_real_persian_through_the_openai_backend_gives_speech_of_plausible_length(server: FaultyServer,
                                                                                   kind: str) -> None:
    core = TtsCore(engine_for(server), max_text_chars=2000)
    segments = [e for e in core.handle(request(CORPUS[kind], request_id=kind)) if isinstance(e, SpeechSegment)]
    spoken_characters = sum(len(s.meta.spoken) for s in segments)
    speech_seconds = sum((s.meta.speech_ms or 0) for s in segments) / 1000
    low, high = SECONDS_PER_SPOKEN_CHARACTER
    assert segments and low * spoken_characters < speech_seconds < high * spoken_characters
