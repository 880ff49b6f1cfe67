"""``make run``: start the embedded broker and database if none are configured, then every service."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from infra.broker import EmbeddedBroker, die_with_parent
from infra.database import database_name, ensure_database, server_is_reachable, start_embedded_server
from infra.logging import configure_logging
from infra.migrations import migrate
from infra.settings import PROJECT_ROOT, Settings, load_settings

log = logging.getLogger("launcher")
SERVICES = {
    "tts": [sys.executable, "-m", "processors.tts.main"],
    "lipsync": [sys.executable, "-m", "processors.lipsync.main"],
    "registration": [sys.executable, "-m", "processors.registration.main"],
    "gateway": [sys.executable, "-m", "gateway.main"],
}


@dataclass
class Stack:
    """Everything `make run` started, so Ctrl-C can stop exactly that."""

    settings: Settings
    env: dict[str, str]
    broker: EmbeddedBroker | None = None
    database_server: Any = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service did not stop in time; killing it", extra={"child": name})
                process.kill()
        if self.broker:
            self.broker.stop()
        if self.database_server is not None:
            self.database_server.cleanup()


def prepare_infrastructure(settings: Settings) -> Stack:
    """Broker and database first, so every service finds them at start-up."""
    env = dict(os.environ)
    stack = Stack(settings, env)
    if not settings.kafka_bootstrap_servers:
        stack.broker = EmbeddedBroker(settings.embedded_kafka_port).start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = stack.broker.bootstrap
        print(f"  broker    embedded Kafka-compatible broker on {stack.broker.bootstrap}", flush=True)
    else:
        print(f"  broker    {settings.kafka_bootstrap_servers}", flush=True)
    database_url = settings.database_url
    if not server_is_reachable(database_url) and settings.database_fallback_embedded:
        stack.database_server, database_url = start_embedded_server(settings.data_dir, database_name(database_url))
        env["DATABASE_URL"] = database_url
    ensure_database(database_url)
    applied = migrate(database_url)
    print(f"  database  {database_name(database_url)} ({len(applied)} migrations applied now)", flush=True)
    return stack


def service_commands(settings: Settings) -> dict[str, list[str]]:
    """Each process to run by name: one of each service, LIPSYNC_WORKERS lip-sync workers ("lipsync-2", …) and
    REGISTRATION_WORKERS registration workers ("registration-2", …)."""
    commands = dict(SERVICES)
    for service, count in (("lipsync", settings.lipsync_workers), ("registration", settings.registration_workers)):
        for number in range(2, count + 1):
            commands[f"{service}-{number}"] = SERVICES[service]
    return commands


def start_services(stack: Stack) -> None:
    for name in service_commands(stack.settings):
        start_service(stack, name)


def start_service(stack: Stack, name: str) -> None:
    # A launcher killed outright (kill -9, a CI timeout) must not leave its services running as orphans.
    stack.processes[name] = subprocess.Popen(service_commands(stack.settings)[name], cwd=PROJECT_ROOT,
                                             env=stack.env, preexec_fn=die_with_parent)


# A clean exit, or death by the signals that ask for one (uvicorn re-raises SIGTERM after its shutdown). A crash,
# SIGKILL (the OOM killer, a fault test) or an error exit is restarted.
STOPPED_ON_PURPOSE = frozenset({0, -signal.SIGINT, -signal.SIGTERM})


class ServiceStopped(Exception):
    """A service exited cleanly: someone stopped it, so the stack stops rather than restarting it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} stopped")
        self.name = name


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (docker stop, systemd) both stop everything cleanly, also when the launcher was started
    with SIGINT ignored (a background job of a non-interactive shell inherits that)."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


class Supervisor:
    """Restarts a crashed service (its Kafka consumer group hands its work to the new one), with backoff;
    gives up when a service crashes too often, so a broken configuration does not loop forever."""

    def __init__(self, stack: Stack, max_crashes: int = 5, window_s: float = 60.0) -> None:
        self.stack = stack
        self.max_crashes = max_crashes
        self.window_s = window_s
        self.crashes: dict[str, list[float]] = {name: [] for name in service_commands(stack.settings)}

    def watch(self) -> None:
        while True:
            self.check()
            time.sleep(0.2)

    def check(self) -> None:
        """Restart whatever has crashed since the last look; a service that stopped cleanly stops the stack."""
        for name, process in list(self.stack.processes.items()):
            if process.poll() is None:
                continue
            if process.returncode in STOPPED_ON_PURPOSE:  # someone asked it to stop: don't fight that
                raise ServiceStopped(name)
            self._restart(name, process.returncode)

    def _restart(self, name: str, code: int) -> None:
        now = time.monotonic()
        recent = [t for t in self.crashes[name] if now - t < self.window_s] + [now]
        self.crashes[name] = recent
        if len(recent) > self.max_crashes:
            raise SystemExit(f"service '{name}' crashed {len(recent)} times in {self.window_s:.0f} s; stopping")
        delay = min(30.0, 0.5 * 2 ** (len(recent) - 1))
        print(f"  restart   {name} exited with code {code}; restarting in {delay:.1f} s", flush=True)
        time.sleep(delay)
        start_service(self.stack, name)


def wait_until_ready(stack: Stack, supervisor: Supervisor, timeout_s: float = 120.0) -> bool:
    """Poll /ready; a service that dies meanwhile is restarted (a crash loop makes the supervisor give up)."""
    url = f"http://127.0.0.1:{stack.settings.port}/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.check()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="launcher")
    print("Starting the avatar streaming service:", flush=True)
    stop_on_signals()
    stack = prepare_infrastructure(settings)
    try:
        start_services(stack)
        supervisor = Supervisor(stack)
        if wait_until_ready(stack, supervisor):
            print(f"  ready     http://localhost:{settings.port}  (Ctrl-C stops everything)", flush=True)
        else:
            print(f"  not ready after 120 s: see http://localhost:{settings.port}/ready", flush=True)
        supervisor.watch()
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    except ServiceStopped as stopped:
        print(f"\n  stopped   {stopped.name} was stopped; stopping the others…", flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
