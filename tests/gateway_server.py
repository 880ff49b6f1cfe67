"""Test helper: the real gateway app served by uvicorn on a free port in a thread, with chosen settings."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from gateway.app import create_app
from infra.settings import Settings


@contextmanager
def serve_gateway(settings: Settings, timeout_s: float = 60.0) -> Iterator[str]:
    """Run the gateway until the block ends; yields its base URL once start-up (lifespan) finished."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning",
                            lifespan="on", log_config=None)
    server = uvicorn.Server(config)

    def run() -> None:
        # uvicorn exits with SystemExit when start-up fails; the caller sees that as "did not start".
        with contextlib.suppress(SystemExit):
            server.run()

    thread = threading.Thread(target=run, name="test-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(30)
