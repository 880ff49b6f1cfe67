"""Test helpers: the real registration worker, as its own process (``python -m processors.registration.main``, as
`make run` starts it) or in a thread (create() as its main() runs it, for a test that calls its handler)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from infra.settings import PROJECT_ROOT, Settings
from processors.registration.main import RegistrationWorker, create


def start_worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    """A worker process on ``settings``' broker, database and keys (this tree's code: PYTHONPATH)."""
    keys = settings.face_data_keys.get_secret_value() if settings.face_data_keys is not None else ""
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               DATABASE_URL=settings.database_url, FACE_DATA_KEYS=keys, LOG_LEVEL="WARNING",
               MAX_UPLOAD_BYTES=str(settings.max_upload_bytes),
               REGISTER_SAMPLE_AVATAR=str(settings.register_sample_avatar).lower(),
               PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    # A new session rather than a preexec function: forking a test process full of threads runs no Python.
    return subprocess.Popen([sys.executable, "-m", "processors.registration.main"], cwd=PROJECT_ROOT, env=env,
                            start_new_session=True)


def stop_worker_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the job in hand is finished first), then SIGKILL if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def worker_process(settings: Settings, timeout_s: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process for the block; with REGISTER_SAMPLE_AVATAR it is yielded once the sample is stored, so a
    gateway started next finds it. Jobs sent before the worker joined its group wait for it in Kafka."""
    process = start_worker_process(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while settings.register_sample_avatar and not _stored(settings.database_url, settings.sample_avatar_id):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the registration worker did not register the sample (exit {process.poll()})")
            time.sleep(0.2)
        yield process
    finally:
        stop_worker_process(process)


def _stored(database_url: str, avatar_id: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT 1 FROM avatars WHERE avatar_id = %s", (avatar_id,)).fetchone() is not None


@contextmanager
def run_registration_worker(settings: Settings, timeout_s: float = 60.0) -> Iterator[RegistrationWorker]:
    """Serve registration jobs in a thread until the block ends; yields once the worker holds its partitions."""
    worker = create(settings)
    thread = worker.app.start_in_thread()
    try:
        if not worker.app.assigned.wait(timeout_s):
            raise RuntimeError("the registration worker never got its partitions")
        yield worker
    finally:
        worker.app.stop()
        thread.join(30)
        worker.store.pool.close()
        del worker, thread
        gc.collect()  # its Kafka clients go now, not when the broker they talk to is already gone
