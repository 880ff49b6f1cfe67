"""Test helper: the real registration worker (create() as its main() runs it) in a thread, with chosen settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from infra.settings import Settings
from processors.registration.main import RegistrationWorker, create


@contextmanager
def run_registration_worker(settings: Settings, timeout_s: float = 60.0) -> Iterator[RegistrationWorker]:
    """Serve registration jobs until the block ends; yields once the worker holds its partitions."""
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
