"""The gateway's HTTP application: wires the services, the routes and the error format together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.docs_pages import install_offline_docs
from gateway.post_limits import PostRateLimits
from gateway.ratelimit import Limits, RateLimiter
from gateway.routes import ROUTERS
from gateway.security_headers import SecurityHeaders
from gateway.services import Services
from gateway.webrtc.peers import WebRtcHub
from infra.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.start(settings)  # the sample avatar is the registration worker's (REGISTER_SAMPLE_AVATAR)
        app.state.services = services
        # WebRTC peers live on this event loop; the hub also hears interrupts on the control topic.
        app.state.webrtc = WebRtcHub(settings, services.sessions) if settings.webrtc_max_peers else None
        try:
            yield
        finally:
            if app.state.webrtc is not None:
                await app.state.webrtc.close_all()
            services.stop()

    app = FastAPI(title="Avatar streaming service", version="0.1.0", lifespan=lifespan,
                  description="Persian and English text in, lip-synced talking-avatar video out.",
                  docs_url=None, redoc_url=None)  # served offline by install_offline_docs
    app.state.settings = settings
    # Added first, so innermost: a 429 carries the CORS and security headers like any other response.
    install_rate_limits(app, settings)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in settings.cors_origins.split(",")],
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(SecurityHeaders)
    install_error_format(app)
    install_offline_docs(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def install_rate_limits(app: FastAPI, settings: Settings) -> None:
    limits = Limits(uploads=RateLimiter(settings.rate_limit_uploads_per_min),
                    requests=RateLimiter(settings.rate_limit_requests_per_min),
                    connections=RateLimiter(settings.rate_limit_connections_per_min))
    app.state.limits = limits  # the WebSocket routes take their tokens from the same buckets
    app.add_middleware(PostRateLimits, settings=settings, limits=limits)


def install_error_format(app: FastAPI) -> None:
    """Every error body is ``{"code": ..., "message": ...}``; never a stack trace, path or SQL."""

    # Starlette's class, so the errors FastAPI and Starlette raise themselves (unparsable body, 404, 405) are
    # formatted too; fastapi.HTTPException is a subclass of it.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error.detail, dict) and {"code", "message"} <= error.detail.keys():
            body = error.detail
        else:
            body = {"code": f"http_{error.status_code}", "message": str(error.detail)}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path"))
        return JSONResponse({"code": "invalid_request", "message": f"{where or 'request'}: {problem['msg']}"},
                            status_code=422)

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(_request: Request, _error: psycopg.OperationalError) -> JSONResponse:
        return JSONResponse({"code": "database_unavailable", "message": "the database is unavailable; "
                             "try again shortly"}, status_code=503, headers={"Retry-After": "5"})

    # The caller's value cannot be stored or compared (e.g. a NUL character in an id, found by fuzzing): a 400.
    @app.exception_handler(psycopg.DataError)
    async def unstorable_value(_request: Request, _error: psycopg.DataError) -> JSONResponse:
        return JSONResponse({"code": "invalid_request", "message": "a value in the request holds characters or a "
                             "size the service cannot handle (e.g. a NUL character)"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, _error: Exception) -> JSONResponse:
        return JSONResponse({"code": "internal_error", "message": "an internal error occurred; it has been logged"},
                            status_code=500)
