"""A local OpenAI-compatible speech server (``POST /v1/audio/speech``) backed by espeak-ng.

It lets the openai backend run end to end with no internet and no key: the tests and the speech benchmark
start it on 127.0.0.1, and a developer can point OPENAI_BASE_URL at it
(``python -m tests.support.local_openai_server --port 8090``). It answers like OpenAI's endpoint: JSON
errors with an ``error`` object, 401 without the expected bearer key, and ``response_format="pcm"`` streamed
as 24 kHz 16-bit mono in HTTP chunks while the rest is still being sent.
"""

from __future__ import annotations

import argparse
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from processors.tts.audio import resample, to_float, to_pcm16
from processors.tts.engines.base import TtsFailure
from processors.tts.engines.espeak import EspeakEngine
from processors.tts.engines.openai_tts import PCM_RATE
from processors.tts.text import detect_language

SPEECH_PATHS = ("/v1/audio/speech", "/audio/speech")
STREAM_CHUNK_BYTES = 4800  # 100 ms of 24 kHz PCM16 per HTTP chunk


class SpeechRequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class LocalSpeechServer(ThreadingHTTPServer):
    """Serves speech on 127.0.0.1; `requests_served` counts every speech request that reached it."""

    daemon_threads = True

    def __init__(self, port: int = 0, *, api_key: str = "local-key", engine: EspeakEngine | None = None,
                 handler: type[BaseHTTPRequestHandler] | None = None) -> None:
        super().__init__(("127.0.0.1", port), handler or SpeechRequestHandler)
        self.api_key = api_key
        self.engine = engine or EspeakEngine()
        self.requests_served = 0
        self._counter_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def count_request(self) -> int:
        with self._counter_lock:
            self.requests_served += 1
            return self.requests_served

    def start(self) -> LocalSpeechServer:
        # A short poll interval: stop() returns at once instead of after up to half a second
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-openai-speech", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def speak_pcm(self, text: str, voice: str, speed: float = 1.0) -> bytes:
        """24 kHz PCM16 of the text, in the language its script says; an espeak variant name picks it, and
        OpenAI's ``speed`` the rate."""
        variant = voice if voice in self.engine.variants else None
        speech = self.engine.synthesize(text, detect_language(text), variant, rate=speed)
        audio = resample(to_float(speech.pcm), speech.sample_rate, PCM_RATE)
        return to_pcm16(audio).astype("<i2").tobytes()


def _speed(request: dict[str, Any]) -> float:
    """OpenAI's ``speed``: 0.25-4.0, 1 when absent; anything else is the 400 OpenAI answers."""
    speed = request.get("speed", 1.0)
    if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
        raise SpeechRequestError(HTTPStatus.BAD_REQUEST, f"speed must be 0.25-4.0 (got {speed!r})")
    return float(speed)


class SpeechRequestHandler(BaseHTTPRequestHandler):
    """The endpoint itself; subclasses may override `respond` (the tests add failures this way)."""

    server: LocalSpeechServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.server.count_request()
        try:
            request = self._parse()
            self.respond(request)
        except SpeechRequestError as error:
            self.send_json_error(error.status, str(error))

    def respond(self, request: dict[str, Any]) -> None:
        try:
            pcm = self.server.speak_pcm(request["input"], str(request.get("voice", "")), _speed(request))
        except TtsFailure as failure:
            raise SpeechRequestError(HTTPStatus.INTERNAL_SERVER_ERROR, str(failure)) from None
        self.stream_pcm(pcm)

    def _parse(self) -> dict[str, Any]:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))  # read first: keep-alive stays in step
        if self.path.rstrip("/") not in SPEECH_PATHS:
            raise SpeechRequestError(HTTPStatus.NOT_FOUND, f"no route {self.path}")
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            raise SpeechRequestError(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided")
        try:
            request = json.loads(body)
        except ValueError:
            raise SpeechRequestError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(request, dict) or not str(request.get("input", "")).strip():
            raise SpeechRequestError(HTTPStatus.BAD_REQUEST, "'input' is required")
        if request.get("response_format", "mp3") != "pcm":
            raise SpeechRequestError(HTTPStatus.BAD_REQUEST, "this server streams only response_format 'pcm'")
        return request

    def stream_pcm(self, pcm: bytes) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "audio/pcm")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(pcm), STREAM_CHUNK_BYTES):
            self.write_chunk(pcm[start : start + STREAM_CHUNK_BYTES])
        self.write_chunk(b"")

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_json_error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests and the benchmark read their own output."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default="local-key")
    args = parser.parse_args()
    server = LocalSpeechServer(args.port, api_key=args.api_key)
    print(f"OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY={args.api_key}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
