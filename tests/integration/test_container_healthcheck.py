"""The processors' container health probe (infra/docker/healthcheck.py) against the running stack's heartbeats."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from types import ModuleType

import pytest

from infra.settings import PROJECT_ROOT, Settings
from tests.integration.stack import RunningStack

pytestmark = pytest.mark.integration
PROBE = PROJECT_ROOT / "infra" / "docker" / "healthcheck.py"


def load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("container_healthcheck", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_probe(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """As docker-compose.yml runs it: a script, configured by the container's environment."""
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               DATABASE_URL=settings.database_url)
    return subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True, text=True,
                          timeout=30, cwd="/")


@pytest.mark.parametrize("service", ["tts", "lipsync"])
def test_probe_reports_healthy_while_this_hosts_processor_heartbeats(stack: RunningStack, settings: Settings,
                                                                     service: str) -> None:
    probed = run_probe(settings, service)
    assert probed.returncode == 0, probed.stderr


def test_probe_is_unhealthy_when_only_another_host_heartbeats(stack: RunningStack, settings: Settings) -> None:
    problem = load_probe().check(settings, "lipsync", f"not-{socket.gethostname()}")
    assert problem is not None and "no heartbeat of 'lipsync'" in problem


def test_probe_is_unhealthy_without_a_reachable_heartbeat_topic(settings: Settings) -> None:
    silent = settings.model_copy(update={"kafka_status_topic": "avatar.status.nobody-writes-here"})
    problem = load_probe().check(silent, "tts", socket.gethostname())
    assert problem is not None


def test_probe_refuses_an_unknown_service_name(settings: Settings) -> None:
    probed = run_probe(settings, "gateway")
    assert probed.returncode == 2 and "usage" in probed.stderr
