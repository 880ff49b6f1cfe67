"""Runs the gateway (HTTP + WebSocket) on PORT with uvicorn."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from infra.logging import configure_logging
from infra.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="gateway")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                log_level=settings.log_level.lower(), ws_max_size=settings.ws_max_message_bytes)


if __name__ == "__main__":
    main()
