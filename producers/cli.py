"""The ``avatar-stream`` command: say text or an audio file through Kafka into an MP4, or register an avatar."""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO, get_args

from pydantic import ValidationError

from infra.settings import Settings, load_settings
from producers.audio import AudioError
from producers.audio_file import DecodedAudio, decode_audio_file
from producers.client import AvatarProducer, Chunk, PipelineError, ProduceError, StreamTimeout
from schemas.common import Language
from schemas.requests import TextRequest, TtsEngineName

EXIT_OK, EXIT_FAILED = 0, 1


class CliError(Exception):
    """A failure the user can act on: printed as one ``error:`` line, exit status 1."""


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-stream", description=(
        "Talk to the avatar streaming service: say text through Kafka into an MP4 file, or register an avatar "
        "through the HTTP API."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    default_bootstrap = settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_kafka_port}"

    say = commands.add_parser("say", help="send text (or --audio) into Kafka and write the finished MP4",
                              description="Send TEXT into Kafka and write the lip-synced MP4 the pipeline returns; "
                                          "with --audio, lip-sync that speech instead (no TTS; TEXT, if given, is "
                                          "its subtitle).")
    say.add_argument("text", nargs="*", help="what the avatar says (quote it; '-' reads standard input)")
    say.add_argument("--audio", type=Path, default=None,
                     help="an audio file to lip-sync (WAV, MP3, OGG/Opus, ...), sent onto avatar.speech")
    say.add_argument("--avatar", default=settings.sample_avatar_id, help="avatar id (default: %(default)s)")
    # --language is the protocol's word (`language` in text_input and the REST body); --lang is kept for scripts.
    say.add_argument("--language", "--lang", dest="lang", choices=["fa", "en"], default=None,
                     help="language (default: detected)")
    say.add_argument("-o", "--output", default="out.mp4", help="MP4 file to write, '-' for standard output "
                                                                "(default: %(default)s)")
    say.add_argument("--bootstrap", default=default_bootstrap,
                     help="Kafka bootstrap servers host:port[,...] (default: %(default)s)")
    say.add_argument("--tts", choices=list(get_args(TtsEngineName)), default=None,
                     help="TTS backend (default: the TTS processor's TTS_ENGINE)")
    say.add_argument("--voice", default=None, help="a voice of that backend, e.g. espeak's f3 (default: its own)")
    say.add_argument("--rate", type=float, default=None,
                     help="speaking rate, 0.5-2.0 (default: 1, the voice's own)")
    say.add_argument("--session", default=None, help="session id to speak in (default: a transient session)")
    say.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the video (default: 60)")
    say.add_argument("--connect-timeout", type=float, default=5.0,
                     help="seconds to wait for the broker to answer (default: 5)")
    say.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    register = commands.add_parser("register", help="register an avatar from a photo, GIF or short video",
                                   description="Upload FILE to POST /avatar/register and print the quality report.")
    register.add_argument("file", type=Path, help="JPG, PNG, GIF, MP4, MOV or WebM with one clear face")
    register.add_argument("--name", required=True, help="the avatar's name (unique per user)")
    register.add_argument("--user", required=True, help="the user id that owns the avatar ('system' = shared)")
    register.add_argument("--description", default="", help="free text shown in the avatar list")
    register.add_argument("--tts", choices=list(get_args(TtsEngineName)), default=None,
                          help="the avatar's default TTS backend (default: none, TTS_ENGINE decides)")
    register.add_argument("--voice", default=None, help="the avatar's default voice of that backend")
    register.add_argument("--url", default=f"http://127.0.0.1:{settings.port}",
                          help="the gateway's base URL (default: %(default)s)")
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    register.add_argument("--token", default=token, help="bearer token (default: ADMIN_TOKEN if set; none is "
                                                          "needed in dev mode)")
    register.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the analysis")
    register.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings()  # a bad environment stops here with one line per bad variable
    args = build_parser(settings).parse_args(argv)
    progress = Progress(sys.stderr, quiet=args.quiet)
    try:
        if args.command == "say":
            return run_say(args, settings, progress)
        return run_register(args, progress)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # e.g. `avatar-stream say ... -o - | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


class Progress:
    """Human-readable progress on stderr, so standard output can carry the MP4 (``-o -``)."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet
        self.started = time.perf_counter()

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream, flush=True)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


def read_text(words: Sequence[str], stdin: TextIO) -> str:
    text = stdin.read() if list(words) == ["-"] else " ".join(words)
    if not text.strip():
        raise CliError("the text is empty")
    return text.strip()


def settings_for_bootstrap(settings: Settings, bootstrap: str) -> Settings:
    try:
        return settings.model_validate({**settings.model_dump(), "kafka_bootstrap_servers": bootstrap})
    except ValidationError as error:
        raise CliError(f"--bootstrap {bootstrap!r}: {error.errors()[0]['msg']}") from None


def read_audio(path: Path, settings: Settings) -> DecodedAudio:
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        return decode_audio_file(path.read_bytes(), max_seconds=settings.audio_max_utterance_s)
    except AudioError as error:
        raise CliError(f"{path}: {error.code}: {error.message}") from None


def run_say(args: argparse.Namespace, settings: Settings, progress: Progress) -> int:
    audio = read_audio(args.audio, settings) if args.audio is not None else None
    text = read_text(args.text, sys.stdin) if audio is None or args.text else ""
    if len(text) > settings.max_text_chars:
        raise CliError(f"the text has {len(text)} characters; the limit is {settings.max_text_chars}")
    producer = AvatarProducer(settings_for_bootstrap(settings, args.bootstrap))
    try:
        producer.warm_up(timeout_s=args.connect_timeout)
    except ProduceError as error:
        raise CliError(f"cannot reach the Kafka broker at {args.bootstrap}: {error}") from None
    chunks: list[Chunk] = []
    sent_at: list[float] = []

    def on_sent(request: TextRequest | str) -> None:
        sent_at.append(time.perf_counter())
        if isinstance(request, str):
            progress.say(f"sent audio request {request} (avatar {args.avatar})")
        else:
            progress.say(f"sent request {request.request_id} (session {request.session_id}, "
                         f"avatar {request.avatar_id})")

    def on_chunk(chunk: Chunk) -> None:
        chunks.append(chunk)
        first = f", first chunk after {(time.perf_counter() - sent_at[0]) * 1000:.0f} ms" if len(chunks) == 1 else ""
        subtitle = f"  «{chunk.text}»" if chunk.text else ""
        progress.say(f"  chunk {chunk.seq:>3}  {(chunk.pts_ms + chunk.duration_ms) / 1000:6.2f} s of video"
                     f"{first}{subtitle}")

    language: Language | None = args.lang
    try:
        if audio is not None:
            mp4 = producer.say_audio(avatar_id=args.avatar, pcm16=audio.pcm.astype("<i2").tobytes(),
                                     sample_rate=audio.sample_rate, language=language or "fa", text=text,
                                     session_id=args.session, timeout_s=args.timeout, on_chunk=on_chunk,
                                     on_sent=on_sent)
        else:
            mp4 = producer.say(avatar_id=args.avatar, text=text, language=language, session_id=args.session,
                               timeout_s=args.timeout, on_chunk=on_chunk, on_sent=on_sent, tts=args.tts,
                               voice=args.voice, rate=args.rate)
    except AudioError as error:
        raise CliError(f"{args.audio}: {error.code}: {error.message}") from None
    except PipelineError as error:
        raise CliError(f"the pipeline refused the request: {error.code}: {error.message}") from None
    except StreamTimeout as error:
        raise CliError(f"timed out: {error}") from None
    except ProduceError as error:
        raise CliError(f"the request could not be sent: {error}") from None
    finally:
        producer.close()
    where = write_output(args.output, mp4)
    seconds = sum(chunk.duration_ms for chunk in chunks) / 1000
    progress.say(f"wrote {where}: {seconds:.2f} s of video in {len(chunks)} chunks, {len(mp4) / 1024:.1f} kB, "
                 f"{progress.elapsed_ms() / 1000:.2f} s in all")
    return EXIT_OK


def write_output(target: str, mp4: bytes) -> str:
    if target == "-":
        out: BinaryIO = sys.stdout.buffer
        out.write(mp4)
        out.flush()
        return "standard output"
    path = Path(target)
    try:
        path.write_bytes(mp4)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror}") from None
    return str(path)


def run_register(args: argparse.Namespace, progress: Progress) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    data = path.read_bytes()
    fields = {"avatar_name": args.name, "user_id": args.user, "description": args.description}
    fields |= {name: value for name in ("tts", "voice") if (value := getattr(args, name)) is not None}
    body, content_type = encode_multipart(fields, "file", path.name, data)
    base = args.url.rstrip("/")
    headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {args.token}"} if args.token else {})
    deadline = time.monotonic() + args.timeout
    progress.say(f"uploading {path.name} ({len(data) / 1024:.1f} kB) to {base}/avatar/register")
    # async=true answers at once with a job to poll, so the analysis stages can be shown as they happen.
    reply = request_json("POST", f"{base}/avatar/register?async=true", body,
                         headers | {"Content-Type": content_type}, args.timeout)
    if "job_id" in reply and "state" in reply:
        reply = follow_job(base, reply, headers, deadline, progress)
    progress.say(f"done in {progress.elapsed_ms() / 1000:.2f} s")
    print(describe_registration(reply))
    return EXIT_OK


def follow_job(base: str, job: dict[str, Any], headers: dict[str, str], deadline: float,
               progress: Progress) -> dict[str, Any]:
    """Poll a registration job until it ends; its result, or CliError with the server's code and message."""
    status_url = base + str(job.get("status_url") or f"/avatar/register/jobs/{job['job_id']}")
    shown = None
    while True:
        stage = (job.get("stage"), round(float(job.get("progress") or 0) * 100))
        if stage != shown:
            progress.say(f"  {stage[0]}: {stage[1]}%")
            shown = stage
        if job.get("state") == "done":
            result: dict[str, Any] = job.get("result") or job
            return result
        if job.get("state") == "failed":
            failure = job.get("error") or {}
            raise CliError(f"the server refused the registration ({job.get('http_status')} "
                           f"{failure.get('code', 'failed')}): {failure.get('message', 'no reason given')}")
        if time.monotonic() > deadline:
            raise CliError(f"the registration did not finish in time (job {job.get('job_id')}, stage {stage[0]})")
        time.sleep(0.2)
        job = request_json("GET", status_url, None, headers, max(1.0, deadline - time.monotonic()))


def encode_multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) with text fields and one file."""
    boundary = f"avatar-stream-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + value.encode() + b"\r\n")
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{safe_name}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request_json(method: str, url: str, body: bytes | None, headers: dict[str, str],
                 timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return parse_json(response.read(), url)
    except urllib.error.HTTPError as error:
        reply = parse_json(error.read(), url, strict=False)
        code, message = reply.get("code", f"http_{error.code}"), reply.get("message", error.reason)
        raise CliError(f"the server refused the registration ({error.code} {code}): {message}") from None
    except urllib.error.URLError as error:
        raise CliError(f"cannot reach {url}: {error.reason}") from None
    except TimeoutError:
        raise CliError(f"no answer from {url} within {timeout_s:g} s") from None


def parse_json(raw: bytes, url: str, strict: bool = True) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        if strict:
            raise CliError(f"{url} did not answer with JSON: {raw[:200]!r}") from None
        return {}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def describe_registration(reply: dict[str, Any]) -> str:
    """The registration reply as a short summary followed by the full JSON (for scripts: the last lines)."""
    nested = reply.get("avatar")
    avatar: dict[str, Any] = nested if isinstance(nested, dict) else reply
    avatar_id = avatar.get("avatar_id") or reply.get("avatar_id") or "?"
    report = reply.get("quality_report") or avatar.get("quality_report") or {}
    warnings = report.get("warnings", []) if isinstance(report, dict) else []
    summary = f"registered avatar {avatar_id}"
    if warnings:
        summary += "; warnings: " + "; ".join(str(w.get("message", w)) if isinstance(w, dict) else str(w)
                                              for w in warnings)
    return summary + "\n" + json.dumps(reply, ensure_ascii=False, indent=2)


if __name__ == "__main__":
    sys.exit(main())
