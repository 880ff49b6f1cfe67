"""The real TTS processor (create() as main() runs it) in a thread of the test process, for a module's tests."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from infra.settings import Settings
from processors.tts.main import TtsProcessor, create


@contextmanager
def tts_processor_running(settings: Settings) -> Iterator[None]:
    """Nothing is handed to the tests, so the processor's Kafka clients are gone before the broker stops (else the
    broker waits 5 s for them)."""
    running: TtsProcessor | None = create(settings)
    assert running is not None
    thread: threading.Thread | None = running.app.start_in_thread()
    assert thread is not None and running.app.assigned.wait(30), "the processor never got its partitions"
    try:
        yield
    finally:
        running.app.stop()
        if running.control is not None:
            running.control.stop()  # its consumer would otherwise retry the stopped broker for the rest of the run
        thread.join(15)
        running = thread = None  # the thread's target holds the app, and the app its clients
        gc.collect()
