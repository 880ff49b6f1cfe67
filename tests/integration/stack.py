"""Runs the whole service as `make run` does (infra.launcher) against the test broker and database."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from infra.broker import EmbeddedBroker, free_port
from infra.crypto import new_key
from infra.settings import PROJECT_ROOT

# One key for every service the tests start on the shared database, so each can read what another wrote.
TEST_FACE_DATA_KEYS = new_key("tests").to_text()


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    port: int
    bootstrap: str = ""
    database_url: str = ""

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/stream"

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def child_pid(stack: RunningStack, module: str) -> int:
    """The pid of the launcher's child running ``python -m module`` (read from /proc, Linux)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == stack.process.pid and module.encode() in command:
            return int(entry.name)
    raise LookupError(f"no child process running {module}")


def start_stack(bootstrap: str, database_url: str, port: int, timeout_s: float = 120.0, *,
                capture_output: bool = False, sigint_ignored: bool = False) -> RunningStack:
    """``capture_output``: the launcher's standard output goes to ``process.stdout``; ``sigint_ignored``: started
    as a background job of a non-interactive shell is (SIGINT ignored, which the launcher inherits)."""
    # WebRTC's ICE on loopback only: the tests never send to any other address.
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=database_url, PORT=str(port),
               LOG_LEVEL="WARNING", FACE_DATA_KEYS=TEST_FACE_DATA_KEYS, WEBRTC_ICE_ADDRESSES="127.0.0.1")
    process = subprocess.Popen([sys.executable, "-m", "infra.launcher"], cwd=PROJECT_ROOT, env=env,
                               start_new_session=True, stdout=subprocess.PIPE if capture_output else None,
                               preexec_fn=_ignore_sigint if sigint_ignored else None)
    stack = RunningStack(process, port, bootstrap, database_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"launcher exited with {process.returncode} during start-up")
        try:
            if stack.get("/ready")[0] == 200:
                return stack
        except OSError:
            pass
        time.sleep(0.5)
    stop_stack(stack)
    raise RuntimeError(f"/ready not 200 within {timeout_s} s")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_stack(stack: RunningStack, timeout_s: float = 20.0) -> int:
    """Ctrl-C, as a user would; returns the launcher's exit code."""
    if stack.process.poll() is None:
        os.killpg(stack.process.pid, signal.SIGINT)
        try:
            stack.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(stack.process.pid, signal.SIGKILL)
            stack.process.wait()
    return stack.process.returncode


class IsolatedStack(NamedTuple):
    """A broker nobody else uses and the whole service running on it."""

    broker: EmbeddedBroker
    stack: RunningStack


@contextmanager
def isolated_stack(database_url: str, timeout_s: float = 120.0, **start: bool) -> Iterator[IsolatedStack]:
    """A stack on a broker of its own, for tests that kill, pause or add processes without disturbing the others.

    The service stops before its broker, also when start-up or the block fails, so no launcher is left behind
    retrying a broker that is gone.
    """
    broker = EmbeddedBroker(free_port()).start()
    try:
        running = start_stack(broker.bootstrap, database_url, free_port(), timeout_s, **start)
        try:
            yield IsolatedStack(broker, running)
        finally:
            stop_stack(running)
    finally:
        broker.stop()


@dataclass
class Collected:
    """The video chunks of one request, as a client received them."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    first_chunk_s: float | None = None

    @property
    def mp4(self) -> bytes:
        return b"".join(base64.b64decode(c["data"]) for c in sorted(self.chunks, key=lambda c: c["seq"]))


