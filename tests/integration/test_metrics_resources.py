"""/metrics shows every service's resident memory (gateway, tts, lipsync, registration), GPU use, and registration
time as a histogram from PostgreSQL; /ready names a lip-sync worker configured for a GPU that runs without one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from skimage import data

from infra.broker import EmbeddedBroker, free_port
from infra.settings import PROJECT_ROOT, Settings
from tests.gateway_server import serve_gateway
from tests.integration.stack import TEST_FACE_DATA_KEYS, RunningStack
from tests.unit.test_registration_media import png_bytes

pytestmark = pytest.mark.integration
SERVICES = ("gateway", "tts", "lipsync", "registration")


def metrics_text(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        return str(response.read().decode())


def samples(body: str, name: str) -> dict[str, float]:
    """Each sample of ``name`` by its label text, e.g. ``{'service="tts",instance="h:1"': 123.0}``."""
    found = {}
    for line in body.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def registered_count(stack: RunningStack) -> float:
    counts = samples(metrics_text(stack.http), "avatar_registration_seconds_count")
    return counts.get('outcome="done"', 0.0)


def test_every_services_resident_memory_and_gpu_use_are_in_metrics(stack: RunningStack) -> None:
    deadline = time.monotonic() + 15
    while True:  # processors report with their heartbeat, every 2 s
        body = metrics_text(stack.http)
        rss = samples(body, "avatar_process_resident_memory_bytes")
        seen = {service for service in SERVICES if any(f'service="{service}"' in labels for labels in rss)}
        if seen == set(SERVICES) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == set(SERVICES), body
    assert all(20 * 2**20 < value < 8 * 2**30 for value in rss.values()), rss
    cuda = samples(body, "avatar_process_cuda_provider_in_use")
    assert any('service="lipsync"' in labels for labels in cuda) and set(cuda.values()) == {0.0}
    assert "avatar_process_gpu_memory_bytes" not in body and "avatar_gpu_memory_used_bytes" not in body


def test_a_registration_is_counted_in_the_registration_time_histogram(stack: RunningStack) -> None:
    before = registered_count(stack)
    photo = png_bytes(np.asarray(data.astronaut(), dtype=np.uint8))
    response = httpx.post(f"{stack.http}/avatar/register", timeout=60,
                          data={"avatar_name": f"timed {uuid.uuid4().hex[:6]}", "user_id": "metrics"},
                          files={"file": ("face.png", photo, "image/png")})
    assert response.status_code == 201, response.text
    body = metrics_text(stack.http)
    assert registered_count(stack) == before + 1
    buckets = samples(body, "avatar_registration_seconds_bucket")
    done = [value for labels, value in buckets.items() if 'outcome="done"' in labels]
    assert done == sorted(done) and buckets['le="+Inf",outcome="done"'] == before + 1
    assert 0 < samples(body, "avatar_registration_seconds_sum")['outcome="done"'] < 60 * (before + 1)
    assert 'avatar_registration_seconds_count{outcome="failed"}' in body


# --- a GPU configured but missing ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_only_gpu_worker(database_url: str) -> Iterator[str]:
    """A gateway and a lip-sync worker told GPU_MEMORY_LIMIT=1GB on this machine without a GPU (a broker of their
    own, so the shared stack's lip-sync group is left alone)."""
    broker = EmbeddedBroker(free_port()).start()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, DATABASE_URL=database_url, LOG_LEVEL="WARNING",
               FACE_DATA_KEYS=TEST_FACE_DATA_KEYS, GPU_MEMORY_LIMIT="1GB",
               PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    worker = subprocess.Popen([sys.executable, "-m", "processors.lipsync.main"], cwd=PROJECT_ROOT, env=env,
                              start_new_session=True)
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                        face_data_keys=TEST_FACE_DATA_KEYS, log_level="WARNING", _env_file=None)
    try:
        with serve_gateway(settings) as base_url:
            yield base_url
    finally:
        worker.terminate()
        worker.wait(30)
        broker.stop()


def ready(base_url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(base_url + "/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_ready_names_a_configured_gpu_that_is_missing_with_the_reason(cpu_only_gpu_worker: str) -> None:
    deadline = time.monotonic() + 60
    status, body = ready(cpu_only_gpu_worker)
    while "processor:lipsync" in body["missing"] and time.monotonic() < deadline:  # the worker starting
        time.sleep(0.5)
        status, body = ready(cpu_only_gpu_worker)
    assert status == 503 and "gpu:lipsync" in body["missing"], body
    [gpu] = body["gpu"]
    assert gpu["service"] == "lipsync" and gpu["instance"]
    assert gpu["reason"].startswith("GPU_MEMORY_LIMIT is set (this processor's settings) but no GPU is used: ")
    assert "onnxruntime-gpu" in gpu["reason"] or "no GPU is visible" in gpu["reason"]
